//! forecast-api as one application: [`ForecastApi::build`] connects the database (applying
//! migrations), makes sure an admin key exists, binds the listener and wires the event
//! publisher and the outbox dispatcher; the binary and the tests both call it. [`ForecastApi::run_until_stopped`] serves until a
//! shutdown signal, then stops taking requests, finishes the ones in flight and gives the
//! outbox a last chance to empty.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use service::log_eviction::EvictionWatch;
use service::redis_target::RedisTarget;
use service::server::{self, NoHandoff, ServerControl};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, KeyVerifier};
use crate::http;
use crate::metrics::ForecastMetrics;
use crate::outbox::Dispatcher;
use crate::publisher::{AuditHandler, EventHandler, EventPublisher, MetricsHandler, OutboxNotifier};
use crate::settings::ForecastSettings;
use crate::state::{AppState, SessionPolicy};
use crate::store::Store;
use crate::users::{Passwords, SignInLimiter};

pub struct ForecastApi {
    listener: TcpListener,
    settings: ForecastSettings,
    state: Arc<AppState>,
    dispatcher: Dispatcher,
    /// Set when a bootstrap admin key was generated at this start; shown once.
    generated_admin_key: Option<String>,
}

impl ForecastApi {
    pub async fn build(settings: ForecastSettings) -> anyhow::Result<Self> {
        Self::build_with_handlers(settings, Vec::new()).await
    }

    /// As [`ForecastApi::build`], with extra event handlers beside the standard ones.
    pub async fn build_with_handlers(
        settings: ForecastSettings,
        extra_handlers: Vec<Arc<dyn EventHandler>>,
    ) -> anyhow::Result<Self> {
        let addr = settings.listen_addr()?;
        let store = Store::connect(&settings.database).await?;
        let generated_admin_key = auth::ensure_admin_key(&store, &settings.auth.admin_key)
            .await
            .context("cannot create the bootstrap admin key")?;
        let metrics = ForecastMetrics::new();
        let notify = Arc::new(Notify::new());
        let mut handlers: Vec<Arc<dyn EventHandler>> = vec![
            Arc::new(AuditHandler),
            Arc::new(OutboxNotifier { notify: Arc::clone(&notify) }),
            Arc::new(MetricsHandler { metrics: metrics.clone() }),
        ];
        handlers.extend(extra_handlers);
        let publisher = EventPublisher::new(handlers, metrics.clone(), settings.events.handler_timeout());
        let redis = Arc::new(RedisTarget::new(
            settings.redis.endpoint(),
            settings.redis.connect_timeout(),
            metrics.redis_node.clone(),
        ));
        let eviction = Arc::new(EvictionWatch::new(metrics.log_evictable.clone()));
        let dispatcher = Dispatcher::new(
            store.clone(),
            Arc::clone(&redis),
            settings.redis.clone(),
            settings.outbox.clone(),
            metrics.clone(),
            notify,
            Arc::clone(&eviction),
        );
        let listener = server::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let state = Arc::new(AppState {
            keys: KeyVerifier::new(store.clone(), &settings.auth.admin_key),
            store,
            publisher,
            metrics,
            relay_jwt_secret: settings.auth.relay_jwt_secret.clone(),
            relay_token_ttl_secs: settings.auth.relay_token_ttl_secs,
            relay_ticket_ttl_secs: settings.auth.relay_ticket_ttl_secs,
            relay_public_url: settings.relay.public_url.clone(),
            relay_cookie_name: settings.relay.cookie_name.clone(),
            draining: AtomicBool::new(false),
            redis,
            eviction,
            session: SessionPolicy {
                cookie_name: settings.auth.session_cookie_name.clone(),
                ttl: Duration::from_secs(settings.auth.session_ttl_secs),
                always_secure: settings.auth.secure_cookies,
                open_registration: settings.auth.open_registration,
            },
            // The decoy hash for unknown users is made here, once.
            passwords: tokio::task::spawn_blocking(Passwords::new).await?,
            sign_in: SignInLimiter::new(
                settings.auth.sign_in_attempts_per_account as usize,
                settings.auth.sign_in_attempts_per_address as usize,
                Duration::from_secs(settings.auth.sign_in_window_secs),
            ),
            trusted_proxy_hops: settings.http.trusted_proxy_hops as usize,
        });
        Ok(Self { listener, settings, state, dispatcher, generated_admin_key })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The admin key generated at this start (no key configured, none in the database yet).
    pub fn take_generated_admin_key(&mut self) -> Option<String> {
        self.generated_admin_key.take()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self { listener, settings, state, dispatcher, .. } = self;
        let dispatcher_cancel = CancellationToken::new();
        let dispatcher_task = tokio::spawn(dispatcher.run(dispatcher_cancel.clone()));
        let router = http::router(
            Arc::clone(&state),
            &settings.cors.allowed_origins,
            usize::try_from(settings.http.max_body_bytes).unwrap_or(usize::MAX),
            settings.http.request_timeout(),
        );
        let control = ServerControl::default();
        let connections = TaskTracker::new();
        let accept_task = tokio::spawn(server::serve(
            listener,
            router,
            control.clone(),
            connections.clone(),
            settings.http.header_read_timeout(),
            NoHandoff,
        ));
        shutdown.await;
        state.draining.store(true, Ordering::Release);
        tracing::info!("shutdown: finishing requests in flight");
        control.stop_accepting.cancel();
        let _ = accept_task.await;
        control.close_gracefully.cancel();
        connections.close();
        let grace = settings.http.request_timeout() + Duration::from_secs(1);
        if tokio::time::timeout(grace, connections.wait()).await.is_err() {
            control.cut_all.cancel();
            connections.wait().await;
        }
        dispatcher_cancel.cancel();
        let _ = dispatcher_task.await;
        state.store.close().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}
