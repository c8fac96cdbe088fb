//! HTTP routes of forecast-api, one module per resource:
//!
//! - [`forecasts`] — `GET/POST /api/weatherforecast`, `GET/PUT/DELETE /api/weatherforecast/{id}`
//! - [`api_keys`] — `POST /api/admin/apikeys`, `DELETE /api/admin/apikeys/{id}` (admin)
//! - [`relay_tokens`] — `POST /api/relay-token`, `POST /api/relay-ticket` (admin)
//! - [`users`] — `GET/POST /api/users`, `PUT /api/users/{id}/role|claims`,
//!   `DELETE /api/users/{id}/sessions` (admin); `POST/GET/DELETE /api/session` (sign in, who
//!   am I, sign out)
//! - [`operations`] — `GET /healthz`, `GET /readyz`, `GET /metrics`
//! - [`openapi`] — `GET /openapi.json`
//! - [`docs`] — `GET /docs`: Swagger UI over that document
//!
//! with what they share: [`errors`] (the one place where errors become responses, and their
//! reusable OpenAPI responses), [`middleware`] (correlation ids, metrics, timeouts) and
//! [`request`] (API keys, event context, JSON bodies).
//!
//! Every error is `application/problem+json` (RFC 7807). Bad input is always a 4xx; a 5xx means
//! a fault of ours, is logged once with its cause, and shows the client only its correlation id.

pub mod api_keys;
pub mod docs;
pub mod errors;
pub mod forecasts;
pub mod middleware;
pub mod openapi;
pub mod operations;
pub mod relay_tokens;
pub mod request;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{delete, get, post, put};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use self::middleware::X_CORRELATION_ID;
use self::request::{X_API_KEY, X_RELAY_CONNECTION_ID};
use crate::state::AppState;

pub fn router(
    state: Arc<AppState>,
    allowed_origins: &[String],
    max_body_bytes: usize,
    request_timeout: Duration,
) -> Router {
    let data = Router::new()
        .route("/api/weatherforecast", get(forecasts::list).post(forecasts::create))
        .route(
            "/api/weatherforecast/{id}",
            get(forecasts::get_one).put(forecasts::update).delete(forecasts::delete),
        )
        .route("/api/admin/apikeys", post(api_keys::create))
        .route("/api/admin/apikeys/{id}", delete(api_keys::revoke))
        .route("/api/relay-token", post(relay_tokens::create_token))
        .route("/api/relay-ticket", post(relay_tokens::create_ticket))
        .route("/api/users", get(users::list).post(users::create))
        .route("/api/users/{id}/role", put(users::change_role))
        .route("/api/users/{id}/claims", put(users::set_claims))
        .route("/api/users/{id}/sessions", delete(users::revoke_sessions))
        .route("/api/session", get(users::current).post(users::sign_in).delete(users::sign_out))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), middleware::same_origin_writes))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), middleware::database_gate));
    let api = Router::new()
        .merge(data)
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/openapi.json", get(openapi::document))
        .merge(docs::routes())
        .merge(crate::dashboard::routes())
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |request, next| {
            middleware::with_timeout(request_timeout, request, next)
        }))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), middleware::record_metrics))
        .layer(axum::middleware::from_fn(middleware::correlation_id))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state);
    if allowed_origins.is_empty() {
        return api;
    }
    // Origins were validated as header values at configuration time.
    let origins: Vec<HeaderValue> =
        allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    api.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::IF_MATCH,
                X_API_KEY,
                X_CORRELATION_ID,
                X_RELAY_CONNECTION_ID,
            ])
            .expose_headers([header::ETAG, header::LOCATION, X_CORRELATION_ID])
            .allow_credentials(true)
            .max_age(Duration::from_secs(3600)),
    )
}
