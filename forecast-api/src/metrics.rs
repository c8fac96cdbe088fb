//! forecast-api's Prometheus metrics, in a registry owned by one instance.
//!
//! Labels are bounded: route templates (never raw paths), methods, status codes, the closed set
//! of event channels, handler names.

use prometheus::{Gauge, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use service::metrics::{CounterBy, MetricsRegistry};
use service::redis_target::NodeMetrics;

use crate::events::Channel;

const HTTP_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const HANDLER_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Clone)]
pub struct ForecastMetrics {
    registry: MetricsRegistry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub domain_events: CounterBy<Channel>,
    pub events_published: CounterBy<Channel>,
    pub publish_failures: IntCounter,
    pub unreplicated: IntCounter,
    pub outbox_pending: IntGauge,
    pub outbox_oldest: Gauge,
    pub log_evictable: IntGauge,
    pub handler_duration: HistogramVec,
    pub handler_failures: IntCounterVec,
    pub redis_node: NodeMetrics,
}

impl ForecastMetrics {
    pub fn new() -> Self {
        let m = MetricsRegistry::new();
        Self {
            http_requests: m.counter_vec(
                "forecast_api_http_requests_total",
                "HTTP requests by method, route and status",
                &["method", "route", "status"],
            ),
            http_duration: m.histogram_vec(
                "forecast_api_http_request_duration_seconds",
                "HTTP request latency",
                &["method", "route"],
                HTTP_BUCKETS,
            ),
            domain_events: m.counter_by(
                "forecast_api_domain_events_total",
                "Domain events raised, by channel",
                "channel",
                &Channel::ALL,
            ),
            events_published: m.counter_by(
                "forecast_api_events_published_total",
                "Outbox events published to Redis, by channel",
                "channel",
                &Channel::ALL,
            ),
            publish_failures: m.counter(
                "forecast_api_outbox_publish_failures_total",
                "Failed attempts to publish outbox events (retried)",
            ),
            unreplicated: m.counter(
                "forecast_api_outbox_unreplicated_total",
                "Outbox batches published but not confirmed by redis.min_replicas replicas in time (kept and published again)",
            ),
            outbox_pending: m.gauge("forecast_api_outbox_pending", "Events written but not yet published"),
            outbox_oldest: m.float_gauge(
                "forecast_api_outbox_oldest_event_timestamp_seconds",
                "When the oldest event still waiting in the outbox was written, unix time; 0 when none waits",
            ),
            log_evictable: m.gauge(
                "forecast_api_redis_log_evictable",
                "1 when Redis may evict the event log (its memory policy reaches it), else 0",
            ),
            handler_duration: m.histogram_vec(
                "forecast_api_event_handler_duration_seconds",
                "Time each event handler took",
                &["handler"],
                HANDLER_BUCKETS,
            ),
            handler_failures: m.counter_vec(
                "forecast_api_event_handler_failures_total",
                "Event handlers that failed, panicked or timed out",
                &["handler"],
            ),
            redis_node: NodeMetrics::new(&m, "forecast_api"),
            registry: m,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}

impl Default for ForecastMetrics {
    fn default() -> Self {
        Self::new()
    }
}
