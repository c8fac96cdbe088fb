//! Relay tokens (admin): a short-lived JWT for reading the relay's token channels, or a
//! one-time ticket (optionally as an HttpOnly cookie) so that no long-lived token sits in URLs.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::glob::Pattern;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::{
    ApiError, BadRequest, Forbidden, NotImplemented, PayloadTooLarge, Unauthorized, UnsupportedMediaType,
};
use super::request::{authorize, json_body};
use crate::auth::SCOPE_ADMIN;
use crate::relay_token;
use crate::state::AppState;

/// Patterns one token may grant, at most.
const MAX_GRANTS: usize = 16;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayTokenRequest {
    /// Glob patterns the token may read, with `*` and `?` wildcards (default: `admin.*` and
    /// `weatherforecast.*`).
    #[schema(min_items = 1, max_items = 16, example = json!(["admin.*"]))]
    pub subscribe: Option<Vec<GrantPattern>>,
}

/// A channel pattern a relay token grants: letters, digits, `.`, `_`, `:`, `-` and the
/// wildcards `*` and `?`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(value_type = String, pattern = r"^[A-Za-z0-9._:*?-]{1,256}$")]
pub struct GrantPattern(String);

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayToken {
    pub token: String,
    pub expires_at: String,
    pub subscribe: Vec<String>,
    pub relay_url: String,
}

/// Mints a short-lived relay JWT (admin) for reading token-only channels.
#[utoipa::path(post, path = "/api/relay-token", operation_id = "createRelayToken", tag = "admin", request_body(content = Option<RelayTokenRequest>),
    responses((status = 200, body = RelayToken), (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 403, response = Forbidden), (status = 413, response = PayloadTooLarge),
              (status = 415, response = UnsupportedMediaType), (status = 501, response = NotImplemented)),
    security(("api_key" = [])))]
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RelayToken>, ApiError> {
    let (token, _) = mint_for_request(&state, &headers, body, state.relay_token_ttl_secs, false).await?;
    Ok(Json(token))
}

/// Mints a one-time relay ticket (admin): accepted by the relay once, within
/// `auth.relay_ticket_ttl_secs`, so no long-lived token sits in URLs or logs. With `?cookie=true`
/// it is set as an HttpOnly cookie for the relay instead (same-site deployments).
#[utoipa::path(post, path = "/api/relay-ticket", operation_id = "createRelayTicket", tag = "admin", request_body(content = Option<RelayTokenRequest>),
    params(("cookie" = Option<bool>, Query, nullable = false, description = "set the ticket as an HttpOnly cookie")),
    responses((status = 200, body = RelayToken), (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 403, response = Forbidden), (status = 413, response = PayloadTooLarge),
              (status = 415, response = UnsupportedMediaType), (status = 501, response = NotImplemented)),
    security(("api_key" = [])))]
pub async fn create_ticket(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut as_cookie = false;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "cookie" {
            as_cookie = match value.as_ref() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "cookie must be true or false, got {other:?}"
                    )));
                }
            };
        }
    }
    let (ticket, ttl) = mint_for_request(&state, &headers, body, state.relay_ticket_ttl_secs, true).await?;
    if !as_cookie {
        return Ok(Json(ticket).into_response());
    }
    let secure = if state.relay_public_url.starts_with("https://") { "; Secure" } else { "" };
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={ttl}{secure}",
        state.relay_cookie_name, ticket.token
    );
    let mut response = Json(RelayToken { token: String::new(), ..ticket }).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn mint_for_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    ttl_secs: u64,
    once: bool,
) -> Result<(RelayToken, u64), ApiError> {
    let principal = authorize(state, headers, SCOPE_ADMIN).await?;
    if state.relay_jwt_secret.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "relay tokens are disabled: auth.relay_jwt_secret is not set",
        ));
    }
    let empty_body = body.as_ref().is_ok_and(|b| b.is_empty() || b.as_ref() == b"null");
    let request: RelayTokenRequest =
        if empty_body { RelayTokenRequest::default() } else { json_body(headers, body)? };
    let subscribe: Vec<String> = match request.subscribe {
        Some(patterns) => patterns.into_iter().map(|GrantPattern(p)| p).collect(),
        None => vec!["admin.*".into(), "weatherforecast.*".into()],
    };
    if subscribe.is_empty() || subscribe.len() > MAX_GRANTS {
        return Err(ApiError::bad_request(format!("subscribe must list 1 to {MAX_GRANTS} patterns")));
    }
    for pattern in &subscribe {
        let simple = !pattern.is_empty()
            && pattern.len() <= 256
            && pattern.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:*?-".contains(&b));
        if !simple {
            return Err(ApiError::bad_request(format!(
                "subscribe pattern {pattern:?}: use letters, digits, '.', '_', ':', '-', '*' and '?'"
            )));
        }
        Pattern::parse(pattern)
            .map_err(|error| ApiError::bad_request(format!("subscribe pattern {pattern:?}: {error}")))?;
    }
    let (token, claims) =
        relay_token::mint(&state.relay_jwt_secret, &principal.actor, subscribe, ttl_secs, once)
            .map_err(ApiError::internal)?;
    let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let token = RelayToken {
        token,
        expires_at,
        subscribe: claims.subscribe,
        relay_url: state.relay_public_url.clone(),
    };
    Ok((token, ttl_secs))
}
