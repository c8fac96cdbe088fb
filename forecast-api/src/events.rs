//! Domain events of forecast-api: what happened, to what, by whom, and where it is published.

use serde_json::json;
use uuid::Uuid;

use crate::model::Forecast;

/// The channels (and SSE event names) of the domain events: a closed set, also the `channel`
/// label of the event metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    ForecastCreated,
    ForecastUpdated,
    ForecastDeleted,
    ApiKeyCreated,
    ApiKeyRevoked,
}

impl Channel {
    pub const ALL: [Self; 5] = [
        Self::ForecastCreated,
        Self::ForecastUpdated,
        Self::ForecastDeleted,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
    ];

    /// The Redis channel name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ForecastCreated => "weatherforecast.created",
            Self::ForecastUpdated => "weatherforecast.updated",
            Self::ForecastDeleted => "weatherforecast.deleted",
            Self::ApiKeyCreated => "admin.apikey.created",
            Self::ApiKeyRevoked => "admin.apikey.revoked",
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
    /// The API key id that made the change.
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
    fn new(channel: Channel, subject_id: String, data: serde_json::Value, context: &EventContext) -> Self {
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
}

fn forecast_json(forecast: &Forecast) -> serde_json::Value {
    // A Forecast is plain strings and integers: serializing it cannot fail.
    serde_json::to_value(forecast).unwrap_or_default()
}
