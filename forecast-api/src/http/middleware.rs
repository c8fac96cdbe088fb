//! What every request goes through: its correlation id, its metrics, its time limit.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::{ApiError, DatabaseUnreachable};
use crate::state::AppState;

pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The correlation id of a request: from `X-Correlation-Id`, else the trace id of a W3C
/// `traceparent`, else a new one. Echoed on the response and carried into events.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

fn correlation_from(headers: &HeaderMap) -> String {
    let given = headers
        .get(&X_CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    if let Some(given) = given {
        return given.to_owned();
    }
    let trace_id = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(|v| {
        let parts: Vec<&str> = v.trim().split('-').collect();
        (parts.len() >= 4 && parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| parts[1].to_ascii_lowercase())
    });
    trace_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

pub async fn correlation_id(mut request: Request, next: Next) -> Response {
    let id = correlation_from(request.headers());
    request.extensions_mut().insert(CorrelationId(id.clone()));
    let span = tracing::info_span!("request", correlation_id = %id);
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_CORRELATION_ID, value);
    }
    response
}

/// Counts and times requests by method and route template (never the raw path).
pub async fn record_metrics(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .http_duration
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    state.metrics.http_requests.with_label_values(&[&method, &route, response.status().as_str()]).inc();
    response
}

pub async fn with_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {} ms; retry later", timeout.as_millis()),
        )
        .into_response(),
    }
}

/// How often an unreachable database is tried again.
const DATABASE_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Requests that need the database: refused at once (503, `Retry-After`) while it is known to
/// be unreachable, rather than each waiting for a connection; the first refusal that finds it
/// unreachable marks it so until it answers again.
pub async fn database_gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if state.store.is_known_unreachable() {
        return ApiError::database_unreachable().into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<DatabaseUnreachable>().is_some() {
        state.store.found_unreachable(DATABASE_RETRY_INTERVAL);
    }
    response
}

/// Cross-site request forgery: a write authenticated by the session cookie (no API key) must
/// come from a page of this site — its `Origin` names this host (browsers send it with every
/// write);
/// so must a sign-in that names an origin. SameSite=Strict already keeps the cookie off
/// cross-site requests; this holds where a browser or proxy does not.
pub async fn same_origin_writes(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method();
    if method.is_safe() {
        return next.run(request).await;
    }
    let headers = request.headers();
    let by_cookie = super::request::presented_key(headers).is_none()
        && super::request::session_secret(headers, &state.session.cookie_name).is_some();
    let signing_in = request.uri().path() == "/api/session";
    let mut origins = headers.get_all(axum::http::header::ORIGIN).iter();
    let origin = origins.next().map(|value| value.to_str().unwrap_or(""));
    let host = headers.get(axum::http::header::HOST).and_then(|value| value.to_str().ok());
    // Host names are compared, not ports: a proxy may pass `Host` without the port it listens
    // on, and ports do not separate sites for cookies anyway. Two Origin headers name no one
    // origin.
    let same_site = match (origin, host, origins.next()) {
        (Some(origin), Some(host), None) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| host_name(authority).eq_ignore_ascii_case(host_name(host))),
        _ => false,
    };
    if (by_cookie && !same_site) || (signing_in && origin.is_some() && !same_site) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "a cookie-authenticated write must come from a page of this site (its Origin header must name this host)",
        )
        .into_response();
    }
    next.run(request).await
}

/// The host of `host[:port]` (`[v6]:port` too).
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_come_from_the_header_then_traceparent_then_are_new() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(correlation_from(&headers), "4bf92f3577b34da6a3ce929d0e0e4736");
        headers.insert(X_CORRELATION_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(correlation_from(&headers), "abc-123");
        assert_eq!(correlation_from(&HeaderMap::new()).len(), 32);
    }

    #[test]
    fn host_names_are_cut_from_authorities() {
        assert_eq!(host_name("127.0.0.1:8081"), "127.0.0.1");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("[::1]:8000"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
    }
}
