//! What operators and orchestrators ask: liveness, readiness, metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use crate::state::AppState;

pub async fn healthz() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"alive"}"#)
}

/// Ready when the database answers; Redis being down does not matter (the outbox buffers).
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Acquire) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        // Redis is not a condition of readiness (writes succeed while it is away; the outbox
        // keeps the events), but the node in use and the failovers followed are reported.
        Ok(Ok(())) => {
            let mut body = serde_json::json!({
                "status": "ready",
                "redis": { "node": state.redis.current_primary(), "failovers": state.redis.failovers() },
            });
            // Ready regardless, but an operator should fix it.
            if let Some(warning) = state.eviction.warning() {
                body["warnings"] = serde_json::json!([warning]);
            }
            ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Ok(Err(error)) => {
            if crate::store::is_unreachable(&error) {
                state.store.found_unreachable(Duration::from_millis(500));
            }
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("database unreachable: {error}"))
                .into_response()
        }
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database did not answer within 2 s")
            .into_response(),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
