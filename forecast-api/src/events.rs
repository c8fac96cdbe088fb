//! Domain events of forecast-api: what happened, to what, by whom, and where it is published.

use serde_json::json;
use uuid::Uuid;

use crate::model::Forecast;
use crate::store::UserRecord;

/// The channels (and SSE event names) of the domain events: a closed set, also the `channel`
/// label of the event metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    ForecastCreated,
    ForecastUpdated,
    ForecastDeleted,
    ApiKeyCreated,
    ApiKeyRevoked,
    UserRegistered,
    UserLoggedIn,
    UserLoggedOut,
    SessionCreated,
    UserRoleChanged,
    UserClaimChanged,
}

impl Channel {
    pub const ALL: [Self; 11] = [
        Self::ForecastCreated,
        Self::ForecastUpdated,
        Self::ForecastDeleted,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::UserRegistered,
        Self::UserLoggedIn,
        Self::UserLoggedOut,
        Self::SessionCreated,
        Self::UserRoleChanged,
        Self::UserClaimChanged,
    ];

    /// The Redis channel name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ForecastCreated => "weatherforecast.created",
            Self::ForecastUpdated => "weatherforecast.updated",
            Self::ForecastDeleted => "weatherforecast.deleted",
            Self::ApiKeyCreated => "admin.apikey.created",
            Self::ApiKeyRevoked => "admin.apikey.revoked",
            Self::UserRegistered => "admin.user.registered",
            Self::UserLoggedIn => "admin.user.loggedin",
            Self::UserLoggedOut => "admin.user.loggedout",
            Self::SessionCreated => "admin.session.created",
            Self::UserRoleChanged => "admin.user.rolechanged",
            Self::UserClaimChanged => "admin.user.claimchanged",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|channel| channel.name() == name)
    }
}

impl From<Channel> for &'static str {
    fn from(channel: Channel) -> Self {
        channel.name()
    }
}

/// Who asked, and how to trace it: carried from the HTTP request into every event it causes.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    /// Who made the change: `user:<username>` or `key:<API key id>`.
    pub actor: String,
    pub correlation_id: String,
    /// The relay connection of the browser that made the change (`X-Relay-Connection-Id`), so
    /// that its own change is not echoed back to it.
    pub exclude: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DomainEvent {
    pub event_id: Uuid,
    pub channel: Channel,
    /// The id of the thing the event is about (forecast or API key).
    pub subject_id: String,
    pub data: serde_json::Value,
    pub actor: String,
    pub correlation_id: String,
    pub exclude: Option<String>,
}

impl DomainEvent {
    /// Every event's data says who caused it (`actor`), for the dashboard ("created by alice").
    fn new(
        channel: Channel,
        subject_id: String,
        mut data: serde_json::Value,
        context: &EventContext,
    ) -> Self {
        if let Some(object) = data.as_object_mut() {
            object.insert("actor".into(), context.actor.clone().into());
        }
        Self {
            event_id: Uuid::new_v4(),
            channel,
            subject_id,
            data,
            actor: context.actor.clone(),
            correlation_id: context.correlation_id.clone(),
            exclude: context.exclude.clone(),
        }
    }

    pub fn forecast_created(forecast: &Forecast, context: &EventContext) -> Self {
        Self::new(Channel::ForecastCreated, forecast.id.clone(), forecast_json(forecast), context)
    }

    pub fn forecast_updated(forecast: &Forecast, context: &EventContext) -> Self {
        Self::new(Channel::ForecastUpdated, forecast.id.clone(), forecast_json(forecast), context)
    }

    pub fn forecast_deleted(id: &str, context: &EventContext) -> Self {
        Self::new(Channel::ForecastDeleted, id.to_owned(), json!({ "id": id }), context)
    }

    /// Key id, name and scopes; never the secret.
    pub fn apikey_created(id: &str, name: &str, scopes: &[String], context: &EventContext) -> Self {
        Self::new(
            Channel::ApiKeyCreated,
            id.to_owned(),
            json!({ "id": id, "name": name, "scopes": scopes }),
            context,
        )
    }

    pub fn apikey_revoked(id: &str, name: &str, scopes: &[String], context: &EventContext) -> Self {
        Self::new(
            Channel::ApiKeyRevoked,
            id.to_owned(),
            json!({ "id": id, "name": name, "scopes": scopes }),
            context,
        )
    }

    /// A user was created: id, username, role and claims; never the password.
    pub fn user_registered(user: &UserRecord, context: &EventContext) -> Self {
        Self::new(Channel::UserRegistered, user.id.clone(), user_json(user), context)
    }

    pub fn user_logged_in(user: &UserRecord, session_id: &str, context: &EventContext) -> Self {
        let data = json!({ "id": user.id, "username": user.username, "sessionId": session_id });
        Self::new(Channel::UserLoggedIn, user.id.clone(), data, context)
    }

    /// The session's public id, never its secret.
    pub fn session_created(
        user: &UserRecord,
        session_id: &str,
        expires_at: &str,
        context: &EventContext,
    ) -> Self {
        let data = json!({ "sessionId": session_id, "userId": user.id, "username": user.username, "expiresAt": expires_at });
        Self::new(Channel::SessionCreated, session_id.to_owned(), data, context)
    }

    /// `sessions` ended: the user signed out (one), or an admin revoked them (`revoked`).
    pub fn user_logged_out(user: &UserRecord, sessions: u64, revoked: bool, context: &EventContext) -> Self {
        let data = json!({
            "id": user.id,
            "username": user.username,
            "sessions": sessions,
            "reason": if revoked { "sessions revoked" } else { "signed out" },
        });
        Self::new(Channel::UserLoggedOut, user.id.clone(), data, context)
    }

    pub fn user_role_changed(before: &UserRecord, after: &UserRecord, context: &EventContext) -> Self {
        let data = json!({ "id": after.id, "username": after.username, "role": after.role, "previousRole": before.role });
        Self::new(Channel::UserRoleChanged, after.id.clone(), data, context)
    }

    pub fn user_claims_changed(before: &UserRecord, after: &UserRecord, context: &EventContext) -> Self {
        let data = json!({ "id": after.id, "username": after.username, "claims": after.claims, "previousClaims": before.claims });
        Self::new(Channel::UserClaimChanged, after.id.clone(), data, context)
    }
}

fn user_json(user: &UserRecord) -> serde_json::Value {
    json!({ "id": user.id, "username": user.username, "role": user.role, "claims": user.claims })
}

fn forecast_json(forecast: &Forecast) -> serde_json::Value {
    // A Forecast is plain strings and integers: serializing it cannot fail.
    serde_json::to_value(forecast).unwrap_or_default()
}
