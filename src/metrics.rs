//! The relay's Prometheus metrics, in a registry owned by one relay instance (so several
//! instances can live in one process, as tests do).
//!
//! Label values are bounded: refusal and drop reasons are closed sets (enums), never channel
//! names.

use prometheus::{Gauge, Histogram, IntCounter, IntGauge};
use protocol::message::DropReason;
use service::metrics::{CounterBy, MetricsRegistry};
use service::redis_target::NodeMetrics;

/// Buckets of the sub-second round trips (probe, delivery).
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const DELIVERY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const STREAM_LIFETIME_BUCKETS: &[f64] = &[1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

#[derive(Clone)]
pub struct RelayMetrics {
    registry: MetricsRegistry,
    pub connections: IntGauge,
    pub connections_accepted: IntCounter,
    pub connections_refused: CounterBy<RefusedReason>,
    pub events_received: IntCounter,
    pub events_delivered: IntCounter,
    pub events_dropped: CounterBy<DropReason>,
    pub slow_client_disconnects: IntCounter,
    pub selection_checks: IntCounter,
    pub redis_connected: IntGauge,
    pub redis_reconnects: IntCounter,
    pub probe_rtt: Histogram,
    pub probe_failures: IntCounter,
    pub connection_duration: Histogram,
    pub replayed_events: IntCounter,
    pub resumes: CounterBy<ResumeSource>,
    pub resume_window_entries: IntGauge,
    pub log_evictable: IntGauge,
    pub resume_window_bytes: IntGauge,
    pub gap_filled_events: IntCounter,
    pub redelivered_events_skipped: IntCounter,
    pub log_divergences: IntCounter,
    pub resets: IntCounter,
    pub delivery_latency: Histogram,
    pub redis_node: NodeMetrics,
    pub max_connections: IntGauge,
    pub ready: IntGauge,
    pub last_event_read: Gauge,
    pub log_read: Gauge,
    pub log_lag: Gauge,
    pub log_oldest_entry: Gauge,
}

/// Reasons a stream request is refused (`sse_relay_connections_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    MaxConnections,
    TooManyChannels,
    BadRequest,
    ShuttingDown,
    Unauthorized,
    Forbidden,
    Unavailable,
    PerIpLimit,
    UriTooLong,
}

impl RefusedReason {
    pub const ALL: [Self; 9] = [
        Self::MaxConnections,
        Self::TooManyChannels,
        Self::BadRequest,
        Self::ShuttingDown,
        Self::Unauthorized,
        Self::Forbidden,
        Self::Unavailable,
        Self::PerIpLimit,
        Self::UriTooLong,
    ];
}

impl From<RefusedReason> for &'static str {
    fn from(reason: RefusedReason) -> Self {
        match reason {
            RefusedReason::MaxConnections => "max_connections",
            RefusedReason::TooManyChannels => "too_many_channels",
            RefusedReason::BadRequest => "bad_request",
            RefusedReason::ShuttingDown => "shutting_down",
            RefusedReason::Unauthorized => "unauthorized",
            RefusedReason::Forbidden => "forbidden",
            RefusedReason::Unavailable => "unavailable",
            RefusedReason::PerIpLimit => "per_ip_limit",
            RefusedReason::UriTooLong => "uri_too_long",
        }
    }
}

/// Where a resume's backlog was read (`sse_relay_resumes_total{from}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeSource {
    /// The relay's resume window, without a Redis read.
    Window,
    /// The log in Redis.
    Log,
}

impl ResumeSource {
    pub const ALL: [Self; 2] = [Self::Window, Self::Log];
}

impl From<ResumeSource> for &'static str {
    fn from(source: ResumeSource) -> Self {
        match source {
            ResumeSource::Window => "window",
            ResumeSource::Log => "log",
        }
    }
}

