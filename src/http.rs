//! HTTP routes of the relay, and the one place where refusals become HTTP responses.
//!
//! - `GET /events` — the SSE stream (`channel=` repeatable glob selection).
//! - `GET /healthz` — 200 while the process lives.
//! - `GET /readyz` — 200 when this pod should get new clients, else 503 with the reason.
//! - `GET /metrics` — Prometheus text format.
//!
//! Every error is `application/problem+json` (RFC 7807) with a `detail` that says what was wrong.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use service::log_eviction::EvictionWatch;
use service::redis_target::RedisTarget;
use tower_http::cors::{AllowOrigin, CorsLayer};
use uuid::Uuid;

use crate::auth::{AuthError, Ticket, TokenVerifier};
use crate::channels::{ChannelRules, Selection, Subscription};
use crate::client_ip::PerIpLimiter;
use crate::health::{Capacity, Health, Readiness};
use crate::hub::{Hub, RegisterError};
use crate::metrics::{RefusedReason, RelayMetrics};
use crate::replay::Replay;
use crate::stream::SseBody;
use protocol::glob::Pattern;
use protocol::log_id::{StreamId, encode_position, parse_position};
use protocol::sse::preamble;
use service::client_ip::client_ip;
use service::server::ConnectionContext;

/// What the handlers share.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub health: Arc<Health>,
    /// Where Redis is: the node in use, for `/readyz`.
    pub redis: Arc<RedisTarget>,
    pub metrics: RelayMetrics,
    pub replay: Arc<Replay>,
    pub auth: Arc<TokenVerifier>,
    pub rules: Arc<ChannelRules>,
    pub per_ip: Arc<PerIpLimiter>,
    /// Whether the pod is full, for readiness.
    pub capacity: Capacity,
    /// Whether Redis may evict the log, for `/readyz`'s detail.
    pub eviction: Arc<EvictionWatch>,
    pub trusted_proxy_hops: usize,
    pub max_url_bytes: usize,
    pub retry_ms: u64,
    pub max_channels_per_request: usize,
    /// Suggested delay for clients refused because the pod is full or draining.
    pub retry_after_secs: u64,
}

/// The relay's routes; `/metrics` among them unless `separate_metrics` (served by
/// [`metrics_router`] on a listener of its own).
pub fn router(state: Arc<AppState>, allowed_origins: &[String], separate_metrics: bool) -> Router {
    let mut router = Router::new()
        .route("/events", get(events))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if !separate_metrics {
        router = router.route("/metrics", get(metrics));
    }
    let router = router.fallback(not_found).method_not_allowed_fallback(method_not_allowed).with_state(state);
    if allowed_origins.is_empty() {
        return router;
    }
    // Origins were validated as header values at configuration time.
    let origins: Vec<HeaderValue> =
        allowed_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET])
            .allow_headers([header::AUTHORIZATION, header::CACHE_CONTROL, "last-event-id".parse().unwrap()])
            .allow_credentials(true)
            .max_age(Duration::from_secs(3600)),
    )
}

