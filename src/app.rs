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
use crate::platform::oauth::OAuthServers;
use crate::platform::rest;
use crate::store::Store;
use crate::{install, intake, ui};

/// Everything a handler may use, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub http: reqwest::Client,
    pub oauth: OAuthServers,
    pub signer: Signer,
}

impl AppState {
    /// Loads the key, connects to the database and applies pending migrations.
    pub async fn build(settings: Settings) -> anyhow::Result<AppState> {
        let key = load_token_key(&settings)?;
        let store = Store::connect(&settings.database_url, TokenCipher::new(&key)).await?;
        store.migrate().await.context("applying migrations")?;

        Ok(AppState {
            oauth: OAuthServers::new(settings.oauth_servers.clone(), settings.client_id.clone()),
            settings: Arc::new(settings),
            store,
            http: rest::http_client(),
            signer: Signer::new(&key),
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

/// Serves until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed")
}

/// Records the portal on the request's span so every later line names it.
pub fn record_portal(member_id: &str) {
    Span::current().record("portal", member_id);
}
