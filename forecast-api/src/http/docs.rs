//! `GET /docs`: Swagger UI over `/openapi.json`, to read the API and try requests with a key.
//!
//! Everything is served from the binary (Swagger UI is vendored in
//! `forecast-api/assets/swagger-ui`): the page works without any outside network, and its
//! Content-Security-Policy allows scripts, styles and requests from this origin only (and
//! images inlined as `data:`, Swagger UI's icons).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The vendored `swagger-ui-dist` version; its assets' URLs carry it, so they can be cached for
/// good.
const SWAGGER_UI_VERSION: &str = "5.35.0";
const PAGE: &str = include_str!("docs/index.html");
const INIT: &str = include_str!("docs/init.js");
const BUNDLE: &str = include_str!("../../assets/swagger-ui/swagger-ui-bundle.js");
const STYLE: &str = include_str!("../../assets/swagger-ui/swagger-ui.css");

const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let assets = format!("/docs/swagger-ui/{SWAGGER_UI_VERSION}");
    Router::new()
        .route("/docs", get(page))
        .route("/docs/init.js", get(|| async { text("text/javascript; charset=utf-8", INIT, "no-cache") }))
        .route(
            &format!("{assets}/swagger-ui-bundle.js"),
            get(|| async { text("text/javascript; charset=utf-8", BUNDLE, IMMUTABLE) }),
        )
        .route(
            &format!("{assets}/swagger-ui.css"),
            get(|| async { text("text/css; charset=utf-8", STYLE, IMMUTABLE) }),
        )
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn text(content_type: &'static str, body: impl Into<Body>, cache: &'static str) -> Response {
    let mut response =
        ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, cache)], body.into()).into_response();
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn page() -> Response {
    let mut response =
        text("text/html; charset=utf-8", PAGE.replace("{version}", SWAGGER_UI_VERSION), "no-cache");
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    response
}
