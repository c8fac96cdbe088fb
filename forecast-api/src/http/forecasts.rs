//! Forecasts: list by date a page at a time, read one (with its ETag), create, replace and
//! delete (needs `forecasts:write`; `If-Match` for optimistic concurrency). Each change is
//! written with its event and published as `weatherforecast.created|updated|deleted`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::errors::{
    ApiError, BadRequest, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, Unauthorized,
    UnsupportedMediaType,
};
use super::middleware::CorrelationId;
use super::request::{authorize, event_context, json_body};
use crate::auth::SCOPE_FORECASTS_WRITE;
use crate::events::DomainEvent;
use crate::model::{Forecast, ForecastInput};
use crate::state::AppState;

const MAX_PAGE_SIZE: i64 = 100;
const MAX_PAGE: i64 = 1_000_000_000;
const DEFAULT_PAGE_SIZE: i64 = 20;

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
    responses((status = 200, body = ForecastPage), (status = 400, response = BadRequest)))]
pub async fn list(
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
                    ApiError::bad_request(format!(
                        "page must be an integer from 1 to {MAX_PAGE}, got {value:?}"
                    ))
                })?
            }
            "pageSize" => {
                page_size = parsed.ok().filter(|s| (1..=MAX_PAGE_SIZE).contains(s)).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "pageSize must be an integer from 1 to {MAX_PAGE_SIZE}, got {value:?}"
                    ))
                })?
            }
            _ => {}
        }
    }
    let offset =
        (page - 1).checked_mul(page_size).ok_or_else(|| ApiError::bad_request("page is too large"))?;
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
    responses((status = 200, body = Forecast), (status = 404, response = NotFound)))]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let forecast = state.store.get_forecast(&id).await?;
    Ok(with_etag(Json(&forecast).into_response(), &forecast))
}

/// Creates a forecast (needs `forecasts:write`) and publishes `weatherforecast.created`.
#[utoipa::path(post, path = "/api/weatherforecast", tag = "forecasts", request_body = ForecastInput,
    params(("X-Relay-Connection-Id" = Option<String>, Header, nullable = false, description = "relay connection not to echo the event to")),
    responses((status = 201, body = Forecast), (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 403, response = Forbidden), (status = 413, response = PayloadTooLarge),
              (status = 415, response = UnsupportedMediaType)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
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
    responses((status = 200, body = Forecast), (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 403, response = Forbidden), (status = 404, response = NotFound),
              (status = 412, response = PreconditionFailed), (status = 413, response = PayloadTooLarge),
              (status = 415, response = UnsupportedMediaType)),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
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
    responses((status = 204), (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 403, response = Forbidden), (status = 404, response = NotFound),
              (status = 412, response = PreconditionFailed)),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
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
    digits
        .parse::<i64>()
        .ok()
        .filter(|_| valid)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("If-Match must be one ETag like \"3\", got {text:?}")))
}

fn with_etag(mut response: Response, forecast: &Forecast) -> Response {
    if let Ok(value) = HeaderValue::from_str(&forecast.etag()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
