//! A fake Bitrix24 for the integration tests and the `demo` command: an OAuth server, any number
//! of portals (each a real HTTP server on its own loopback address), event delivery in the
//! platform's wire format, and a portal page that frames the app.
//!
//! The app must not know this module exists: it talks to the simulator only over HTTP, exactly
//! as to a real portal. The simulator copies the platform's unfriendly habits on purpose
//! (single-use refresh tokens, 503 rate limits, no event retries, PHP-style JSON and forms).

mod batch;
mod bindings;
mod crm;
mod events;
mod frame;
mod oauth;
mod page;
mod portal;
mod rest;
mod tokens;
mod wire;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use frame::{Frame, FrameResponse};
pub use portal::SimPortal;

use bindings::Hooks;
use crm::Crm;
use rest::{Fault, LeakyBucket};
use tokens::Tokens;

/// How the simulated platform treats the app.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// The app's client id, e.g. `local.b24activity.demo`.
    pub client_id: String,
    pub client_secret: String,
    pub access_token_ttl: Duration,
    pub rate_limit: RateLimit,
    /// Whether frame POSTs carry `APPLICATION_TOKEN` (real portals send it often, not always).
    pub send_application_token_in_frame: bool,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            client_id: "local.b24activity.demo".to_string(),
            client_secret: "simulator-secret".to_string(),
            access_token_ttl: Duration::from_secs(3600),
            rate_limit: RateLimit::default(),
            send_application_token_in_frame: true,
        }
    }
}

/// The portal's leaky bucket: drains `per_second`, holds `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 2.0,
            burst: 50.0,
        }
    }
}

/// The URLs entered in the app's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRegistration {
    pub install_url: String,
    pub app_url: String,
}

/// Who made a change: a user (the event then carries that user's access token) or a robot,
/// workflow or agent (the event carries no token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changer {
    User(u64),
    Robot,
}

/// One POST of an event to one handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub handler: String,
    pub event: String,
    /// `None`: the connection failed or the 10 s timeout passed. Never retried either way.
    pub status: Option<u16>,
}

/// An event binding as `event.get` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub event: String,
    pub handler: String,
    pub auth_type: u64,
    pub offline: bool,
}

/// A `placement.bind` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBinding {
    pub placement: String,
    pub handler: String,
    pub title: String,
}

/// The simulated platform. Cheap to clone; every clone is the same platform.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimulatorConfig,
    oauth_addr: SocketAddr,
    world: Mutex<World>,
    servers: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    http: reqwest::Client,
}

/// Everything the servers share. Guarded by a std mutex that is never held across `.await`.
pub(crate) struct World {
    pub app: Option<AppRegistration>,
    pub portals: Vec<PortalState>,
    pub tokens: Tokens,
    pub refresh_count: usize,
    /// The last octet for the next portal address, 127.0.0.N.
    next_host: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Install {
    /// Never opened the installer.
    Never,
    /// Installer opened, `installFinish` not called yet: no events are delivered.
    Pending,
    Installed,
    Removed,
}

pub(crate) struct PortalState {
    pub member_id: String,
    /// Where the portal answers now; earlier addresses redirect here.
    pub addr: SocketAddr,
    pub install: Install,
    /// The administrator who opened the installer; ONAPPINSTALL carries this user's tokens.
    pub installer: u64,
    pub application_token: Option<String>,
    pub payment_required: bool,
    pub hooks: Hooks,
    pub crm: Crm,
    pub stats: Stats,
    pub bucket: LeakyBucket,
    pub faults: HashMap<String, Fault>,
    /// What the framed app asked the portal page for (`resize`, `openPath`, ...).
    pub page_events: Vec<serde_json::Value>,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub rest_calls: HashMap<String, usize>,
    pub sub_calls: HashMap<String, usize>,
    pub total: usize,
    pub rate_limited: usize,
    pub redirected: usize,
}

impl PortalState {
    pub fn domain(&self) -> String {
        self.addr.to_string()
    }

    pub fn client_endpoint(&self) -> String {
        format!("http://{}/rest/", self.addr)
    }
}

impl Simulator {
    /// Starts the OAuth server on 127.0.0.1 with a free port.
    pub async fn start(config: SimulatorConfig) -> anyhow::Result<Simulator> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the simulated OAuth server")?;
        let oauth_addr = listener.local_addr()?;

