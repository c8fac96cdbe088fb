//! Prometheus metrics declared as a table: each service builds its metrics with one call per
//! metric on a [`MetricsRegistry`], which registers it in the instance's own registry (the
//! prometheus crate refuses a second registration of a name, so every instance of a service —
//! tests start several in one process — gets its own).
//!
//! A label with a closed set of values is a type: [`CounterBy`] takes the values of an enum,
//! pre-creates every one (dashboards see zeros rather than gaps) and counts only those.

use std::marker::PhantomData;

use prometheus::core::Collector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The metrics of one service instance.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help))
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help))
    }

    /// A gauge of a fractional value (times, as `_timestamp_seconds`).
    pub fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::new(name, help))
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())))
    }

    /// A counter with labels whose values are bounded by the caller (route templates, names
    /// from a fixed list).
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels))
    }

    /// A gauge with labels whose values are bounded by the caller.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    pub fn histogram_vec(&self, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
        self.register(HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels))
    }

    /// A counter with one label whose values are those of `L`, each pre-created.
    pub fn counter_by<L>(&self, name: &str, help: &str, label: &str, values: &[L]) -> CounterBy<L>
    where
        L: Copy + Into<&'static str>,
    {
        let counters = self.counter_vec(name, help, &[label]);
        for value in values {
            counters.with_label_values(&[(*value).into()]);
        }
        CounterBy { counters, label: PhantomData }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buffer = Vec::new();
        // Encoding into a Vec fails only on invalid metric families, which this type never builds.
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buffer).unwrap_or_default();
        String::from_utf8(buffer).unwrap_or_default()
    }

    fn register<M: Collector + Clone + 'static>(&self, metric: prometheus::Result<M>) -> M {
        // Names, labels and buckets are constants of the calling service, and a name is declared
        // once per registry: a failure here is a programming error that every test that builds
        // the service would show at once.
        let metric = metric.expect("metric names, labels and buckets are valid constants");
        self.registry.register(Box::new(metric.clone())).expect("each metric is declared once per registry");
        metric
    }
}

/// A counter labelled by the values of `L`, a closed set.
#[derive(Clone)]
pub struct CounterBy<L> {
    counters: IntCounterVec,
    label: PhantomData<fn(L)>,
}

impl<L: Into<&'static str>> CounterBy<L> {
    pub fn inc(&self, value: L) {
        self.counters.with_label_values(&[value.into()]).inc();
    }

    pub fn get(&self, value: L) -> u64 {
        self.counters.with_label_values(&[value.into()]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    enum Colour {
        Red,
        Blue,
    }

    impl From<Colour> for &'static str {
        fn from(colour: Colour) -> Self {
            match colour {
                Colour::Red => "red",
                Colour::Blue => "blue",
            }
        }
    }

    #[test]
    fn labelled_counters_show_every_value_from_the_start() {
        let registry = MetricsRegistry::new();
        let counter =
            registry.counter_by("test_paints_total", "Paints", "colour", &[Colour::Red, Colour::Blue]);
        counter.inc(Colour::Blue);
        let text = registry.render();
        assert!(text.contains("test_paints_total{colour=\"red\"} 0"), "{text}");
        assert!(text.contains("test_paints_total{colour=\"blue\"} 1"), "{text}");
        assert_eq!(counter.get(Colour::Blue), 1);
    }

    #[test]
    fn each_instance_has_its_own_registry() {
        let first = MetricsRegistry::new();
        let second = MetricsRegistry::new();
        first.counter("test_total", "A counter").inc();
        second.counter("test_total", "A counter");
        assert!(first.render().contains("test_total 1"));
        assert!(second.render().contains("test_total 0"));
    }
}
