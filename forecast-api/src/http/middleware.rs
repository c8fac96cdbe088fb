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
}