        // Redirects stay unfollowed: the app must see the platform's 302s itself, and a test
        // posting a frame must see exactly what the app answered.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the simulator's HTTP client")?;

        let sim = Simulator {
            inner: Arc::new(Inner {
                config,
                oauth_addr,
                world: Mutex::new(World {
                    app: None,
                    portals: Vec::new(),
                    tokens: Tokens::default(),
                    refresh_count: 0,
                    next_host: 2,
                }),
                servers: Mutex::new(Vec::new()),
                stop: watch::channel(false).0,
                http,
            }),
        };

        sim.serve(listener, oauth::router(sim.clone()))?;
        Ok(sim)
    }

    /// `http://127.0.0.1:PORT/`: what the app lists as a trusted OAuth server.
    pub fn oauth_base(&self) -> String {
        format!("http://{}/", self.inner.oauth_addr)
    }

    /// `http://127.0.0.1:PORT/rest/`, the `server_endpoint` portals report.
    pub fn server_endpoint(&self) -> String {
        format!("http://{}/rest/", self.inner.oauth_addr)
    }

    /// Where the BX24.js stand-in is served.
    pub fn bx24_script_url(&self) -> String {
        format!("http://{}/api/v1/", self.inner.oauth_addr)
    }

    pub fn register_app(&self, app: AppRegistration) {
        self.world().app = Some(app);
    }

    /// A new portal, with its own server on the next free loopback address.
    pub async fn add_portal(&self) -> anyhow::Result<SimPortal> {
        let listener = self.bind_loopback()?;
        let addr = listener.local_addr()?;

        let index = {
            let mut world = self.world();
            world.portals.push(PortalState {
                member_id: wire::random_hex(16),
                addr,
                install: Install::Never,
                installer: 1,
                application_token: None,
                payment_required: false,
                hooks: Hooks::default(),
                crm: Crm::default(),
                stats: Stats::default(),
                bucket: LeakyBucket::new(self.inner.config.rate_limit),
                faults: HashMap::new(),
                page_events: Vec::new(),
            });
            world.portals.len() - 1
        };

        self.serve(listener, rest::portal_router(self.clone(), index, addr))?;
        Ok(SimPortal::new(self.clone(), index))
    }

    /// Successful refreshes over all portals.
    pub fn refresh_count(&self) -> usize {
        self.world().refresh_count
    }

    /// Stops every server of the simulator and waits (briefly) for them to finish.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let servers = std::mem::take(&mut *lock(&self.inner.servers));

        for server in servers {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    pub(crate) fn config(&self) -> &SimulatorConfig {
        &self.inner.config
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.inner.world)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// `127.0.0.1:PORT`, which the platform reports as `domain` in token answers.
    pub(crate) fn oauth_domain(&self) -> String {
        self.inner.oauth_addr.to_string()
    }

    /// Binds 127.0.0.N:0 for the next N, or 127.0.0.1 where the loopback range is not routed.
    /// Separate addresses make the portals differ by host, as real portals do.
    pub(crate) fn bind_loopback(&self) -> anyhow::Result<std::net::TcpListener> {
        let host = {
            let mut world = self.world();
            let host = world.next_host;
            world.next_host = if host >= 254 { 2 } else { host + 1 };
            host
        };

        let ip = Ipv4Addr::new(127, 0, 0, host as u8);
        std::net::TcpListener::bind((ip, 0))
            .or_else(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .context("binding a simulated portal")
    }

    /// Runs `router` on `listener` until `shutdown`.
    pub(crate) fn serve(
        &self,
        listener: std::net::TcpListener,
        router: Router,
    ) -> anyhow::Result<()> {
        // Without a runtime, tokio would panic below; `move_domain` is sync and may be called
        // from anywhere.
        tokio::runtime::Handle::try_current()
            .context("the simulator needs a running tokio runtime")?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut stop = self.inner.stop.subscribe();

        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            let served = axum::serve(listener, router).with_graceful_shutdown(stopped);
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "simulated server stopped with an error");
            }
        });

        lock(&self.inner.servers).push(server);
        Ok(())
    }
}

/// Locks a mutex, ignoring poisoning: a panicking test must not take the others down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod browser_tests;
#[cfg(test)]
mod tests;
