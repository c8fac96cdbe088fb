//! The OpenAPI document of the API (`GET /openapi.json`), from the handlers' annotations.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::api_keys::{self, ApiKeyCreated, ApiKeyRequest, Scope};
use super::errors::{
    ApiError, BadRequest, Conflict, Forbidden, NotFound, NotImplemented, PayloadTooLarge, PreconditionFailed,
    Problem, TooManyRequests, Unauthorized, UnsupportedMediaType,
};
use super::forecasts::{self, ForecastPage};
use super::relay_tokens::{self, GrantPattern, RelayToken, RelayTokenRequest};
use super::users::{self, ClaimsChange, Credentials, NewUser, RoleChange, SessionInfo, User};
use crate::model::{Forecast, ForecastInput};
use crate::users::Role;

#[derive(OpenApi)]
#[openapi(
    info(title = "forecast-api", description = "Weather forecasts, published as events to sse-relay."),
    paths(forecasts::list, forecasts::get_one, forecasts::create, forecasts::update, forecasts::delete,
          api_keys::create, api_keys::revoke, relay_tokens::create_token, relay_tokens::create_ticket,
          users::create, users::list, users::change_role, users::set_claims, users::revoke_sessions,
          users::sign_in, users::current, users::sign_out),
    components(
        schemas(Forecast, ForecastInput, ForecastPage, Problem, ApiKeyRequest, ApiKeyCreated, Scope,
                RelayTokenRequest, RelayToken, GrantPattern, User, NewUser, Role, RoleChange, ClaimsChange,
                Credentials, SessionInfo),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, PreconditionFailed, PayloadTooLarge,
                  UnsupportedMediaType, NotImplemented, Conflict, TooManyRequests)
    ),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
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
        // The browser sends it by itself once signed in (POST /api/session).
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "forecast_session",
                "session cookie from POST /api/session (auth.session_cookie_name)",
            ))),
        );
    }
}

pub async fn document() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => ApiError::internal(format!("openapi: {error}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route() {
        let json = ApiDoc::openapi().to_json().unwrap();
        for path in [
            "/api/weatherforecast",
            "/api/weatherforecast/{id}",
            "/api/admin/apikeys",
            "/api/admin/apikeys/{id}",
            "/api/relay-token",
            "/api/relay-ticket",
        ] {
            assert!(json.contains(path), "{path}");
        }
    }

    #[test]
    fn error_responses_are_declared_once_and_referred_to() {
        let document: serde_json::Value =
            serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap();
        let not_found = &document["components"]["responses"]["NotFound"];
        assert_eq!(
            not_found["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        let get_one = &document["paths"]["/api/weatherforecast/{id}"]["get"]["responses"];
        assert_eq!(get_one["404"]["$ref"], "#/components/responses/NotFound");
    }

    /// Client generators and Swagger UI name operations by their ids: each is its own.
    #[test]
    fn every_operation_has_an_id_of_its_own() {
        let document: serde_json::Value =
            serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap();
        let mut ids = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str();
                ids.push(id.unwrap_or_else(|| panic!("{method} {path} has no operationId")).to_owned());
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "operation ids repeat: {ids:?}");
    }
}
