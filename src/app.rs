//! Wiring: one configuration in, a router and its worker out.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;

use crate::auth::login::Login;
use crate::auth::{Admission, Verifier};
use crate::clock::Clock;
use crate::config::Config;
use crate::lifecycle::{self, Lifecycle, Work};
use crate::store::Store;
use crate::targets::Registry;
use crate::web::{self, AppState, AppStateInner};
use crate::workers::{Notifier, Worker};

/// Several dependencies bring both rustls crypto providers; the process picks one, once.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A broker ready to serve: its state, its router and the worker that applies and undoes.
pub struct Broker {
    pub state: AppState,
    pub worker: Arc<Worker>,
    /// Delivers notifications; None when none are configured.
    pub notifier: Option<Arc<Notifier>>,
    queue: Option<mpsc::UnboundedReceiver<Work>>,
}

impl Broker {
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Broker> {
        install_crypto();
        config.validate()?;
        let store = Store::connect_with(&config.database_url, config.database_connections.get())
            .await
            .with_context(|| "opening the database")?;
        Self::with_store(config, clock, store).await
    }

    pub async fn with_store(config: Config, clock: Clock, store: Store) -> anyhow::Result<Broker> {
        let targets = Registry::connect(&config.targets).await?;
        Self::with_targets(config, clock, store, targets).await
    }

    /// A broker whose targets are already built: how tests put a double behind the target
    /// interface.
    pub async fn with_targets(
        config: Config,
        clock: Clock,
        store: Store,
        targets: Registry,
    ) -> anyhow::Result<Broker> {
        install_crypto();
        let verifier = Verifier::new(
            &config.oidc.issuer,
            &config.oidc.client_id,
            &config.oidc.groups_claim,
            clock.clone(),
        )?
        .admitting(Admission {
            allowed_domains: config.oidc.allowed_domains.clone(),
            required_groups: config.oidc.required_groups.clone(),
        });
        // An endpoint whose URL or secret was not read (a configuration built without
        // `Config::load`) would fail every try for a day: refuse to start instead.
        for endpoint in &config.notifications {
            anyhow::ensure!(
                endpoint.endpoint.is_some()
                    && (endpoint.kind == crate::config::NotificationKind::Slack
                        || endpoint.secret.is_some()),
                "notifications {}: its URL or secret was not loaded",
                endpoint.name
            );
        }
        let (work, queue) = lifecycle::queue();
        let lifecycle = Lifecycle::with_limits(
            store.clone(),
            clock.clone(),
            targets,
            config.roles.clone(),
            work,
            config.limits,
        )
        .announcing(lifecycle::Announcer::of(&config));
        let worker = Worker::new(lifecycle.clone(), config.limits.applies_at_once.get());
        let notifier = Notifier::new(lifecycle.clone(), &config.notifications);
        let callback = format!(
            "{}/auth/callback",
            config.public_url.as_str().trim_end_matches('/')
        );
        let login = Login::new(&callback, config.oidc.client_secret.clone())?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        crate::metrics::follow(metrics.clone(), store.clone(), lifecycle.subscribe());
        let login_key = axum_extra::extract::cookie::Key::from(
            &store
                .shared_key("login-cookie")
                .await
                .context("reading the sign-in cookie key")?,
        );
        let state = AppState::new(AppStateInner {
            login_key,
            metrics,
            secure_cookies: config.public_url.scheme() == "https",
            config: Arc::new(config),
            store,
            clock,
            verifier: Arc::new(verifier),
            login: Arc::new(login),
            lifecycle,
        });
        Ok(Broker {
            state,
            worker,
            notifier,
            queue: Some(queue),
        })
    }

    pub fn router(&self) -> Router {
        web::router(self.state.clone())
    }

    /// `GET /metrics` alone: what `serve` answers on `metrics_listen`, and `dev` beside the rest.
    pub fn metrics_router(&self) -> Router {
        Router::new()
            .route("/metrics", axum::routing::get(crate::metrics::endpoint))
            .with_state(self.state.clone())
    }

    /// Starts the worker; it first finishes whatever an earlier process left in flight.
    pub fn start_worker(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        let queue = self.queue.take()?;
        // Chains audit events a stopped replica or a failed pass left in the journal
        // (src/store/journal.rs).
        crate::store::spawn_chaining(self.state.store.clone());
        // Verifies the audit chain and logs its head every few minutes (src/audit/checkpoint.rs).
        crate::audit::checkpoint::spawn(self.state.store.clone(), self.state.clock.clone());
        if let Some(notifier) = &self.notifier {
            tokio::spawn(notifier.clone().run());
        }
        // Finds breakglass on the targets that the broker did not make (src/workers/detect.rs).
        let detector = crate::workers::detect::Detector::announcing(
            self.state.store.clone(),
            self.state.clock.clone(),
            self.state.lifecycle.targets.clone(),
            self.state.lifecycle.announcer(),
            self.notifier.clone(),
        );
        tokio::spawn(detector.run());
        // Reads Cloud Audit Logs where audit_logs = true (src/workers/audit_logs.rs).
        let audit_logs = crate::workers::audit_logs::AuditLogReader::new(
            self.state.store.clone(),
            self.state.clock.clone(),
            self.state.lifecycle.targets.clone(),
            self.state.lifecycle.announcer(),
            self.notifier.clone(),
        );
        if audit_logs.has_work() {
            tokio::spawn(audit_logs.run());
        }
        Some(tokio::spawn(self.worker.clone().run(queue)))
    }
}

/// How long a client may take to send a request's headers before its connection is dropped:
/// a connection that never finishes them must not be held open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 4096;
/// How long in-flight requests get to finish after the process is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` until the process is asked to stop.
pub async fn serve(listener: TcpListener, router: Router) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Telling HTTP/1 from HTTP/2 waits for the client's first bytes, and hyper's header
            // timeout starts only after them: a client that connects and says nothing must not
            // hold a connection (and its place among the few thousand) for ever.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                drop(permit);
                return;
            }
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            // A client that goes away mid-request is no error of ours.
            let _ = watcher.watch(connection).await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; stopping anyway");
    }
    Ok(())
}

/// Ctrl-C or SIGTERM (what container runtimes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
