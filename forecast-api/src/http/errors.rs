//! The one place where errors become responses: RFC 7807 problem documents, and the reusable
//! OpenAPI responses that describe them.

use std::collections::BTreeMap;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::Ref;
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};

use crate::model::FieldError;
use crate::store::StoreError;

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
    retry_after_secs: Option<u64>,
    /// The database could not be reached (the response carries [`DatabaseUnreachable`]).
    database_unreachable: bool,
}

/// Marks a response refused because the database could not be reached, for the middleware
/// that then refuses further requests at once until it answers again.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseUnreachable;

/// Seconds a client is asked to wait while the database is unreachable.
const DATABASE_RETRY_AFTER_SECS: u64 = 2;

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            errors: None,
            www_authenticate: false,
            retry_after_secs: None,
            database_unreachable: false,
        }
    }

    /// 503: the database cannot be reached right now.
    pub fn database_unreachable() -> Self {
        Self {
            retry_after_secs: Some(DATABASE_RETRY_AFTER_SECS),
            database_unreachable: true,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "the database is unreachable; retry shortly")
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self { www_authenticate: true, ..Self::new(StatusCode::UNAUTHORIZED, detail) }
    }

    /// 429: too many attempts; retry after `wait`.
    pub fn too_many_requests(detail: impl Into<String>, wait: std::time::Duration) -> Self {
        Self {
            retry_after_secs: Some(wait.as_secs().max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail =
            errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for error in errors {
            map.entry(error.field.to_owned()).or_default().push(error.message);
        }
        Self { errors: Some(map), ..Self::bad_request(format!("invalid input: {detail}")) }
    }

    /// A fault of ours: logged with its cause, shown as a plain 500.
    pub fn internal(error: impl std::fmt::Display) -> Self {
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
            StoreError::Duplicate => {
                Self::new(StatusCode::CONFLICT, "a resource with this name already exists")
            }
            StoreError::VersionMismatch { current } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                format!("If-Match does not match the current version (ETag \"{current}\"); fetch it again"),
            ),
            StoreError::Database(error) if crate::store::is_unreachable(&error) => {
                tracing::warn!(error = %error, "database unreachable");
                Self::database_unreachable()
            }
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
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.database_unreachable {
            response.extensions_mut().insert(DatabaseUnreachable);
        }
        response
    }
}

/// The fallback for paths no route serves.
pub async fn not_found(request: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {}", request.uri().path()))
}

/// The fallback for methods a route does not serve.
pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

/// Declares each error response once, as an OpenAPI response component (a problem document
/// with a description), for the paths to refer to: `(status = 404, response = NotFound)`.
macro_rules! problem_responses {
    ($($name:ident => $description:literal),+ $(,)?) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                (stringify!($name), problem_response($description))
            }
        }
    )+};
}

problem_responses! {
    BadRequest => "The request is not valid: `detail` says why (and `errors`, per field, for invalid input).",
    Unauthorized => "No API key or session, or an unknown, revoked or expired one.",
    Forbidden => "The API key or the session's role lacks the scope this operation needs, or a cookie-authenticated write came from another site.",
    Conflict => "The name is taken.",
    TooManyRequests => "Too many sign-in attempts for this account or from this address: wait `Retry-After` seconds.",
    NotFound => "No such resource.",
    PreconditionFailed => "If-Match does not match the current version: fetch it again.",
    PayloadTooLarge => "The body is larger than `http.max_body_bytes`.",
    UnsupportedMediaType => "The body is not `application/json`.",
    NotImplemented => "Relay tokens are disabled: `auth.relay_jwt_secret` is not set.",
}

fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let problem = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", problem)
        .build()
        .into()
}
