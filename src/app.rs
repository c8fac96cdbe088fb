//! The relay as one application: [`Relay::build`] binds the listener (port 0 allowed) and
//! wires the parts; the binary and the tests both call it, then [`Relay::run_until_stopped`] serves until a shutdown signal and
//! drains: readiness off, a delay for load balancers, stop accepting, end streams spread over
//! a window, and cut whatever is left at the end of the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use protocol::partition::Partitions;
use service::server::{self, ServerControl};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::channels::ChannelRules;
use crate::client_ip::PerIpLimiter;
use crate::commands::SharedConnection;
use crate::direct_stream::DirectStreams;
use crate::health::{Capacity, DeliveryPath, Health};
use crate::http::{self, AppState};
use crate::hub::Hub;
use crate::log::LogReader;
use crate::metrics::RelayMetrics;
use crate::replay::Replay;
use crate::settings::RelaySettings;
use crate::sharded::ShardedSubscriber;
use crate::source::{SourceContext, supervise};
use crate::subscriber::Subscriber;
use crate::tail::LogTail;
use crate::window::ResumeWindow;
use service::log_eviction::EvictionWatch;
use service::redis_target::RedisTarget;

pub struct Relay {
    listener: TcpListener,
    /// `metrics_listen`: `/metrics` on a listener of its own.
    metrics_listener: Option<TcpListener>,
    settings: RelaySettings,
    state: Arc<AppState>,
    tail: Option<LogTail>,
    subscriber: Option<Subscriber>,
    sharded: Option<ShardedSubscriber>,
}

