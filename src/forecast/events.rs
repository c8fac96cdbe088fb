//! Domain events of forecast-api: what happened, to what, by whom, and where it is published.

use serde_json::json;
use uuid::Uuid;

use super::model::Forecast;

/// Channels (and SSE event names) of the domain events.
pub mod channels {
    pub const FORECAST_CREATED: &str = "weatherforecast.created";
    pub const FORECAST_UPDATED: &str = "weatherforecast.updated";
    pub const FORECAST_DELETED: &str = "weatherforecast.deleted";
    pub const APIKEY_CREATED: &str = "admin.apikey.created";
    pub const APIKEY_REVOKED: &str = "admin.apikey.revoked";
    /// Every channel, for bounded metric labels.
    pub const ALL: [&str; 5] =
        [FORECAST_CREATED, FORECAST_UPDATED, FORECAST_DELETED, APIKEY_CREATED, APIKEY_REVOKED];
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
    pub channel: &'static str,
    /// The id of the thing the event is about (forecast or API key).
    pub subject_id: String,
    pub data: serde_json::Value,
    pub actor: String,
    pub correlation_id: String,
    pub exclude: Option<String>,
}

impl DomainEvent {
    fn new(
        channel: &'static str,
        subject_id: String,
        data: serde_json::Value,
        context: &EventContext,
    ) -> Self {
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
        Self::new(channels::FORECAST_CREATED, forecast.id.clone(), forecast_json(forecast), context)
    }

    pub fn forecast_updated(forecast: &Forecast, context: &EventContext) -> Self {
        Self::new(channels::FORECAST_UPDATED, forecast.id.clone(), forecast_json(forecast), context)
    }

    pub fn forecast_deleted(id: &str, context: &EventContext) -> Self {
        Self::new(channels::FORECAST_DELETED, id.to_owned(), json!({ "id": id }), context)
    }

    /// Key id, name and scopes; never the secret.
    pub fn apikey_created(id: &str, name: &str, scopes: &[String], context: &EventContext) -> Self {
        Self::new(
            channels::APIKEY_CREATED,
            id.to_owned(),
            json!({ "id": id, "name": name, "scopes": scopes }),
            context,
        )
    }

    pub fn apikey_revoked(id: &str, name: &str, scopes: &[String], context: &EventContext) -> Self {
        Self::new(
            channels::APIKEY_REVOKED,
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
