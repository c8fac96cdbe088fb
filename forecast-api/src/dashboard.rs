//! The browser dashboard: static files embedded in the binary (no build step), and the one
//! setting the page needs (where the relay is).
//!
//! The pages are served with a Content-Security-Policy that allows scripts only from this
//! origin and connections only to it and to the relay: even if text from an event were
//! mistakenly inserted as HTML, an injected script could not run.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("dashboard/index.html");
const STYLE: &str = include_str!("dashboard/style.css");
const APP: &str = include_str!("dashboard/app.js");
const CLIENT: &str = include_str!("../../clients/js/sse-relay.js");
const WORKER: &str = include_str!("../../clients/js/sse-relay-worker.js");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP) }))
        .route("/sse-relay.js", get(|| async { asset("text/javascript; charset=utf-8", CLIENT) }))
        .route("/sse-relay-worker.js", get(|| async { asset("text/javascript; charset=utf-8", WORKER) }))
        .route("/config.json", get(config))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..].find('/').map_or(url, |slash| &url[..after_scheme + slash])
}

async fn index(State(state): State<Arc<AppState>>) -> Response {
    let policy = format!(
        "default-src 'self'; script-src 'self'; worker-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        origin_of(&state.relay_public_url)
    );
    let mut response = asset("text/html; charset=utf-8", INDEX);
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn config(State(state): State<Arc<AppState>>) -> Response {
    let relay_url = state.relay_public_url.trim_end_matches('/');
    axum::Json(serde_json::json!({ "relayUrl": relay_url })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_cut_from_urls() {
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(origin_of("https://relay.example.com/sse/"), "https://relay.example.com");
    }
}
