//! The relay's Prometheus metrics, in a registry owned by one relay instance (so several
//! instances can live in one process, as tests do).
//!
//! Label values are bounded: refusal and drop reasons are fixed sets, never channel names.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct RelayMetrics {
    registry: Registry,
    pub connections: IntGauge,
    pub connections_accepted: IntCounter,
    connections_refused: IntCounterVec,
    pub events_received: IntCounter,
    pub events_delivered: IntCounter,
    events_dropped: IntCounterVec,
    pub slow_client_disconnects: IntCounter,
    pub redis_connected: IntGauge,
    pub redis_reconnects: IntCounter,
    pub probe_rtt: Histogram,
    pub probe_failures: IntCounter,
    pub connection_duration: Histogram,
    pub replayed_events: IntCounter,
    pub gap_filled_events: IntCounter,
    pub resets: IntCounter,
    pub delivery_latency: Histogram,
}

/// Reasons a stream request is refused (`sse_relay_connections_refused_total{reason}`).
#[derive(Debug, Clone, Copy)]
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
    fn label(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::TooManyChannels => "too_many_channels",
            Self::BadRequest => "bad_request",
            Self::ShuttingDown => "shutting_down",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
            Self::PerIpLimit => "per_ip_limit",
            Self::UriTooLong => "uri_too_long",
        }
    }
}

impl RelayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let connections = IntGauge::new("sse_relay_connections", "Open SSE streams").unwrap();
        let connections_accepted =
            IntCounter::new("sse_relay_connections_accepted_total", "SSE streams accepted").unwrap();
        let connections_refused = IntCounterVec::new(
            Opts::new("sse_relay_connections_refused_total", "SSE stream requests refused, by reason"),
            &["reason"],
        )
        .unwrap();
        let events_received = IntCounter::new(
            "sse_relay_events_received_total",
            "Messages received from Redis on configured channels",
        )
        .unwrap();
        let events_delivered = IntCounter::new(
            "sse_relay_events_delivered_total",
            "Events queued to client streams (one per receiving client)",
        )
        .unwrap();
        let events_dropped = IntCounterVec::new(
            Opts::new("sse_relay_events_dropped_total", "Messages from Redis dropped, by reason"),
            &["reason"],
        )
        .unwrap();
        let slow_client_disconnects = IntCounter::new(
            "sse_relay_slow_client_disconnects_total",
            "Clients disconnected because their queue was full",
        )
        .unwrap();
        let redis_connected = IntGauge::new(
            "sse_relay_redis_connected",
            "1 while the Redis subscription is established, else 0",
        )
        .unwrap();
        let redis_reconnects = IntCounter::new(
            "sse_relay_redis_reconnects_total",
            "Redis subscriptions re-established after a loss",
        )
        .unwrap();
        let probe_rtt = Histogram::with_opts(
            HistogramOpts::new(
                "sse_relay_probe_rtt_seconds",
                "Time for a probe published on the relay's own channel to come back",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )
        .unwrap();
        let probe_failures = IntCounter::new(
            "sse_relay_probe_failures_total",
            "Probes not echoed in time (subscription considered wedged)",
        )
        .unwrap();
        let connection_duration = Histogram::with_opts(
            HistogramOpts::new("sse_relay_connection_duration_seconds", "Lifetime of SSE streams")
                .buckets(vec![1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0]),
        )
        .unwrap();

        let replayed_events = IntCounter::new(
            "sse_relay_replayed_events_total",
            "Events sent from the log to streams resuming with Last-Event-ID",
        )
        .unwrap();
        let gap_filled_events = IntCounter::new(
            "sse_relay_gap_filled_events_total",
            "Events read from the log after the relay's own subscription was interrupted",
        )
        .unwrap();
        let resets = IntCounter::new(
            "sse_relay_resets_total",
            "relay.reset events sent (resume point no longer in the log)",
        )
        .unwrap();
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "sse_relay_delivery_latency_seconds",
                "From an envelope's publish time (ts) to its frame being queued for clients",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .unwrap();

        // Names are unique and well-formed constants, so registration cannot fail.
        registry.register(Box::new(connections.clone())).unwrap();
        registry.register(Box::new(connections_accepted.clone())).unwrap();
        registry.register(Box::new(connections_refused.clone())).unwrap();
        registry.register(Box::new(events_received.clone())).unwrap();
        registry.register(Box::new(events_delivered.clone())).unwrap();
        registry.register(Box::new(events_dropped.clone())).unwrap();
        registry.register(Box::new(slow_client_disconnects.clone())).unwrap();
        registry.register(Box::new(redis_connected.clone())).unwrap();
        registry.register(Box::new(redis_reconnects.clone())).unwrap();
        registry.register(Box::new(probe_rtt.clone())).unwrap();
        registry.register(Box::new(probe_failures.clone())).unwrap();
        registry.register(Box::new(connection_duration.clone())).unwrap();
        registry.register(Box::new(replayed_events.clone())).unwrap();
        registry.register(Box::new(gap_filled_events.clone())).unwrap();
        registry.register(Box::new(resets.clone())).unwrap();
        registry.register(Box::new(delivery_latency.clone())).unwrap();

        // Pre-create the fixed label values so dashboards see zeros rather than gaps.
        for reason in [
            "max_connections",
            "too_many_channels",
            "bad_request",
            "shutting_down",
            "unauthorized",
            "forbidden",
            "unavailable",
            "per_ip_limit",
            "uri_too_long",
        ] {
            connections_refused.with_label_values(&[reason]);
        }
        for reason in ["too_large", "invalid_utf8", "invalid_channel", "line_break_in_field", "bad_envelope"]
        {
            events_dropped.with_label_values(&[reason]);
        }

        Self {
            registry,
            connections,
            connections_accepted,
            connections_refused,
            events_received,
            events_delivered,
            events_dropped,
            slow_client_disconnects,
            redis_connected,
            redis_reconnects,
            probe_rtt,
            probe_failures,
            connection_duration,
            replayed_events,
            gap_filled_events,
            resets,
            delivery_latency,
        }
    }

    pub fn refused(&self, reason: RefusedReason) {
        self.connections_refused.with_label_values(&[reason.label()]).inc();
    }

    /// `reason` must come from a fixed set (see [`crate::relay::sse::EncodeError::reason`]).
    pub fn dropped(&self, reason: &'static str) {
        self.events_dropped.with_label_values(&[reason]).inc();
    }

    /// Records the time from an envelope's publish timestamp (unix µs) to now.
    pub fn observe_latency(&self, published_micros: Option<i64>) {
        if let Some(published) = published_micros {
            let elapsed = crate::envelope::now_micros() - published;
            if elapsed >= 0 {
                self.delivery_latency.observe(elapsed as f64 / 1e6);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        crate::telemetry::render_metrics(&self.registry)
    }
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