impl RelayMetrics {
    pub fn new() -> Self {
        let m = MetricsRegistry::new();
        Self {
            connections: m.gauge("sse_relay_connections", "Open SSE streams"),
            connections_accepted: m.counter("sse_relay_connections_accepted_total", "SSE streams accepted"),
            connections_refused: m.counter_by(
                "sse_relay_connections_refused_total",
                "SSE stream requests refused, by reason",
                "reason",
                &RefusedReason::ALL,
            ),
            events_received: m.counter(
                "sse_relay_events_received_total",
                "Messages received from Redis on configured channels",
            ),
            events_delivered: m.counter(
                "sse_relay_events_delivered_total",
                "Events queued to client streams (one per receiving client)",
            ),
            events_dropped: m.counter_by(
                "sse_relay_events_dropped_total",
                "Messages from Redis dropped, by reason",
                "reason",
                &DropReason::ALL,
            ),
            slow_client_disconnects: m.counter(
                "sse_relay_slow_client_disconnects_total",
                "Clients disconnected because their queue was full",
            ),
            selection_checks: m.counter(
                "sse_relay_selection_checks_total",
                "Selections no index finds (several patterns, a leading wildcard) matched one by one against a channel not remembered",
            ),
            redis_connected: m
                .gauge("sse_relay_redis_connected", "1 while the log tail (and the subscription, with raw channels) is connected, else 0"),
            redis_reconnects: m.counter(
                "sse_relay_redis_reconnects_total",
                "Redis connections (log tail, subscription) re-established after a loss",
            ),
            probe_rtt: m.histogram(
                "sse_relay_probe_rtt_seconds",
                "Time for a probe to come back through the log tail or the subscription",
                LATENCY_BUCKETS,
            ),
            probe_failures: m.counter(
                "sse_relay_probe_failures_total",
                "Probes not back in time (the connection is considered wedged and replaced)",
            ),
            connection_duration: m.histogram(
                "sse_relay_connection_duration_seconds",
                "Lifetime of SSE streams",
                STREAM_LIFETIME_BUCKETS,
            ),
            replayed_events: m.counter(
                "sse_relay_replayed_events_total",
                "Events sent from the log to streams resuming with Last-Event-ID",
            ),
            resumes: m.counter_by(
                "sse_relay_resumes_total",
                "Streams resuming with Last-Event-ID, by where their backlog was read: the resume window (memory) or the log (Redis)",
                "from",
                &ResumeSource::ALL,
            ),
            log_evictable: m.gauge(
                "sse_relay_redis_log_evictable",
                "1 when Redis may evict the event log (its memory policy reaches it), else 0",
            ),
            resume_window_entries: m.gauge(
                "sse_relay_resume_window_entries",
                "Log entries held in memory to serve resumes without reading Redis",
            ),
            resume_window_bytes: m.gauge(
                "sse_relay_resume_window_bytes",
                "Memory held by the resume window's entries (frames, channels, bookkeeping)",
            ),
            gap_filled_events: m.counter(
                "sse_relay_gap_filled_events_total",
                "Events published while the relay's log tail was disconnected, read after it reconnected",
            ),
            redelivered_events_skipped: m.counter(
                "sse_relay_redelivered_events_skipped_total",
                "Events published again after a failover lost them from the log, not delivered twice",
            ),
            log_divergences: m.counter(
                "sse_relay_log_divergences_total",
                "Reconnects to a log lacking entries the relay had read (a failover lost the primary's latest writes)",
            ),
            resets: m.counter(
                "sse_relay_resets_total",
                "relay.reset events sent (resume point no longer in the log)",
            ),
            delivery_latency: m.histogram(
                "sse_relay_delivery_latency_seconds",
                "From an envelope's publish time (ts) to its frame being queued for clients",
                DELIVERY_BUCKETS,
            ),
            redis_node: NodeMetrics::new(&m, "sse_relay"),
            max_connections: m.gauge(
                "sse_relay_max_connections",
                "The pod's connection limit (limits.max_connections): beyond it streams are refused with 503",
            ),
            ready: m.gauge(
                "sse_relay_ready",
                "1 when /readyz would answer 200 (delivery proven, not draining, below the connection limit), else 0",
            ),
            last_event_read: m.float_gauge(
                "sse_relay_last_event_read_timestamp_seconds",
                "When the relay last read an event from Redis (log or subscription), unix time; 0 before the first",
            ),
            log_read: m.float_gauge(
                "sse_relay_log_read_timestamp_seconds",
                "When the log tail last had an answer from Redis (events, probes or an empty read), unix time",
            ),
            log_lag: m.float_gauge(
                "sse_relay_log_lag_seconds",
                "How old the newest log entry of the tail's last read was when read (from its id), 0 once a read finds the log's end: how far behind the log the tail is",
            ),
            log_oldest_entry: m.float_gauge(
                "sse_relay_log_oldest_entry_timestamp_seconds",
                "When the oldest entry the log still holds was written (from its id), unix time: a resume from before it gets relay.reset",
            ),
            registry: m,
        }
    }

    pub fn refused(&self, reason: RefusedReason) {
        self.connections_refused.inc(reason);
    }

    pub fn dropped(&self, reason: DropReason) {
        self.events_dropped.inc(reason);
    }

    /// An event read from Redis.
    pub fn received(&self) {
        self.events_received.inc();
        self.last_event_read.set(unix_seconds_now());
    }

    /// Records the time from an envelope's publish timestamp (unix µs) to now.
    pub fn observe_latency(&self, published_micros: Option<i64>) {
        if let Some(published) = published_micros {
            let elapsed = protocol::envelope::now_micros() - published;
            if elapsed >= 0 {
                self.delivery_latency.observe(elapsed as f64 / 1e6);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}

/// Now, as a `_timestamp_seconds` gauge holds it.
pub fn unix_seconds_now() -> f64 {
    protocol::envelope::now_micros() as f64 / 1e6
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
