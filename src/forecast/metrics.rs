//! forecast-api's Prometheus metrics, in a registry owned by one instance.
//!
//! Labels are bounded: route templates (never raw paths), methods, status codes, the fixed set of
//! event channels and handler names.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::events::channels;

#[derive(Clone)]
pub struct ForecastMetrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub domain_events: IntCounterVec,
    pub events_published: IntCounterVec,
    pub publish_failures: IntCounter,
    pub outbox_pending: IntGauge,
    pub handler_duration: HistogramVec,
    pub handler_failures: IntCounterVec,
}

impl ForecastMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        // Names and labels are constants, so construction and registration cannot fail.
        let http_requests = IntCounterVec::new(
            Opts::new("forecast_api_http_requests_total", "HTTP requests by method, route and status"),
            &["method", "route", "status"],
        )
        .unwrap();
        let http_duration = HistogramVec::new(
            HistogramOpts::new("forecast_api_http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method", "route"],
        )
        .unwrap();
        let domain_events = IntCounterVec::new(
            Opts::new("forecast_api_domain_events_total", "Domain events raised, by channel"),
            &["channel"],
        )
        .unwrap();
        let events_published = IntCounterVec::new(
            Opts::new("forecast_api_events_published_total", "Outbox events published to Redis, by channel"),
            &["channel"],
        )
        .unwrap();
        let publish_failures = IntCounter::new(
            "forecast_api_outbox_publish_failures_total",
            "Failed attempts to publish outbox events (retried)",
        )
        .unwrap();
        let outbox_pending =
            IntGauge::new("forecast_api_outbox_pending", "Events written but not yet published").unwrap();
        let handler_duration = HistogramVec::new(
            HistogramOpts::new("forecast_api_event_handler_duration_seconds", "Time each event handler took")
                .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["handler"],
        )
        .unwrap();
        let handler_failures = IntCounterVec::new(
            Opts::new(
                "forecast_api_event_handler_failures_total",
                "Event handlers that failed, panicked or timed out",
            ),
            &["handler"],
        )
        .unwrap();
        registry.register(Box::new(http_requests.clone())).unwrap();
        registry.register(Box::new(http_duration.clone())).unwrap();
        registry.register(Box::new(domain_events.clone())).unwrap();
        registry.register(Box::new(events_published.clone())).unwrap();
        registry.register(Box::new(publish_failures.clone())).unwrap();
        registry.register(Box::new(outbox_pending.clone())).unwrap();
        registry.register(Box::new(handler_duration.clone())).unwrap();
        registry.register(Box::new(handler_failures.clone())).unwrap();
        for channel in channels::ALL {
            domain_events.with_label_values(&[channel]);
            events_published.with_label_values(&[channel]);
        }
        Self {
            registry,
            http_requests,
            http_duration,
            domain_events,
            events_published,
            publish_failures,
            outbox_pending,
            handler_duration,
            handler_failures,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        crate::telemetry::render_metrics(&self.registry)
    }
}

impl Default for ForecastMetrics {
    fn default() -> Self {
        Self::new()
    }
}
