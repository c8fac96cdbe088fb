//! The in-process EventPublisher: every domain event goes to all registered handlers at once.
//!
//! Each handler runs in its own task, so one that errors, panics or hangs (it is cut after a
//! timeout) is logged with the event's correlation id and counted, and never stops the others
//! or fails the request that caused the event. Each handler's duration is a histogram sample.
//! The event's durable path is the outbox row written in the same transaction as the change;
//! handlers are for the side effects around it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::events::DomainEvent;
use crate::metrics::ForecastMetrics;

pub trait EventHandler: Send + Sync + 'static {
    /// A short, stable name: the `handler` label of the metrics.
    fn name(&self) -> &'static str;
    fn handle<'a>(&'a self, event: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>>;
}

#[derive(Clone)]
pub struct EventPublisher {
    handlers: Arc<[Arc<dyn EventHandler>]>,
    metrics: ForecastMetrics,
    timeout: Duration,
}

impl EventPublisher {
    pub fn new(handlers: Vec<Arc<dyn EventHandler>>, metrics: ForecastMetrics, timeout: Duration) -> Self {
        Self { handlers: handlers.into(), metrics, timeout }
    }

    /// Runs every handler on `event` concurrently and waits for all of them (each bounded by
    /// the timeout). Never fails: failures are logged and counted.
    pub async fn publish(&self, event: DomainEvent) {
        let event = Arc::new(event);
        let started = Instant::now();
        let tasks: Vec<_> = self
            .handlers
            .iter()
            .map(|handler| {
                let handler = Arc::clone(handler);
                let event = Arc::clone(&event);
                let timeout = self.timeout;
                tokio::spawn(async move {
                    let started = Instant::now();
                    let outcome = tokio::time::timeout(timeout, handler.handle(&event)).await;
                    (outcome, started.elapsed())
                })
            })
            .collect();
        for (handler, task) in self.handlers.iter().zip(tasks) {
            let name = handler.name();
            // A panicked task reports no duration of its own: charge it the time until we knew.
            let (failure, took) = match task.await {
                Ok((Ok(Ok(())), took)) => (None, took),
                Ok((Ok(Err(error)), took)) => (Some(format!("{error:#}")), took),
                Ok((Err(_), took)) => {
                    (Some(format!("timed out after {} ms", self.timeout.as_millis())), took)
                }
                Err(join) if join.is_panic() => {
                    (Some(format!("panicked: {}", panic_message(join.into_panic()))), started.elapsed())
                }
                Err(join) => (Some(join.to_string()), started.elapsed()),
            };
            self.metrics.handler_duration.with_label_values(&[name]).observe(took.as_secs_f64());
            if let Some(error) = failure {
                self.metrics.handler_failures.with_label_values(&[name]).inc();
                tracing::error!(
                    handler = name,
                    event = event.channel.name(),
                    event_id = %event.event_id,
                    correlation_id = %event.correlation_id,
                    error = %error,
                    "event handler failed"
                );
            }
        }
        tracing::info!(
            target: "forecast_api::events",
            event_id = %event.event_id,
            channel = event.channel.name(),
            correlation_id = %event.correlation_id,
            actor = %event.actor,
            handlers_ms = started.elapsed().as_secs_f64() * 1e3,
            "event handled"
        );
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Writes one structured line per event under the `audit` target: who, what, which id.
pub struct AuditHandler;

impl EventHandler for AuditHandler {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn handle<'a>(&'a self, event: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            tracing::info!(
                target: "audit",
                actor = %event.actor,
                action = event.channel.name(),
                subject_id = %event.subject_id,
                event_id = %event.event_id,
                correlation_id = %event.correlation_id,
                "audit"
            );
            Ok(())
        })
    }
}

/// Wakes the outbox dispatcher so the event (already in the outbox) goes out now rather than at
/// the next poll.
pub struct OutboxNotifier {
    pub notify: Arc<Notify>,
}

impl EventHandler for OutboxNotifier {
    fn name(&self) -> &'static str {
        "outbox_notifier"
    }

    fn handle<'a>(&'a self, _event: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.notify.notify_one();
            Ok(())
        })
    }
}

/// Counts domain events by channel.
pub struct MetricsHandler {
    pub metrics: ForecastMetrics,
}

impl EventHandler for MetricsHandler {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn handle<'a>(&'a self, event: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.metrics.domain_events.inc(event.channel);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::events::EventContext;

    struct Failing;
    impl EventHandler for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }
        fn handle<'a>(&'a self, _: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
            Box::pin(async { anyhow::bail!("storage unavailable") })
        }
    }

    struct Panicking;
    impl EventHandler for Panicking {
        fn name(&self) -> &'static str {
            "panicking"
        }
        fn handle<'a>(&'a self, _: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
            Box::pin(async { panic!("bug in handler") })
        }
    }

    struct Hanging;
    impl EventHandler for Hanging {
        fn name(&self) -> &'static str {
            "hanging"
        }
        fn handle<'a>(&'a self, _: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
            Box::pin(std::future::pending())
        }
    }

    struct Counting(Arc<AtomicUsize>);
    impl EventHandler for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn handle<'a>(&'a self, _: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
            Box::pin(async move {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }

    /// Waits until every handler of its barrier has started: handlers run one after another
    /// would wait for each other forever.
    struct Meeting(Arc<tokio::sync::Barrier>);
    impl EventHandler for Meeting {
        fn name(&self) -> &'static str {
            "meeting"
        }
        fn handle<'a>(&'a self, _: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
            Box::pin(async move {
                self.0.wait().await;
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn handlers_run_side_by_side() {
        let metrics = ForecastMetrics::new();
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        let handlers: Vec<Arc<dyn EventHandler>> =
            (0..3).map(|_| Arc::new(Meeting(Arc::clone(&barrier))) as Arc<dyn EventHandler>).collect();
        let publisher = EventPublisher::new(handlers, metrics.clone(), Duration::from_secs(1));
        publisher.publish(DomainEvent::forecast_deleted("x", &EventContext::default())).await;
        assert_eq!(
            metrics.handler_failures.with_label_values(&["meeting"]).get(),
            0,
            "none timed out waiting"
        );
        assert_eq!(metrics.handler_duration.with_label_values(&["meeting"]).get_sample_count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_panicking_and_hanging_handlers_do_not_stop_the_others() {
        let metrics = ForecastMetrics::new();
        let count = Arc::new(AtomicUsize::new(0));
        let publisher = EventPublisher::new(
            vec![
                Arc::new(Failing),
                Arc::new(Panicking),
                Arc::new(Hanging),
                Arc::new(Counting(Arc::clone(&count))),
            ],
            metrics.clone(),
            Duration::from_secs(1),
        );
        let event = DomainEvent::forecast_deleted("x", &EventContext::default());
        publisher.publish(event.clone()).await;
        publisher.publish(event).await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
        for name in ["failing", "panicking", "hanging"] {
            assert_eq!(metrics.handler_failures.with_label_values(&[name]).get(), 2, "{name}");
        }
        assert_eq!(metrics.handler_failures.with_label_values(&["counting"]).get(), 0);
        assert_eq!(metrics.handler_duration.with_label_values(&["counting"]).get_sample_count(), 2);
    }
}
