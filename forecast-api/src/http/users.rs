//! Users (admin; registration also open when configured) and sessions (sign in, who am I,
//! sign out). Each change is written with its `admin.*` event in one transaction.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use service::server::ConnectionContext;
use utoipa::ToSchema;
use uuid::Uuid;

use super::errors::{
    ApiError, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, TooManyRequests, Unauthorized,
    UnsupportedMediaType,
};
use super::middleware::CorrelationId;
use super::request::{authorize, event_context, json_body, presented_key, session_secret};
use crate::auth::SCOPE_ADMIN;
use crate::events::{DomainEvent, EventContext};
use crate::model::FieldError;
use crate::state::AppState;
use crate::store::{StoreError, UserRecord, now_text};
use crate::users::{
    Role, claims_problem, new_session_secret, password_problem, session_hash, username_problem,
};

/// A user as the API shows it: never the password or its hash.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[schema(example = "4f7c1d0e-8a51-4d4e-9b7e-2f0c3b8d9a10")]
    pub id: String,
    #[schema(example = "alice")]
    pub username: String,
    pub role: Role,
    #[schema(schema_with = claims_schema)]
    pub claims: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&UserRecord> for User {
    fn from(user: &UserRecord) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            role: user.role,
            claims: user.claims.clone(),
            created_at: user.created_at.clone(),
            updated_at: user.updated_at.clone(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(example = "alice", pattern = "^[a-z0-9][a-z0-9._-]{2,63}$")]
    pub username: String,
    #[schema(example = "correct horse battery", min_length = 10, max_length = 256)]
    pub password: String,
    /// `viewer` when not given (and the only role open registration grants).
    pub role: Option<Role>,
    #[serde(default)]
    #[schema(schema_with = claims_schema)]
    pub claims: HashMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimsChange {
    /// Replaces the user's claims.
    #[schema(schema_with = claims_schema)]
    pub claims: HashMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = "correct horse battery")]
    pub password: String,
}

/// The signed-in user and when the session ends.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub user: User,
    pub expires_at: String,
}

/// Claims as [`claims_problem`] accepts them: at most 32, names of letters, digits and `._:-`,
/// string values without control characters.
fn claims_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let name = ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[A-Za-z0-9._:-]{1,64}$"));
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(256))
        .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]*$"));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(name))
        .additional_properties(Some(value))
        .max_properties(Some(32))
        .description(Some("Name/value pairs (at most 32)."))
        .examples([serde_json::json!({ "region": "eu" })])
        .build()
}

/// Creates a user (admin; anyone, as a `viewer`, with `auth.open_registration`).
#[utoipa::path(post, path = "/api/users", operation_id = "createUser", tag = "users", request_body = NewUser,
    responses((status = 201, body = User), (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 403, response = Forbidden), (status = 409, response = Conflict),
              (status = 413, response = PayloadTooLarge), (status = 415, response = UnsupportedMediaType)),
    security(("api_key" = []), ("session" = []), ()))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let anonymous =
        presented_key(&headers).is_none() && session_secret(&headers, &state.session.cookie_name).is_none();
    let principal = if anonymous && state.session.open_registration {
        None
    } else {
        Some(authorize(&state, &headers, SCOPE_ADMIN).await?)
    };
    let request: NewUser = json_body(&headers, body)?;
    let role = request.role.unwrap_or(Role::Viewer);
    let mut errors = Vec::new();
    if let Some(problem) = username_problem(&request.username) {
        errors.push(FieldError { field: "username", message: problem.into() });
    }
    if let Some(problem) = password_problem(&request.password) {
        errors.push(FieldError { field: "password", message: problem });
    }
    if let Some(problem) = claims_problem(&request.claims) {
        errors.push(FieldError { field: "claims", message: problem.into() });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    if principal.is_none() && (role != Role::Viewer || !request.claims.is_empty()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "open registration creates viewers without claims; an admin sets roles and claims",
        ));
    }
    let now = now_text();
    let user = UserRecord {
        id: Uuid::new_v4().to_string(),
        username: request.username.clone(),
        password_hash: state.passwords.hash(request.password).await.map_err(ApiError::internal)?,
        role,
        claims: request.claims.into_iter().collect(),
        created_at: now.clone(),
        updated_at: now,
    };
    let context = match &principal {
        Some(principal) => event_context(principal, &headers, &correlation),
        None => EventContext {
            actor: format!("user:{}", user.username),
            correlation_id: correlation.0.clone(),
            exclude: None,
        },
    };
    let event = DomainEvent::user_registered(&user, &context);
    state.store.insert_user(&user, &event).await.map_err(|error| match error {
        StoreError::Duplicate => {
            ApiError::new(StatusCode::CONFLICT, format!("the username {:?} is taken", user.username))
        }
        other => other.into(),
    })?;
    state.publisher.publish(event).await;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/users/{}", user.id))],
        Json(User::from(&user)),
    )
        .into_response())
}

