//! The application: shared state, the router every area contributes to, and serving.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::config::Settings;
use crate::crypto::{Signer, TokenCipher, TokenKey};
use crate::enrich::Wake;
use crate::live::Live;
use crate::platform::budget::RateBudget;
use crate::platform::oauth::OAuthServers;
use crate::platform::portal::PortalClient;
use crate::platform::rest;
use crate::store::{Backend, Store};
use crate::verify::VerifiedTokens;
use crate::{enrich, install, intake, ui};

/// Everything a handler may use, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub http: reqwest::Client,
    pub oauth: OAuthServers,
    /// REST on behalf of a portal, with its stored chain.
    pub portals: PortalClient,
    pub signer: Signer,
    /// Wakes the enrichment worker when intake stored an event.
    pub wake: Wake,
    /// Tells open pages that their portal's log has new entries.
    pub live: Live,
    /// Frame tokens a trusted OAuth server vouched for.
    pub verified: VerifiedTokens,
    /// Flips when the instance shuts down, ending background work and open streams.
    pub stopping: Stopping,
}

/// A shutdown flag every task can watch.
#[derive(Clone)]
pub struct Stopping(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Stopping {
    fn default() -> Stopping {
        Stopping(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Stopping {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.subscribe()
    }
}

impl AppState {
    /// Loads the key, connects to the database and applies pending migrations.
    pub async fn build(settings: Settings) -> anyhow::Result<AppState> {
        let key = load_token_key(&settings)?;
        let store = Store::connect(&settings.database_url, TokenCipher::new(&key)).await?;
        store.migrate().await.context("applying migrations")?;

        let http = rest::http_client();
        let oauth = OAuthServers::new(
            settings.oauth_servers.clone(),
            settings.client_id.clone(),
            settings.client_secret.clone(),
        );
        let live = Live::connect(&settings.database_url).await?;
        let (rate, burst) = (settings.rest_rate_per_second, settings.rest_rate_burst);
        let budget = match store.backend() {
            Backend::Sqlite => RateBudget::new(rate, burst),
            Backend::Postgres => RateBudget::shared(store.clone(), rate, burst),
        };
        let portals = PortalClient::new(
            store.clone(),
            http.clone(),
            oauth.clone(),
            budget,
            settings.allow_http,
        );
        Ok(AppState {
            settings: Arc::new(settings),
            store,
            http,
            oauth,
            portals,
            signer: Signer::new(&key),
            wake: Wake::default(),
            live,
            verified: VerifiedTokens::default(),
            stopping: Stopping::default(),
        })
    }
}

/// The operator's key from `TOKEN_KEY`, or the key file (created on first run).
pub fn load_token_key(settings: &Settings) -> anyhow::Result<TokenKey> {
    if let Some(text) = &settings.token_key {
        return TokenKey::parse(text.expose()).context("setting TOKEN_KEY: malformed");
    }
    if !settings.database_url.starts_with("sqlite:") {
        anyhow::bail!(
            "setting TOKEN_KEY: required with PostgreSQL, and the same on every instance"
        );
    }
    let (key, created) = TokenKey::load_or_create(&settings.token_key_file)?;
    if created {
        tracing::warn!(
            "created a new token key in {}: back it up; without it stored portal tokens cannot be read",
            settings.token_key_file.display()
        );
    }
    Ok(key)
}

/// The whole HTTP surface of the app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .merge(install::router())
        .merge(intake::router())
        .merge(ui::router())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    // The path only: query strings may carry frame data.
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = request.uri().path(),
                        request_id = id,
                        portal = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(
                    |response: &axum::response::Response, latency: Duration, _: &Span| {
                        tracing::info!(
                            status = response.status().as_u16(),
                            ms = latency.as_millis() as u64,
                            "answered"
                        );
                    },
                ),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(err) => {
            tracing::error!("health check: database unreachable: {err:#}");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

/// Serves until `shutdown` resolves, with the background work running beside; then lets
/// requests in flight finish and stops the background work.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let background = spawn_background(&state, state.stopping.subscribe());

    // Streams that never end by themselves (live updates) watch the same flag, so the
    // graceful shutdown does not wait for them.
    let stopping = state.stopping.clone();
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.stop();
        })
        .await;

    for task in background {
        let _ = task.await;
    }
    served.context("HTTP server failed")
}

/// Starts the background work of a serving instance; it ends when `stop` flips to true.
pub fn spawn_background(
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(maintenance(state.clone(), stop.clone())),
        tokio::spawn(enrich::run_worker(state.clone(), stop)),
    ]
}

/// Once an hour: refreshes the chains of portals idle for `IDLE_REFRESH_DAYS` (a refresh only
/// where one is due, never a blanket schedule), deletes what removed portals left past
/// `REMOVED_RETENTION_DAYS`, and forgets events turned into entries a week ago.
async fn maintenance(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        match state
            .portals
            .refresh_idle_portals(state.settings.idle_refresh_after)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(portals = n, "refreshed idle token chains"),
            Err(err) => tracing::warn!("idle chain check failed: {err:#}"),
        }
        let now = crate::store::now();
        let retention = state.settings.removed_retention.as_secs() as i64;
        match state.store.purge_removed_portals(now - retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(portals = n, "deleted the data of long-removed portals"),
            Err(err) => tracing::warn!("removed portal clean-up failed: {err:#}"),
        }
        if let Err(err) = state.store.prune_done_events(now - 7 * 86_400).await {
            tracing::warn!("event clean-up failed: {err:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once `stop` flips to true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Resolves on Ctrl-C (or SIGTERM on Unix).
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

/// Records the portal on the request's span so every later line names it.
pub fn record_portal(member_id: &str) {
    Span::current().record("portal", member_id);
}
