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
use crate::store::StoreError;

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
#[utoipa::path(get, path = "/api/weatherforecast", operation_id = "listForecasts", tag = "forecasts",
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
#[utoipa::path(get, path = "/api/weatherforecast/{id}", operation_id = "getForecast", tag = "forecasts",
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
#[utoipa::path(post, path = "/api/weatherforecast", operation_id = "createForecast", tag = "forecasts", request_body = ForecastInput,
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
#[utoipa::path(put, path = "/api/weatherforecast/{id}", operation_id = "updateForecast", tag = "forecasts", request_body = ForecastInput,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[0-9]{1,18}|(W/)?"[!#-~]*"( *, *(W/)?"[!#-~]*"){0,15})$"#, description = "`*`, or entity tags (ETags from previous reads; a bare version is taken as its tag); a weak tag never matches"),
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
    let expected = expected_versions(&headers)?;
    let input: ForecastInput = json_body(&headers, body)?;
    input.validate().map_err(ApiError::validation)?;
    let context = event_context(&principal, &headers, &correlation);
    let (forecast, event) = with_precondition(&state, &id, expected, |version| {
        state.store.update_forecast(&id, &input, version, |f| DomainEvent::forecast_updated(f, &context))
    })
    .await?;
    state.publisher.publish(event).await;
    Ok(with_etag(Json(&forecast).into_response(), &forecast))
}

/// Deletes a forecast (needs `forecasts:write`); with `If-Match`, only if unchanged (else 412).
#[utoipa::path(delete, path = "/api/weatherforecast/{id}", operation_id = "deleteForecast", tag = "forecasts",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[0-9]{1,18}|(W/)?"[!#-~]*"( *, *(W/)?"[!#-~]*"){0,15})$"#, description = "`*`, or entity tags (ETags from previous reads; a bare version is taken as its tag); a weak tag never matches"),
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
    let expected = expected_versions(&headers)?;
    let context = event_context(&principal, &headers, &correlation);
    let event = with_precondition(&state, &id, expected, |version| {
        state.store.delete_forecast(&id, version, || DomainEvent::forecast_deleted(&id, &context))
    })
    .await?;
    state.publisher.publish(event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Entity tags an `If-Match` may list, at most.
const MAX_IF_MATCH_TAGS: usize = 16;

/// What `If-Match` (RFC 9110, 13.1.1) asks for: `None` when absent or `*` (any current
/// version); else the versions it names with strong tags. A weak tag never matches, nor does
/// a strong one that is not one of our versions: they are kept out, and when nothing is left
/// the precondition fails (412). Only what is not `*` or a list of entity tags (or a bare
/// version, `3`, accepted as `"3"`) is a 400.
fn expected_versions(headers: &HeaderMap) -> Result<Option<Vec<i64>>, ApiError> {
    let mut lines = headers.get_all(header::IF_MATCH).iter().peekable();
    if lines.peek().is_none() {
        return Ok(None);
    }
    let malformed =
        || ApiError::bad_request("If-Match must be * or a list of entity tags like \"3\", W/\"3\"");
    let mut versions = Vec::new();
    let mut tags = 0;
    for line in lines {
        let line = line.as_bytes();
        let trimmed = line.trim_ascii();
        // A bare version (`3`), as some clients send it: taken as its tag.
        if (1..=18).contains(&trimmed.len()) && trimmed.iter().all(u8::is_ascii_digit) {
            versions
                .push(std::str::from_utf8(trimmed).ok().and_then(|d| d.parse().ok()).ok_or_else(malformed)?);
            tags += 1;
            continue;
        }
        if trimmed == b"*" {
            // `*` stands alone (and then matches any current version).
            return if headers.get_all(header::IF_MATCH).iter().count() == 1 {
                Ok(None)
            } else {
                Err(malformed())
            };
        }
        let mut rest = line;
        loop {
            // Empty list elements and whitespace around them are allowed (RFC 9110, 5.6.1).
            rest = rest.trim_ascii_start();
            match rest.first() {
                None => break,
                Some(b',') => {
                    rest = &rest[1..];
                    continue;
                }
                Some(_) => {}
            }
            let weak = rest.starts_with(b"W/");
            if weak {
                rest = &rest[2..];
            }
            let opaque = rest.strip_prefix(b"\"").ok_or_else(malformed)?;
            let end = opaque.iter().position(|&b| b == b'"').ok_or_else(malformed)?;
            // etagc: %x21 / %x23-7E / obs-text.
            if !opaque[..end].iter().all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
                return Err(malformed());
            }
            let digits = &opaque[..end];
            if !weak && (1..=18).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
                // Eighteen digits at most: always an i64.
                versions.push(
                    std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).ok_or_else(malformed)?,
                );
            }
            tags += 1;
            rest = opaque[end + 1..].trim_ascii_start();
            if !(rest.is_empty() || rest.starts_with(b",")) {
                return Err(malformed());
            }
        }
    }
    if tags == 0 {
        return Err(malformed());
    }
    if tags > MAX_IF_MATCH_TAGS {
        return Err(ApiError::bad_request(format!(
            "If-Match lists {tags} entity tags; at most {MAX_IF_MATCH_TAGS}"
        )));
    }
    versions.sort_unstable();
    versions.dedup();
    Ok(Some(versions))
}