impl Relay {
    /// Validates the wiring and binds the listening socket.
    pub async fn build(settings: RelaySettings) -> anyhow::Result<Self> {
        let addr = settings.listen_addr()?;
        let rules = Arc::new(ChannelRules::new(settings.channel_rules()?));
        let metrics = RelayMetrics::new();
        metrics.max_connections.set(i64::try_from(settings.limits.max_connections).unwrap_or(i64::MAX));
        let redis = Arc::new(RedisTarget::new(
            settings.redis.endpoint(),
            settings.redis.connect_timeout(),
            metrics.redis_node.clone(),
        ));
        // Envelope channels are read from the log; raw ones (and envelope ones when there is no
        // log) from a subscription. Each runs only when some channel needs it.
        let log_enabled = !settings.redis.log_stream.is_empty();
        let tail_needed = log_enabled && rules.has_envelope_rules();
        let patterns = rules.subscribed_patterns(log_enabled);
        let sharded_channels = rules.sharded_channels();
        let paths: Vec<DeliveryPath> = [
            tail_needed.then_some(DeliveryPath::Log),
            (!patterns.is_empty()).then_some(DeliveryPath::Subscription),
            (!sharded_channels.is_empty()).then_some(DeliveryPath::Sharded),
        ]
        .into_iter()
        .flatten()
        .collect();
        let health =
            Arc::new(Health::new(settings.redis.unready_after(), &paths, metrics.redis_connected.clone()));
        let hub = Hub::new(
            metrics.clone(),
            usize::try_from(settings.limits.client_queue).unwrap_or(usize::MAX),
            usize::try_from(settings.limits.max_connections).unwrap_or(usize::MAX),
        );
        let max_message_bytes = usize::try_from(settings.limits.max_message_bytes).unwrap_or(usize::MAX);
        let commands = Arc::new(SharedConnection::new(Arc::clone(&redis), settings.redis.connect_timeout()));
        // In a cluster each partition's key carries a hash tag, as forecast-api writes them.
        let log_keys: Vec<String> = if log_enabled {
            let partitions = Partitions::new(settings.redis.log_partitions, redis.is_cluster());
            (0..partitions.count())
                .map(|partition| partitions.log_key(&settings.redis.log_stream, partition))
                .collect()
        } else {
            Vec::new()
        };
        let log = Arc::new(LogReader::new(Arc::clone(&commands), log_keys.clone()));
        // Only the tail fills the window: without one, resumes read the log.
        let window = Arc::new(ResumeWindow::new(
            log_keys.len(),
            if tail_needed {
                usize::try_from(settings.redis.resume_window_entries).unwrap_or(usize::MAX)
            } else {
                0
            },
            usize::try_from(settings.redis.resume_window_bytes).unwrap_or(usize::MAX),
            metrics.resume_window_entries.clone(),
            metrics.resume_window_bytes.clone(),
        ));
        let replay = Arc::new(Replay {
            log,
            window: Arc::clone(&window),
            rules: Arc::clone(&rules),
            metrics: metrics.clone(),
            max_message_bytes,
            max_entries: match settings.redis.max_replay_entries {
                0 => usize::MAX,
                entries => usize::try_from(entries).unwrap_or(usize::MAX),
            },
        });
        let auth = Arc::new(TokenVerifier::new(&settings.auth, Arc::clone(&commands))?);
        let eviction = Arc::new(EvictionWatch::new(metrics.log_evictable.clone()));
        let sources = Arc::new(SourceContext {
            target: Arc::clone(&redis),
            commands: Arc::clone(&commands),
            settings: settings.redis.clone(),
            rules: Arc::clone(&rules),
            max_message_bytes,
            hub: Arc::clone(&hub),
            health: Arc::clone(&health),
            metrics: metrics.clone(),
            eviction: Arc::clone(&eviction),
        });
        let tail =
            tail_needed.then(|| LogTail::new(Arc::clone(&sources), window, log_keys, &settings.pod_id));
        let sharded = (!sharded_channels.is_empty())
            .then(|| ShardedSubscriber::new(Arc::clone(&sources), sharded_channels, &settings.pod_id));
        let subscriber =
            (!patterns.is_empty()).then(|| Subscriber::new(Arc::clone(&sources), patterns, &settings.pod_id));
        let listener = server::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let metrics_listener = match settings.metrics_addr()? {
            Some(addr) => {
                Some(server::bind(addr).with_context(|| format!("cannot listen on {addr} for metrics"))?)
            }
            None => None,
        };
        let state = Arc::new(AppState {
            hub,
            health,
            redis,
            metrics,
            replay,
            auth,
            rules,
            eviction,
            capacity: Capacity::new(usize::try_from(settings.limits.max_connections).unwrap_or(usize::MAX)),
            per_ip: PerIpLimiter::new(
                usize::try_from(settings.limits.max_connections_per_ip).unwrap_or(usize::MAX),
            ),
            trusted_proxy_hops: usize::try_from(settings.limits.trusted_proxy_hops).unwrap_or(0),
            max_url_bytes: usize::try_from(settings.limits.max_url_bytes).unwrap_or(usize::MAX),
            retry_ms: settings.sse.retry_ms,
            max_channels_per_request: usize::try_from(settings.limits.max_channels_per_request)
                .unwrap_or(usize::MAX),
            retry_after_secs: settings.sse.retry_ms.div_ceil(1000).max(1),
        });
        Ok(Self { listener, metrics_listener, settings, state, tail, subscriber, sharded })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Where `/metrics` is served on its own (`metrics_listen`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains within the grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self { listener, metrics_listener, settings, state, tail, subscriber, sharded } = self;
        let redis_cancel = CancellationToken::new();
        let redis_tasks = TaskTracker::new();
        if let Some(tail) = tail {
            redis_tasks.spawn(supervise(tail, redis_cancel.clone()));
        }
        if let Some(subscriber) = subscriber {
            redis_tasks.spawn(supervise(subscriber, redis_cancel.clone()));
        }
        if let Some(sharded) = sharded {
            redis_tasks.spawn(supervise(sharded, redis_cancel.clone()));
        }
        redis_tasks.close();
        let keepalive_task = {
            let hub = Arc::clone(&state.hub);
            let interval = settings.sse.keepalive();
            tokio::spawn(async move { hub.keep_alive(interval).await })
        };

        let control = ServerControl::default();
        let connections = TaskTracker::new();
        let router =
            http::router(Arc::clone(&state), &settings.cors.allowed_origins, metrics_listener.is_some());
        // Metrics stay up through the drain, and stop with the process.
        let metrics_task = metrics_listener.map(|listener| {
            let router = http::metrics_router(Arc::clone(&state));
            tokio::spawn(async move { axum::serve(listener, router).await })
        });
        let header_read_timeout = settings.limits.header_read_timeout();
        let direct_streams = DirectStreams { path: "/events", router: router.clone(), header_read_timeout };
        let accept_task = tokio::spawn(server::serve(
            listener,
            router,
            control.clone(),
            connections.clone(),
            header_read_timeout,
            direct_streams,
        ));

        shutdown.await;
        let started = tokio::time::Instant::now();
        let grace_deadline = started + settings.shutdown.grace_period();
        state.health.start_draining();
        tracing::info!(
            open_streams = state.hub.open_connections(),
            drain_delay_ms = settings.shutdown.drain_delay_ms,
            drain_window_ms = settings.shutdown.drain_window_ms,
            "shutdown: readiness off, draining"
        );
        tokio::time::sleep(settings.shutdown.drain_delay()).await;

        control.stop_accepting.cancel();
        let _ = accept_task.await;
        control.close_gracefully.cancel();
        connections.close();
        tokio::select! {
            _ = state.hub.close_all_spread(settings.shutdown.drain_window()) => {}
            _ = tokio::time::sleep_until(grace_deadline) => {}
        }
        if tokio::time::timeout_at(grace_deadline, connections.wait()).await.is_err() {
            tracing::warn!(remaining = connections.len(), "grace period over: cutting remaining connections");
            control.cut_all.cancel();
            connections.wait().await;
        }
        keepalive_task.abort();
        if let Some(task) = metrics_task {
            task.abort();
        }
        redis_cancel.cancel();
        redis_tasks.wait().await;
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "shutdown complete");
        Ok(())
    }
}
