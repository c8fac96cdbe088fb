//! API keys (admin): create one (its secret shown once, only its hash stored) or revoke one.
//! Both are published as `admin.apikey.created|revoked`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::{
    ApiError, BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType,
};
use super::middleware::CorrelationId;
use super::request::{authorize, event_context, json_body};
use crate::auth::{KNOWN_SCOPES, SCOPE_ADMIN, SCOPE_FORECASTS_WRITE, generate_key};
use crate::events::DomainEvent;
use crate::model::FieldError;
use crate::state::AppState;
use crate::store::StoreError;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyRequest {
    #[schema(
        example = "ci pipeline",
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    #[schema(example = json!(["forecasts:write"]), min_items = 1, inline)]
    pub scopes: Vec<Scope>,
}

/// A permission of an API key; `admin` implies every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "forecasts:write")]
    ForecastsWrite,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::ForecastsWrite => SCOPE_FORECASTS_WRITE,
            Self::Admin => SCOPE_ADMIN,
        }
    }
}

/// A created key; `key` is shown this once and never again.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCreated {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub key: String,
}

/// Creates an API key (admin).
#[utoipa::path(post, path = "/api/admin/apikeys", operation_id = "createApiKey", tag = "admin", request_body = ApiKeyRequest,
    responses((status = 201, body = ApiKeyCreated), (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 403, response = Forbidden), (status = 413, response = PayloadTooLarge),
              (status = 415, response = UnsupportedMediaType)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, SCOPE_ADMIN).await?;
    let request: ApiKeyRequest = json_body(&headers, body)?;
    let mut errors = Vec::new();
    let name = request.name.trim();
    if name.is_empty() || request.name.chars().count() > 100 || name.chars().any(char::is_control) {
        errors.push(FieldError {
            field: "name",
            message: "must be 1-100 characters without control characters".into(),
        });
    }
    if request.scopes.is_empty() {
        errors.push(FieldError {
            field: "scopes",
            message: format!("must list at least one of {KNOWN_SCOPES:?}"),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut scopes: Vec<String> = request.scopes.iter().map(|scope| scope.as_str().to_owned()).collect();
    scopes.sort();
    scopes.dedup();
    let key = generate_key(name, scopes);
    let context = event_context(&principal, &headers, &correlation);
    let event = DomainEvent::apikey_created(&key.record.id, &key.record.name, &key.record.scopes, &context);
    state.store.insert_api_key(&key.record, Some(&event)).await?;
    state.publisher.publish(event).await;
    let body = ApiKeyCreated {
        id: key.record.id.clone(),
        name: key.record.name,
        scopes: key.record.scopes,
        created_at: key.record.created_at,
        key: key.secret,
    };
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/api/admin/apikeys/{}", body.id))], Json(body))
        .into_response())
}

/// Revokes an API key (admin).
#[utoipa::path(delete, path = "/api/admin/apikeys/{id}", operation_id = "revokeApiKey", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
              (status = 404, response = NotFound)),
    security(("api_key" = [])))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = authorize(&state, &headers, SCOPE_ADMIN).await?;
    let context = event_context(&principal, &headers, &correlation);
    let (_, event) = state
        .store
        .revoke_api_key(&id, |key| DomainEvent::apikey_revoked(&key.id, &key.name, &key.scopes, &context))
        .await
        .map_err(|error| match error {
            StoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "no active API key with this id"),
            other => other.into(),
        })?;
    state.publisher.publish(event).await;
    Ok(StatusCode::NO_CONTENT)
}