/// `/metrics` alone, for `metrics_listen`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A refusal, rendered as RFC 7807 problem details.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    retry_after_secs: Option<u64>,
    www_authenticate: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self { status, detail: detail.into(), retry_after_secs: None, www_authenticate: None }
    }

    /// 401 with a `WWW-Authenticate` challenge (RFC 6750).
    fn unauthorized(detail: impl Into<String>, invalid_token: bool) -> Self {
        let detail = detail.into();
        let challenge = if invalid_token {
            // The description is a quoted string: keep it to characters that cannot end it.
            let description: String = detail
                .chars()
                .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
                .collect();
            format!(
                "Bearer realm=\"sse-relay\", error=\"invalid_token\", error_description=\"{description}\""
            )
        } else {
            "Bearer realm=\"sse-relay\"".to_owned()
        };
        Self { www_authenticate: Some(challenge), ..Self::new(StatusCode::UNAUTHORIZED, detail) }
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"))],
            body.to_string(),
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.www_authenticate.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

async fn events(State(state): State<Arc<AppState>>, request: Request) -> Result<Response, ApiError> {
    let target_len = request.uri().path_and_query().map_or(0, |target| target.as_str().len());
    if target_len > state.max_url_bytes {
        state.metrics.refused(RefusedReason::UriTooLong);
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target_len} bytes; at most {} are accepted", state.max_url_bytes),
        ));
    }
    let query = request.uri().query().unwrap_or("");
    let selection = parse_selection(query, state.max_channels_per_request).map_err(|(reason, error)| {
        state.metrics.refused(reason);
        error
    })?;
    let resume_from = last_event_id(request.headers(), query)
        .inspect_err(|_| state.metrics.refused(RefusedReason::BadRequest))?;
    let subscription = authorize(&state, request.headers(), query, selection).await?;
    let context = request.extensions().get::<ConnectionContext>().cloned();
    let cut = context.as_ref().map(|c| c.cut.clone()).unwrap_or_default();
    let ip_slot = match context.as_ref() {
        Some(context) => {
            let forwarded =
                request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
            let ip = client_ip(context.peer.ip(), forwarded, state.trusted_proxy_hops);
            state.per_ip.acquire(ip).ok_or_else(|| {
                state.metrics.refused(RefusedReason::PerIpLimit);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("{ip} holds the maximum number of streams"),
                )
                .retry_after(state.retry_after_secs)
            })?
        }
        None => None,
    };
    let connection_id = Uuid::new_v4();
    // While draining (readiness already off) streams are still accepted: an EventSource gives up
    // for good on an error status, whereas a stream that is later closed makes it reconnect,
    // by then to a ready pod. Only once the hub closes are requests refused.
    let expires_at = subscription.expires_at;
    let registration = state.hub.register(subscription.key.clone(), connection_id, cut).map_err(|error| {
        let reason = match error {
            RegisterError::Full(_) => RefusedReason::MaxConnections,
            RegisterError::Closing => RefusedReason::ShuttingDown,
        };
        state.metrics.refused(reason);
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{error}; retry later"))
            .retry_after(state.retry_after_secs)
    })?;
    // Last, so that a refusal above (or a HEAD, which opens nothing) leaves the ticket usable.
    if let Some(ticket) = subscription.ticket.as_ref().filter(|_| request.method() != Method::HEAD) {
        state.auth.claim(ticket).await.map_err(|error| ticket_refusal(&state, error))?;
    }
    tracing::info!(
        conn.id = %connection_id,
        client.addr = %context.map(|c| c.peer.to_string()).unwrap_or_default(),
        channels = %describe(&subscription.key.selection),
        token = subscription.key.grants.is_some(),
        resume_from = %resume_from.as_deref().map(encode_position).unwrap_or_default(),
        "stream opened"
    );

    // Jitter spreads the reconnections of clients that lost their stream at the same moment.
    let retry_ms = state.retry_ms + rand::random_range(0..=state.retry_ms / 2);
    // Registered for live events first, then the backlog: nothing published in between is lost.
    let replay = resume_from.map(|after| state.replay.start(subscription.key.clone(), after));
    let body = SseBody::new(registration, preamble(retry_ms, &connection_id.to_string()), replay)
        .expiring_at(expires_at)
        .holding(ip_slot);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::new(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// Steps the check of a request's patterns against the rules and its token's grants may take
/// (a few milliseconds); ordinary requests take hundreds.
const OVERLAP_CHECK_BUDGET: usize = 1_000_000;

/// A stream's hub key plus when its token expires.
struct Authorized {
    key: Subscription,
    expires_at: Option<i64>,
    /// A one-time ticket, claimed once nothing else can refuse the stream.
    ticket: Option<Ticket>,
}

/// Verifies the request's token (if any) and checks that the stream can read something: an
/// invalid token is 401; asking only for token channels without a token is 401, with a token
/// that grants none of them 403.
async fn authorize(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    query: &str,
    selection: Selection,
) -> Result<Authorized, ApiError> {
    let refused = |reason| state.metrics.refused(reason);
    let grant = match state.auth.token_from(headers, query) {
        None => None,
        Some(token) => Some(state.auth.verify(&token).await.map_err(|error| ticket_refusal(state, error))?),
    };
    let grants = grant.as_ref().map(|g| std::sync::Arc::clone(&g.patterns));
    // Checking hostile patterns against hostile grants could take seconds: bounded.
    let mut budget = OVERLAP_CHECK_BUDGET;
    let readable = match &selection {
        Selection::All => state.rules.any_readable(grants.as_deref(), &mut budget),
        Selection::Patterns(patterns) => patterns
            .iter()
            .map(|p| state.rules.readable(p, grants.as_deref(), &mut budget))
            .find(|readable| *readable != Some(false))
            .unwrap_or(Some(false)),
    };
    let Some(readable) = readable else {
        refused(RefusedReason::BadRequest);
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the requested channels are too complex to check against the token's grants: ask for fewer or simpler patterns",
        ));
    };
    if !readable {
        if grant.is_none() && state.rules.has_token_rules() {
            refused(RefusedReason::Unauthorized);
            return Err(ApiError::unauthorized("the requested channels need a token", false));
        }
        refused(RefusedReason::Forbidden);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "none of the requested channels may be read with this token",
        ));
    }
    let (expires_at, ticket) = grant.map_or((None, None), |g| (Some(g.expires_at), g.ticket));
    Ok(Authorized { key: Subscription { selection, grants }, expires_at, ticket })
}