/// Lists the users (admin).
#[utoipa::path(get, path = "/api/users", operation_id = "listUsers", tag = "users",
    responses((status = 200, body = Vec<User>), (status = 401, response = Unauthorized), (status = 403, response = Forbidden)),
    security(("api_key" = []), ("session" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<User>>, ApiError> {
    authorize(&state, &headers, SCOPE_ADMIN).await?;
    Ok(Json(state.store.list_users().await?.iter().map(User::from).collect()))
}

/// Changes a user's role (admin); published as `admin.user.rolechanged` when it changes.
#[utoipa::path(put, path = "/api/users/{id}/role", operation_id = "changeUserRole", tag = "users",
    params(("id" = String, Path)), request_body = RoleChange,
    responses((status = 200, body = User), (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 403, response = Forbidden), (status = 404, response = NotFound),
              (status = 415, response = UnsupportedMediaType)),
    security(("api_key" = []), ("session" = [])))]
pub async fn change_role(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<User>, ApiError> {
    let principal = authorize(&state, &headers, SCOPE_ADMIN).await?;
    let request: RoleChange = json_body(&headers, body)?;
    let context = event_context(&principal, &headers, &correlation);
    let (user, event) = state
        .store
        .update_user(
            &id,
            |user| user.role = request.role,
            |before, after| {
                (before.role != after.role).then(|| DomainEvent::user_role_changed(before, after, &context))
            },
        )
        .await
        .map_err(no_such_user)?;
    if let Some(event) = event {
        state.publisher.publish(event).await;
    }
    Ok(Json(User::from(&user)))
}

/// Replaces a user's claims (admin); published as `admin.user.claimchanged` when they change.
#[utoipa::path(put, path = "/api/users/{id}/claims", operation_id = "setUserClaims", tag = "users",
    params(("id" = String, Path)), request_body = ClaimsChange,
    responses((status = 200, body = User), (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 403, response = Forbidden), (status = 404, response = NotFound),
              (status = 415, response = UnsupportedMediaType)),
    security(("api_key" = []), ("session" = [])))]
pub async fn set_claims(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<User>, ApiError> {
    let principal = authorize(&state, &headers, SCOPE_ADMIN).await?;
    let request: ClaimsChange = json_body(&headers, body)?;
    if let Some(problem) = claims_problem(&request.claims) {
        return Err(ApiError::validation(vec![FieldError { field: "claims", message: problem.into() }]));
    }
    let claims: BTreeMap<String, String> = request.claims.into_iter().collect();
    let context = event_context(&principal, &headers, &correlation);
    let (user, event) = state
        .store
        .update_user(
            &id,
            |user| user.claims = claims,
            |before, after| {
                (before.claims != after.claims)
                    .then(|| DomainEvent::user_claims_changed(before, after, &context))
            },
        )
        .await
        .map_err(no_such_user)?;
    if let Some(event) = event {
        state.publisher.publish(event).await;
    }
    Ok(Json(User::from(&user)))
}

/// Ends every session of a user (admin); published as `admin.user.loggedout`.
#[utoipa::path(delete, path = "/api/users/{id}/sessions", operation_id = "revokeUserSessions", tag = "users",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
              (status = 404, response = NotFound)),
    security(("api_key" = []), ("session" = [])))]
pub async fn revoke_sessions(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = authorize(&state, &headers, SCOPE_ADMIN).await?;
    let context = event_context(&principal, &headers, &correlation);
    let (_, event) = state
        .store
        .end_sessions(&id, None, |user, ended| DomainEvent::user_logged_out(user, ended, true, &context))
        .await
        .map_err(no_such_user)?;
    if let Some(event) = event {
        state.publisher.publish(event).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

fn no_such_user(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "no user with this id"),
        other => other.into(),
    }
}

