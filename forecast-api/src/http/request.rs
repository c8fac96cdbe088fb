//! What handlers read from a request beyond its path: the API key or session and its scope, the event
//! context (actor, correlation, the relay connection not to echo), and a JSON body.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use serde::Deserialize;

use super::errors::ApiError;
use super::middleware::CorrelationId;
use crate::auth::Principal;
use crate::events::EventContext;
use crate::state::AppState;
use crate::users::session_hash;

pub const X_RELAY_CONNECTION_ID: HeaderName = HeaderName::from_static("x-relay-connection-id");
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The caller: an API key from `Authorization: Bearer` or `X-Api-Key`, else the session in
/// the session cookie; checked for `scope` (empty: any signed-in caller).
pub async fn authorize(state: &AppState, headers: &HeaderMap, scope: &str) -> Result<Principal, ApiError> {
    let principal = match presented_key(headers) {
        Some(presented) => state
            .keys
            .verify(presented)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the API key is unknown or revoked"))?,
        None => match session_secret(headers, &state.session.cookie_name) {
            Some(secret) => state
                .store
                .active_session(&session_hash(secret))
                .await?
                .map(Principal::of_session)
                .ok_or_else(|| ApiError::unauthorized("the session has ended or expired: sign in again"))?,
            None => {
                return Err(ApiError::unauthorized(
                    "an API key (Authorization: Bearer <key> or X-Api-Key) or a session (POST /api/session) is required",
                ));
            }
        },
    };
    if !scope.is_empty() && !principal.allows(scope) {
        let whose = if principal.session.is_some() { "the signed-in user's role" } else { "the API key" };
        return Err(ApiError::new(StatusCode::FORBIDDEN, format!("{whose} lacks the {scope:?} scope")));
    }
    Ok(principal)
}

/// The API key a request presents, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    bearer
        .or_else(|| headers.get(&X_API_KEY).and_then(|v| v.to_str().ok()).map(str::trim))
        .filter(|key| !key.is_empty())
}

/// The value of cookie `name`, over every `Cookie` header.
pub fn session_secret<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

pub fn event_context(
    principal: &Principal,
    headers: &HeaderMap,
    correlation: &CorrelationId,
) -> EventContext {
    let exclude = headers
        .get(&X_RELAY_CONNECTION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned);
    EventContext { actor: principal.actor.clone(), correlation_id: correlation.0.clone(), exclude }
}

/// Parses a JSON body, turning every way it can be wrong into a 4xx with a reason.
pub fn json_body<T: for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "the request body is too large")
        } else {
            ApiError::new(status, rejection.body_text())
        }
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.to_ascii_lowercase().ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("the body is not a valid request: {error}")))
}
