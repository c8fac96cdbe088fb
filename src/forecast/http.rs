//! HTTP routes of forecast-api, and the one place where errors become responses.
//!
//! - `GET/POST /api/weatherforecast`, `GET/PUT/DELETE /api/weatherforecast/{id}`
//! - `POST /api/admin/apikeys`, `DELETE /api/admin/apikeys/{id}` (admin)
//! - `POST /api/relay-token` (admin)
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /openapi.json`
//!
//! Every error is `application/problem+json` (RFC 7807). Bad input is always a 4xx; a 5xx means
//! a fault of ours, is logged once with its cause, and shows the client only its correlation id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi, ToSchema};

use super::auth::{KNOWN_SCOPES, KeyVerifier, Principal, SCOPE_ADMIN, SCOPE_FORECASTS_WRITE, generate_key};
use super::events::{DomainEvent, EventContext};
use super::metrics::ForecastMetrics;
use super::model::{FieldError, Forecast, ForecastInput};
use super::publisher::EventPublisher;
use super::relay_token;
use super::store::{Store, StoreError};
use crate::relay::glob::Pattern;

pub struct AppState {
    pub store: Store,
    pub keys: KeyVerifier,
    pub publisher: EventPublisher,
    pub metrics: ForecastMetrics,
    pub relay_jwt_secret: String,
    pub relay_token_ttl_secs: u64,
    pub relay_ticket_ttl_secs: u64,
    pub relay_public_url: String,
    pub relay_cookie_name: String,
    pub draining: std::sync::atomic::AtomicBool,
}

const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
const X_RELAY_CONNECTION_ID: HeaderName = HeaderName::from_static("x-relay-connection-id");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const MAX_PAGE_SIZE: i64 = 100;
const MAX_PAGE: i64 = 1_000_000_000;
const DEFAULT_PAGE_SIZE: i64 = 20;

pub fn router(
    state: Arc<AppState>,
    allowed_origins: &[String],
    max_body_bytes: usize,
    request_timeout: Duration,
) -> Router {
    let api = Router::new()
        .route("/api/weatherforecast", get(list_forecasts).post(create_forecast))
        .route("/api/weatherforecast/{id}", get(get_forecast).put(update_forecast).delete(delete_forecast))
        .route("/api/admin/apikeys", post(create_api_key))
        .route("/api/admin/apikeys/{id}", delete(revoke_api_key))
        .route("/api/relay-token", post(create_relay_token))
        .route("/api/relay-ticket", post(create_relay_ticket))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(super::dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |request, next| with_timeout(request_timeout, request, next)))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), record_metrics))
        .layer(axum::middleware::from_fn(correlation_id))
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

// ---- errors ----

/// RFC 7807 problem details.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Field → what is wrong with it (validation errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    errors: Option<BTreeMap<String, Vec<String>>>,
    www_authenticate: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self { status, detail: detail.into(), errors: None, www_authenticate: false }
    }

    fn unauthorized(detail: impl Into<String>) -> Self {
        Self { www_authenticate: true, ..Self::new(StatusCode::UNAUTHORIZED, detail) }
    }

    fn validation(errors: Vec<FieldError>) -> Self {
        let detail =
            errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for error in errors {
            map.entry(error.field.to_owned()).or_default().push(error.message);
        }
        Self { errors: Some(map), ..Self::new(StatusCode::BAD_REQUEST, format!("invalid input: {detail}")) }
    }

    /// A fault of ours: logged with its cause, shown as a plain 500.
    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "an internal error occurred; see the logs for this correlation id",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "no such resource"),
            StoreError::VersionMismatch { current } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                format!("If-Match does not match the current version (ETag \"{current}\"); fetch it again"),
            ),
            StoreError::Database(error) => Self::internal(format!("database: {error}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("Error").into(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::to_string(&problem).unwrap_or_default(),
        )
            .into_response();
        if self.www_authenticate {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

// ---- middleware ----

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

async fn correlation_id(mut request: Request, next: Next) -> Response {
    let id = correlation_from(request.headers());
    request.extensions_mut().insert(CorrelationId(id.clone()));
    let span = tracing::info_span!("request", correlation_id = %id);
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_CORRELATION_ID, value);
    }
    response
}

async fn record_metrics(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
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

async fn with_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {} ms; retry later", timeout.as_millis()),
        )
        .into_response(),
    }
}

// ---- helpers ----

/// The API key from `Authorization: Bearer` or `X-Api-Key`, checked for `scope`.
async fn authorize(state: &AppState, headers: &HeaderMap, scope: &str) -> Result<Principal, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let presented = bearer.or_else(|| headers.get(&X_API_KEY).and_then(|v| v.to_str().ok()).map(str::trim));
    let Some(presented) = presented.filter(|key| !key.is_empty()) else {
        return Err(ApiError::unauthorized(
            "an API key is required: Authorization: Bearer <key> or X-Api-Key",
        ));
    };
    let principal = state
        .keys
        .verify(presented)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the API key is unknown or revoked"))?;
    if !principal.allows(scope) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, format!("the API key lacks the {scope:?} scope")));
    }
    Ok(principal)
}

fn event_context(principal: &Principal, headers: &HeaderMap, correlation: &CorrelationId) -> EventContext {
    let exclude = headers
        .get(&X_RELAY_CONNECTION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned);
    EventContext { actor: principal.key_id.clone(), correlation_id: correlation.0.clone(), exclude }
}

/// Parses a JSON body, turning every way it can be wrong into a 4xx with a reason.
fn json_body<T: for<'de> Deserialize<'de>>(
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
    serde_json::from_slice(&body).map_err(|error| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not a valid request: {error}"))
    })
}

/// `If-Match: "3"` (or `W/"3"`, a bare `3`, or `*`) → the expected version; `None` when absent
/// or `*`.
fn expected_version(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let digits = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(tag);
    let valid = (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    digits.parse::<i64>().ok().filter(|_| valid).map(Some).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("If-Match must be one ETag like \"3\", got {text:?}"))
    })
}

fn with_etag(mut response: Response, forecast: &Forecast) -> Response {
    if let Ok(value) = HeaderValue::from_str(&forecast.etag()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

// ---- forecasts ----

/// One page of forecasts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForecastPage {
    pub items: Vec<Forecast>,
    pub page: i64,
    pub page_size: i64,
    pub total_count: i64,
    pub total_pages: i64,
}

/// Lists forecasts by date, a page at a time.
#[utoipa::path(get, path = "/api/weatherforecast", tag = "forecasts",
    params(("page" = Option<i64>, Query, nullable = false, minimum = 1, maximum = 1000000000, description = "1-based page number (default 1)"),
           ("pageSize" = Option<i64>, Query, nullable = false, minimum = 1, maximum = 100, description = "items per page (default 20)")),
    responses((status = 200, body = ForecastPage), (status = 400, body = Problem, content_type = "application/problem+json")))]
async fn list_forecasts(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Json<ForecastPage>, ApiError> {
    let mut page = 1i64;
    let mut page_size = DEFAULT_PAGE_SIZE;
    for (key, value) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        let parsed = value.parse::<i64>();
        match key.as_ref() {
            "page" => {
                page = parsed.ok().filter(|p| (1..=MAX_PAGE).contains(p)).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("page must be an integer from 1 to {MAX_PAGE}, got {value:?}"),
                    )
                })?
            }
            "pageSize" => {
                page_size = parsed.ok().filter(|s| (1..=MAX_PAGE_SIZE).contains(s)).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("pageSize must be an integer from 1 to {MAX_PAGE_SIZE}, got {value:?}"),
                    )
                })?
            }
            _ => {}
        }
    }
    let offset = (page - 1)
        .checked_mul(page_size)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "page is too large"))?;
    let (items, total_count) = state.store.list_forecasts(offset, page_size).await?;
    Ok(Json(ForecastPage {
        items,
        page,
        page_size,
        total_count,
        total_pages: (total_count + page_size - 1) / page_size,
    }))
}

/// One forecast; its `ETag` is the version to send back in `If-Match`.
#[utoipa::path(get, path = "/api/weatherforecast/{id}", tag = "forecasts",
    params(("id" = String, Path)),
    responses((status = 200, body = Forecast), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_forecast(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let forecast = state.store.get_forecast(&id).await?;
    Ok(with_etag(Json(&forecast).into_response(), &forecast))
}

/// Creates a forecast (needs `forecasts:write`) and publishes `weatherforecast.created`.
#[utoipa::path(post, path = "/api/weatherforecast", tag = "forecasts", request_body = ForecastInput,
    params(("X-Relay-Connection-Id" = Option<String>, Header, nullable = false, description = "relay connection not to echo the event to")),
    responses((status = 201, body = Forecast), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
async fn create_forecast(
    State(state): State<Arc<AppState>>,
    axum::Extension(correlation): axum::Extension<CorrelationId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, SCOPE_FORECASTS_WRITE).await?;
    let input: ForecastInput = json_body(&headers, body)?;
    input.validate().map_err(ApiError::validation)?;
    let context = event_context(&principal, &headers, &correlation);
    let (forecast, event) =
        state.store.create_forecast(&input, |f| DomainEvent::forecast_created(f, &context)).await?;
    state.publisher.publish(event).await;
    let location = format!("/api/weatherforecast/{}", forecast.id);
    let response = (StatusCode::CREATED, [(header::LOCATION, location)], Json(&forecast)).into_response();
    Ok(with_etag(response, &forecast))
}

/// Replaces a forecast (needs `forecasts:write`); with `If-Match`, only if unchanged (else 412).
#[utoipa::path(put, path = "/api/weatherforecast/{id}", tag = "forecasts", request_body = ForecastInput,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$"#, description = "ETag from a previous read"),
           ("X-Relay-Connection-Id" = Option<String>, Header, nullable = false)),
    responses((status = 200, body = Forecast), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 412, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
async fn update_forecast(
    State(state): State<Arc<AppState>>,
    axum::Extension(correlation): axum::Extension<CorrelationId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, SCOPE_FORECASTS_WRITE).await?;
    let expected = expected_version(&headers)?;
    let input: ForecastInput = json_body(&headers, body)?;
    input.validate().map_err(ApiError::validation)?;
    let context = event_context(&principal, &headers, &correlation);
    let (forecast, event) = state
        .store
        .update_forecast(&id, &input, expected, |f| DomainEvent::forecast_updated(f, &context))
        .await?;
    state.publisher.publish(event).await;
    Ok(with_etag(Json(&forecast).into_response(), &forecast))
}

/// Deletes a forecast (needs `forecasts:write`); with `If-Match`, only if unchanged (else 412).
#[utoipa::path(delete, path = "/api/weatherforecast/{id}", tag = "forecasts",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$"#),
           ("X-Relay-Connection-Id" = Option<String>, Header, nullable = false)),
    responses((status = 204), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 412, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
async fn delete_forecast(
    State(state): State<Arc<AppState>>,
    axum::Extension(correlation): axum::Extension<CorrelationId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = authorize(&state, &headers, SCOPE_FORECASTS_WRITE).await?;
    let expected = expected_version(&headers)?;
    let context = event_context(&principal, &headers, &correlation);
    let event =
        state.store.delete_forecast(&id, expected, || DomainEvent::forecast_deleted(&id, &context)).await?;
    state.publisher.publish(event).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- API keys ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyRequest {
    #[schema(
        example = "ci pipeline",
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
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
#[utoipa::path(post, path = "/api/admin/apikeys", tag = "admin", request_body = ApiKeyRequest,
    responses((status = 201, body = ApiKeyCreated), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
async fn create_api_key(
    State(state): State<Arc<AppState>>,
    axum::Extension(correlation): axum::Extension<CorrelationId>,
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
#[utoipa::path(delete, path = "/api/admin/apikeys/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
async fn revoke_api_key(
    State(state): State<Arc<AppState>>,
    axum::Extension(correlation): axum::Extension<CorrelationId>,
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

// ---- relay tokens ----

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
#[utoipa::path(post, path = "/api/relay-token", tag = "admin", request_body(content = Option<RelayTokenRequest>),
    responses((status = 200, body = RelayToken), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 501, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
async fn create_relay_token(
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
#[utoipa::path(post, path = "/api/relay-ticket", tag = "admin", request_body(content = Option<RelayTokenRequest>),
    params(("cookie" = Option<bool>, Query, nullable = false, description = "set the ticket as an HttpOnly cookie")),
    responses((status = 200, body = RelayToken), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 501, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
async fn create_relay_ticket(
    State(state): State<Arc<AppState>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
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
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("cookie must be true or false, got {other:?}"),
                    ));
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
    if subscribe.is_empty() || subscribe.len() > 16 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "subscribe must list 1 to 16 patterns"));
    }
    for pattern in &subscribe {
        let simple = !pattern.is_empty()
            && pattern.len() <= 256
            && pattern.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:*?-".contains(&b));
        if !simple {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "subscribe pattern {pattern:?}: use letters, digits, '.', '_', ':', '-', '*' and '?'"
                ),
            ));
        }
        Pattern::parse(pattern).map_err(|error| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("subscribe pattern {pattern:?}: {error}"))
        })?;
    }
    let (token, claims) =
        relay_token::mint(&state.relay_jwt_secret, &principal.key_id, subscribe, ttl_secs, once)
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

// ---- operations ----

async fn healthz() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"alive"}"#)
}

/// Ready when the database answers; Redis being down does not matter (the outbox buffers).
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ready"}"#).into_response(),
        Ok(Err(error)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("database unreachable: {error}"))
                .into_response()
        }
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database did not answer within 2 s")
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "forecast-api", description = "Weather forecasts, published as events to sse-relay."),
    paths(list_forecasts, get_forecast, create_forecast, update_forecast, delete_forecast, create_api_key,
          revoke_api_key, create_relay_token, create_relay_ticket),
    components(schemas(Forecast, ForecastInput, ForecastPage, Problem, ApiKeyRequest, ApiKeyCreated, Scope,
                       RelayTokenRequest, RelayToken, GrantPattern)),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("API key (or X-Api-Key header)"))
                    .build(),
            ),
        );
    }
}

async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => ApiError::internal(format!("openapi: {error}")).into_response(),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {}", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
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
    fn if_match_accepts_one_etag_or_star() {
        let mut headers = HeaderMap::new();
        assert_eq!(expected_version(&headers).unwrap(), None);
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(expected_version(&headers).unwrap(), Some(3));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/\"4\""));
        assert_eq!(expected_version(&headers).unwrap(), Some(4));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(expected_version(&headers).unwrap(), None);
        headers.insert(header::IF_MATCH, HeaderValue::from_static("5"));
        assert_eq!(expected_version(&headers).unwrap(), Some(5));
        for bad in ["\"3", "W/3\"", "\"-1\"", "\"\"", "\"1 2\""] {
            headers.insert(header::IF_MATCH, HeaderValue::from_str(bad).unwrap());
            assert!(expected_version(&headers).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_openapi_document_lists_every_route() {
        let json = ApiDoc::openapi().to_json().unwrap();
        for path in
            ["/api/weatherforecast", "/api/weatherforecast/{id}", "/api/admin/apikeys", "/api/relay-token"]
        {
            assert!(json.contains(path), "{path}");
        }
    }
}