/// The answer to a token or ticket that cannot be accepted.
fn ticket_refusal(state: &AppState, error: AuthError) -> ApiError {
    match error {
        AuthError::Unavailable(cause) => {
            tracing::warn!(error = %cause, "cannot check a ticket");
            state.metrics.refused(RefusedReason::Unavailable);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cannot check the ticket right now; retry")
                .retry_after(state.retry_after_secs)
        }
        other => {
            state.metrics.refused(RefusedReason::Unauthorized);
            ApiError::unauthorized(other.to_string(), true)
        }
    }
}

/// The resume point: the `Last-Event-ID` header (what EventSource sends on reconnect) wins over
/// the `lastEventId` parameter (for a first connection, which cannot set headers).
fn last_event_id(headers: &axum::http::HeaderMap, query: &str) -> Result<Option<Vec<StreamId>>, ApiError> {
    let from_header =
        headers.get("last-event-id").map(|value| value.to_str().unwrap_or("\u{fffd}").trim().to_owned());
    let from_query = || {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "lastEventId")
            .map(|(_, value)| value.trim().to_owned())
    };
    match from_header.or_else(from_query).filter(|id| !id.is_empty()) {
        None => Ok(None),
        Some(id) => parse_position(&id)
            .map(Some)
            .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, format!("Last-Event-ID: {error}"))),
    }
}

/// Reads the repeatable `channel` parameter into a selection, refusing bad or too many globs.
fn parse_selection(query: &str, max_channels: usize) -> Result<Selection, (RefusedReason, ApiError)> {
    let mut patterns = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != "channel" {
            continue;
        }
        let pattern = Pattern::parse(&value).map_err(|error| {
            (
                RefusedReason::BadRequest,
                ApiError::new(StatusCode::BAD_REQUEST, format!("channel {value:?}: {error}")),
            )
        })?;
        patterns.push(pattern);
    }
    if patterns.len() > max_channels {
        return Err((
            RefusedReason::TooManyChannels,
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "too many channel parameters: {} given, at most {max_channels} allowed",
                    patterns.len()
                ),
            ),
        ));
    }
    Ok(Selection::from_patterns(patterns))
}

fn describe(selection: &Selection) -> String {
    match selection {
        Selection::All => "*configured*".into(),
        Selection::Patterns(patterns) => patterns.iter().map(Pattern::as_str).collect::<Vec<_>>().join(","),
    }
}

async fn healthz() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"alive"}"#)
}

/// Readiness, and the Redis node in use with the failovers followed since start.
#[derive(serde::Serialize)]
struct ReadyBody {
    #[serde(flatten)]
    readiness: Readiness,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    failovers: u64,
    /// What an operator should fix though the pod is ready (Redis may evict the log).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// Delivery proven on every path, not draining, and below the connection limit.
fn readiness(state: &AppState) -> Readiness {
    let mut readiness = state.health.readiness();
    let open = state.hub.open_connections();
    if readiness.ready && state.capacity.full(open) {
        readiness.ready = false;
        readiness.reason = Some(format!(
            "at the connection limit: {open} streams open of {}; ready again below 90 %",
            state.capacity.max()
        ));
    }
    readiness
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let readiness = readiness(&state);
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = ReadyBody {
        readiness,
        node: state.redis.current_primary(),
        failovers: state.redis.failovers(),
        warnings: state.eviction.warning().into_iter().collect(),
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // What /readyz would answer now: readiness depends on time (an outage counts only after
    // redis.unready_after_secs), so it is looked at when scraped.
    state.metrics.ready.set(i64::from(readiness(&state).ready));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {}", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}; use GET", request.method(), request.uri().path()),
    )
}