/// Signs in: a session cookie (HttpOnly, SameSite=Strict); published as
/// `admin.user.loggedin` and `admin.session.created`. An unknown user and a wrong password get
/// the same answer in the same time.
#[utoipa::path(post, path = "/api/session", operation_id = "signIn", tag = "session", request_body = Credentials,
    responses((status = 200, body = SessionInfo, headers(("Set-Cookie" = String, description = "the session cookie"))),
              (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
              (status = 413, response = PayloadTooLarge), (status = 415, response = UnsupportedMediaType),
              (status = 429, response = TooManyRequests)),
    security(()))]
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
    connection: Option<Extension<ConnectionContext>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let credentials: Credentials = json_body(&headers, body)?;
    let address = client_address(&state, connection.as_deref(), &headers);
    if let Err(wait) = state.sign_in.attempt(&credentials.username, address) {
        tracing::warn!(username = %credentials.username.escape_debug(), client = %address, "sign-in refused: too many attempts");
        return Err(ApiError::too_many_requests("too many sign-in attempts: wait and try again", wait));
    }
    // Bounded before hashing, like registration; an overlong password matches nothing.
    let user = match credentials.password.chars().count() <= crate::users::MAX_PASSWORD_CHARS {
        true => state.store.find_user_by_name(&credentials.username).await?,
        false => None,
    };
    let verified = state
        .passwords
        .verify(credentials.password, user.as_ref().map(|user| user.password_hash.clone()))
        .await
        .map_err(ApiError::internal)?;
    let Some(user) = user.filter(|_| verified) else {
        tracing::info!(username = %credentials.username.escape_debug(), client = %address, "sign-in failed");
        return Err(ApiError::unauthorized("the username or password is wrong"));
    };
    let (secret, hash) = new_session_secret();
    let session_id = Uuid::new_v4().to_string();
    let ttl = state.session.ttl;
    let expires_at = (chrono::Utc::now() + ttl).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let context = EventContext {
        actor: format!("user:{}", user.username),
        correlation_id: correlation.0.clone(),
        exclude: None,
    };
    let events = [
        DomainEvent::user_logged_in(&user, &session_id, &context),
        DomainEvent::session_created(&user, &session_id, &expires_at, &context),
    ];
    state.store.insert_session(&session_id, &hash, &user, &expires_at, &events).await?;
    for event in events {
        state.publisher.publish(event).await;
    }
    let cookie = session_cookie(&state, &headers, &secret, ttl.as_secs());
    let body = SessionInfo { user: User::from(&user), expires_at };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// Who is signed in with this session.
#[utoipa::path(get, path = "/api/session", operation_id = "currentSession", tag = "session",
    responses((status = 200, body = SessionInfo), (status = 401, response = Unauthorized)),
    security(("session" = [])))]
pub async fn current(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<SessionInfo>, ApiError> {
    let session = signed_in(&state, &headers).await?;
    Ok(Json(SessionInfo { user: User::from(&session.user), expires_at: session.expires_at }))
}

/// Signs out: the session ends and its cookie is cleared; published as `admin.user.loggedout`.
#[utoipa::path(delete, path = "/api/session", operation_id = "signOut", tag = "session",
    responses((status = 204), (status = 401, response = Unauthorized), (status = 403, response = Forbidden)),
    security(("session" = [])))]
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    Extension(correlation): Extension<CorrelationId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = signed_in(&state, &headers).await?;
    let context = EventContext {
        actor: format!("user:{}", session.user.username),
        correlation_id: correlation.0.clone(),
        exclude: None,
    };
    let (_, event) = state
        .store
        .end_sessions(&session.user.id, Some(&session.id), |user, ended| {
            DomainEvent::user_logged_out(user, ended, false, &context)
        })
        .await?;
    if let Some(event) = event {
        state.publisher.publish(event).await;
    }
    let cookie = session_cookie(&state, &headers, "", 0);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<crate::store::SessionRecord, ApiError> {
    let secret = session_secret(headers, &state.session.cookie_name)
        .ok_or_else(|| ApiError::unauthorized("not signed in: no session cookie"))?;
    state
        .store
        .active_session(&session_hash(secret))
        .await?
        .ok_or_else(|| ApiError::unauthorized("the session has ended or expired: sign in again"))
}

/// The session cookie (`max_age` 0 clears it): HttpOnly, SameSite=Strict, and Secure when
/// configured or when the request came over HTTPS.
fn session_cookie(state: &AppState, headers: &HeaderMap, secret: &str, max_age: u64) -> HeaderValue {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let secure = if state.session.always_secure || https { "; Secure" } else { "" };
    let cookie = format!(
        "{}={secret}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        state.session.cookie_name
    );
    // The name is validated at start and the secret is hex.
    HeaderValue::from_str(&cookie).expect("a valid cookie header")
}

fn client_address(state: &AppState, connection: Option<&ConnectionContext>, headers: &HeaderMap) -> IpAddr {
    let peer = connection.map_or(IpAddr::from([0, 0, 0, 0]), |connection| connection.peer.ip());
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok());
    service::client_ip::client_ip(peer, forwarded, state.trusted_proxy_hops)
}
