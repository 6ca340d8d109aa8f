//! The test harness: the real app on port 0 with a fresh database, and the portal simulator,
//! talking to each other over HTTP as a deployment and a portal would.

#![allow(dead_code)]

use std::time::Duration;

use b24_activity::app::{self, AppState};
use b24_activity::config::Settings;
use b24_activity::simulator::{AppRegistration, SimPortal, Simulator, SimulatorConfig};
use b24_activity::store::{ActivityEntry, Portal};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct TestApp {
    pub sim: Simulator,
    pub state: AppState,
    /// The app's public base, ending in `/`.
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(SimulatorConfig::default()).await
    }

    pub async fn spawn_with(config: SimulatorConfig) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = format!("sqlite://{}/app.db", dir.path().display());
        TestApp::spawn_on(config, &database_url, dir).await
    }

    /// Starts the app on `database_url`, with a simulator configured from `config`.
    pub async fn spawn_on(
        config: SimulatorConfig,
        database_url: &str,
        dir: tempfile::TempDir,
    ) -> TestApp {
        let sim = Simulator::start(config.clone())
            .await
            .expect("simulator starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let base = format!("http://{}/", listener.local_addr().unwrap());
        sim.register_app(AppRegistration {
            install_url: format!("{base}install"),
            app_url: format!("{base}app"),
        });

        let key_file = dir.path().join("token.key");
        let settings = Settings::from_lookup(|name| match name {
            "DATABASE_URL" => Some(database_url.to_owned()),
            "PUBLIC_URL" => Some(base.clone()),
            "B24_CLIENT_ID" => Some(config.client_id.clone()),
            "B24_CLIENT_SECRET" => Some(config.client_secret.clone()),
            "B24_OAUTH_SERVERS" => Some(sim.oauth_base()),
            "B24_ALLOW_HTTP" => Some("true".to_owned()),
            "BX24_SCRIPT_URL" => Some(sim.bx24_script_url()),
            "TOKEN_KEY_FILE" => Some(key_file.display().to_string()),
            "RETRY_BASE_MS" => Some("50".to_owned()),
            _ => None,
        })
        .expect("test settings are valid");
        TestApp::start(sim, settings, listener, base, dir).await
    }

    async fn start(
        sim: Simulator,
        settings: Settings,
        listener: TcpListener,
        base: String,
        dir: tempfile::TempDir,
    ) -> TestApp {
        let state = AppState::build(settings).await.expect("app state");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));

        TestApp {
            sim,
            state,
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops the app and starts it again on the same address, database and key, as after a
    /// deployment; the simulator keeps running.
    pub async fn restart(mut self) -> TestApp {
        self.stop_server().await;
        let settings = (*self.state.settings).clone();
        let listener = TcpListener::bind(settings.public_url.socket_addrs(|| None).unwrap()[0])
            .await
            .expect("rebind app");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        TestApp::start(self.sim.clone(), settings, listener, self.base.clone(), dir).await
    }

    async fn stop_server(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
        self.state.store.close().await;
    }

    /// A new portal with the app installed and the install finished (ONAPPINSTALL delivered).
    pub async fn installed_portal(&self) -> SimPortal {
        let portal = self.sim.add_portal().await.expect("portal");
        let installer = portal.open_installer(1).await.expect("installer");
        assert_eq!(installer.status, 200, "installer: {}", installer.body);
        let deliveries = portal.finish_install().await.expect("finish install");
        assert!(
            deliveries.iter().all(|d| d.status == Some(200)),
            "ONAPPINSTALL deliveries: {deliveries:?}"
        );
        portal
    }

    pub async fn stored_portal(&self, portal: &SimPortal) -> Option<Portal> {
        self.state
            .store
            .find_portal(&portal.member_id())
            .await
            .unwrap()
    }

    /// Waits until the portal's log holds at least `count` entries and nothing waits.
    pub async fn wait_for_log(&self, portal: &SimPortal, count: usize) -> Vec<ActivityEntry> {
        let id = self.stored_portal(portal).await.expect("portal stored").id;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let entries = self
                .state
                .store
                .recent_activity(id, None, 10_000)
                .await
                .unwrap();
            let (waiting, reason) = self.state.store.pending_events(id).await.unwrap();
            if entries.len() >= count && waiting == 0 {
                return entries;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "log has {} of {count} entries, {waiting} waiting ({reason:?})",
                entries.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts a raw event body to `/events` as the platform would.
    pub async fn post_event(&self, body: impl Into<String>) -> (u16, String) {
        self.post_event_typed(body, "application/x-www-form-urlencoded")
            .await
    }

    pub async fn post_event_typed(
        &self,
        body: impl Into<String>,
        content_type: &str,
    ) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}events", self.base))
            .header("content-type", content_type)
            .body(body.into())
            .send()
            .await
            .expect("events endpoint answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Stops the server and the simulator, and hands back the folder (with the database).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
        self.sim.shutdown().await;
        self.state.store.close().await;
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

/// A wire fixture with its portal's ids swapped for `portal`'s.
pub fn fixture_for(name: &str, portal: &SimPortal) -> String {
    let path = format!("{}/tests/fixtures/wire/{name}", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    body.trim()
        .replace("a223c6b3710f85df22e9377d6c4f7553", &portal.member_id())
        .replace(
            "51856fefc120afa4b628cc82d3935cce",
            &portal.application_token().expect("installed"),
        )
}

/// An ONCRMDYNAMICITEMUPDATE body for `portal` with the given application token.
pub fn update_event(
    member_id: &str,
    application_token: &str,
    type_id: u64,
    item_id: u64,
    ts: u64,
) -> String {
    format!(
        "event=ONCRMDYNAMICITEMUPDATE&event_handler_id=5&data%5BFIELDS%5D%5BID%5D={item_id}\
         &data%5BFIELDS%5D%5BENTITY_TYPE_ID%5D={type_id}&ts={ts}&auth%5Bdomain%5D=x\
         &auth%5Bmember_id%5D={member_id}&auth%5Bapplication_token%5D={application_token}"
    )
}
