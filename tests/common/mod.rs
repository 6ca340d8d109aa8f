//! The test harness: the real app on port 0 with a fresh database, and the portal simulator,
//! talking to each other over HTTP as a deployment and a portal would.
//!
//! The database is SQLite in a temporary folder, or with `TEST_DATABASE=postgres` a database
//! of its own on the PostgreSQL server at `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), created for the test and dropped after it.

#![allow(dead_code)]

pub mod instance;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use b24_activity::app::{self, AppState};
use b24_activity::config::Settings;
use b24_activity::simulator::{AppRegistration, SimPortal, Simulator, SimulatorConfig};
use b24_activity::store::{ActivityEntry, Portal};
use sqlx::{Connection, Executor};
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
    /// The PostgreSQL database made for this app, dropped with the last holder.
    database: Option<Arc<TestDatabase>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(SimulatorConfig::default()).await
    }

    /// Starts the app on a fresh database of the backend `TEST_DATABASE` names.
    pub async fn spawn_with(config: SimulatorConfig) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        match TestBackend::from_env() {
            TestBackend::Sqlite => {
                let database_url = format!("sqlite://{}/app.db", dir.path().display());
                TestApp::spawn_on(config, &database_url, dir).await
            }
            TestBackend::Postgres => {
                let database = Arc::new(TestDatabase::create().await);
                let mut app = TestApp::spawn_on(config, &database.url, dir).await;
                app.database = Some(database);
                app
            }
        }
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
        // PostgreSQL takes its key from TOKEN_KEY only, as every instance must share it.
        let token_key = (!database_url.starts_with("sqlite:"))
            .then(|| b24_activity::crypto::TokenKey::generate().to_hex());
        let settings = Settings::from_lookup(|name| match name {
            "DATABASE_URL" => Some(database_url.to_owned()),
            "PUBLIC_URL" => Some(base.clone()),
            "B24_CLIENT_ID" => Some(config.client_id.clone()),
            "B24_CLIENT_SECRET" => Some(config.client_secret.clone()),
            "B24_OAUTH_SERVERS" => Some(sim.oauth_base()),
            "B24_ALLOW_HTTP" => Some("true".to_owned()),
            "BX24_SCRIPT_URL" => Some(sim.bx24_script_url()),
            "TOKEN_KEY_FILE" => Some(key_file.display().to_string()),
            "TOKEN_KEY" => token_key.clone(),
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
            database: None,
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
        let mut app =
            TestApp::start(self.sim.clone(), settings, listener, self.base.clone(), dir).await;
        app.database = self.database.take();
        app
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

/// The database the suite runs on, from `TEST_DATABASE` (`sqlite`, the default, or `postgres`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

impl TestBackend {
    pub fn from_env() -> TestBackend {
        match std::env::var("TEST_DATABASE").unwrap_or_default().trim() {
            "" | "sqlite" => TestBackend::Sqlite,
            "postgres" | "postgresql" => TestBackend::Postgres,
            other => panic!("TEST_DATABASE={other}: use sqlite or postgres"),
        }
    }
}

/// An empty database of the backend `TEST_DATABASE` names, for tests that open stores of
/// their own; removed when dropped.
pub struct EmptyDatabase {
    pub url: String,
    _dir: tempfile::TempDir,
    _postgres: Option<TestDatabase>,
}

impl EmptyDatabase {
    pub async fn create() -> EmptyDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        match TestBackend::from_env() {
            TestBackend::Sqlite => EmptyDatabase {
                url: format!("sqlite://{}/app.db", dir.path().display()),
                _dir: dir,
                _postgres: None,
            },
            TestBackend::Postgres => {
                let database = TestDatabase::create().await;
                EmptyDatabase {
                    url: database.url.clone(),
                    _dir: dir,
                    _postgres: Some(database),
                }
            }
        }
    }
}

/// Prefix of the databases tests create, so that leftovers are recognised.
const TEST_DATABASE_PREFIX: &str = "b24_test_";
/// A leftover this old belongs to no running test (a killed run) and is dropped, unless
/// something is connected to it.
const LEFTOVER_AGE_SECS: u64 = 3600;

/// A PostgreSQL database of one test, dropped when the value is.
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates an empty database on the server at `TEST_POSTGRES_URL`. Without a server the
    /// test binary ends here, successfully, after saying so; under CI (`CI=true`) that is a
    /// failure instead.
    pub async fn create() -> TestDatabase {
        let admin_url = std::env::var("TEST_POSTGRES_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(conn) => conn,
            Err(err) => skip_without_postgres(&admin_url, &err),
        };
        drop_leftovers(&mut admin).await;

        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let random = &b24_activity::crypto::TokenKey::generate().to_hex()[..12];
        let name = format!("{TEST_DATABASE_PREFIX}{created}_{random}");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let _ = admin.close().await;

        let mut url = url::Url::parse(&admin_url).expect("TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        TestDatabase {
            url: url.to_string(),
            name,
            admin_url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on from within; a
        // thread with a runtime of its own does the round trip. FORCE ends the connections
        // the app's pool still holds.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await?;
                admin.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: test database {} was not dropped: {dropped:?}",
                self.name
            );
        }
    }
}

/// Ends the test binary successfully with one line on why, unless CI demands PostgreSQL.
fn skip_without_postgres(admin_url: &str, err: &sqlx::Error) -> ! {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "TEST_DATABASE=postgres under CI, but PostgreSQL at {admin_url} is unreachable: {err}"
        );
    }
    // Several tests may get here at once: one line, then the exit. The line goes straight to
    // stderr, past the test harness's capture.
    static SKIPPING: Mutex<()> = Mutex::new(());
    let _once = SKIPPING.lock();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {}: TEST_DATABASE=postgres, but PostgreSQL at {admin_url} is unreachable ({err}); \
         start it or set TEST_POSTGRES_URL",
        module_path!().split("::").next().unwrap_or_default()
    );
    std::process::exit(0);
}

/// Drops test databases left by killed runs, once per test binary. Only old ones, and without
/// FORCE: a fresh or connected one may belong to a run going on beside this one.
async fn drop_leftovers(admin: &mut sqlx::PgConnection) {
    static SWEPT: OnceLock<()> = OnceLock::new();
    if SWEPT.set(()).is_err() {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'b24\\_test\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    for name in names {
        let created = name
            .strip_prefix(TEST_DATABASE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|c| c + LEFTOVER_AGE_SECS < now) {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name}"
                )))
                .await;
        }
    }
}

/// Every row of every table of the PostgreSQL database at `url` as text, bytes shown as
/// themselves where printable: what a file scan of SQLite sees.
pub async fn postgres_contents(url: &str) -> Vec<u8> {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    conn.execute("SET bytea_output = 'escape'")
        .await
        .expect("bytea as text");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list tables");
    let mut text = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(t AS TEXT) FROM {table} AS t"
        )))
        .fetch_all(&mut conn)
        .await
        .expect("dump table");
        for row in rows {
            text.push_str(&row);
            text.push('\n');
        }
    }
    let _ = conn.close().await;
    text.into_bytes()
}