/// Runs `attempt` without a version (no precondition), or with each version `If-Match`
/// named until one is current; with none current, the precondition failed (or the forecast
/// is missing).
async fn with_precondition<T, Attempt>(
    state: &AppState,
    id: &str,
    versions: Option<Vec<i64>>,
    mut attempt: impl FnMut(Option<i64>) -> Attempt,
) -> Result<T, StoreError>
where
    Attempt: Future<Output = Result<T, StoreError>>,
{
    let Some(versions) = versions else { return attempt(None).await };
    for version in versions {
        match attempt(Some(version)).await {
            Err(StoreError::VersionMismatch { .. }) => {}
            other => return other,
        }
    }
    // Nothing named is current: say which version is (or that there is none).
    let current = state.store.get_forecast(id).await?;
    Err(StoreError::VersionMismatch { current: current.version })
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

    fn if_match(lines: &[&str]) -> Result<Option<Vec<i64>>, ApiError> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(header::IF_MATCH, HeaderValue::from_str(line).unwrap());
        }
        expected_versions(&headers)
    }

    #[test]
    fn if_match_is_star_or_a_list_of_entity_tags_compared_strongly() {
        assert_eq!(if_match(&[]).unwrap(), None);
        assert_eq!(if_match(&["*"]).unwrap(), None);
        assert_eq!(if_match(&["\"3\""]).unwrap(), Some(vec![3]));
        assert_eq!(if_match(&["\"3\", \"5\""]).unwrap(), Some(vec![3, 5]));
        assert_eq!(
            if_match(&["\"5\"", " ,\"3\" ,,"]).unwrap(),
            Some(vec![3, 5]),
            "every line, empty elements"
        );
        // Well formed, but never ours: a weak tag, an opaque tag, a number too large.
        assert_eq!(if_match(&["W/\"4\""]).unwrap(), Some(vec![]));
        assert_eq!(if_match(&["\"a\", W/\"4\", \"1234567890123456789\""]).unwrap(), Some(vec![]));
        assert_eq!(if_match(&["\"a,b\", \"2\""]).unwrap(), Some(vec![2]), "a comma inside a tag");
        assert_eq!(if_match(&[" 5 "]).unwrap(), Some(vec![5]), "a bare version");
        for bad in [
            &["\"3"][..],
            &["W/3\""],
            &["5a"],
            &["\"1 2\""],
            &["\"1\"x"],
            &[""],
            &["*", "\"1\""],
            &["\"1\", *"],
        ] {
            assert!(if_match(bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("\"{i}\"")).collect();
        assert!(if_match(&[&many.join(",")]).is_err());
    }
}
