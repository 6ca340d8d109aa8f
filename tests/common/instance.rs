//! A second instance of the app beside a `TestApp`, as behind a load balancer.

use std::time::Duration;

use b24_activity::app::{self, AppState};
use b24_activity::config::Settings;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::TestApp;

/// Another instance of the app beside a `TestApp`: the same settings, database, key and
/// simulator, its own address, process state and background work.
pub struct Instance {
    pub state: AppState,
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Instance {
    pub async fn beside(app: &TestApp) -> Instance {
        Instance::beside_with(app, |_| {}).await
    }

    /// Like `beside`, with settings changed by `adjust`.
    pub async fn beside_with(app: &TestApp, adjust: impl FnOnce(&mut Settings)) -> Instance {
        let mut settings = (*app.state.settings).clone();
        adjust(&mut settings);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/", listener.local_addr().unwrap());

        let state = AppState::build(settings).await.expect("second instance");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Instance {
            state,
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub async fn post_event(&self, body: String) -> u16 {
        self.http
            .post(format!("{}events", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("events endpoint answers")
            .status()
            .as_u16()
    }

    /// Stops serving and its background work, and closes its connections.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.server
            .take()
            .expect("running")
            .await
            .expect("server task")
            .expect("server stops cleanly");
        self.state.store.close().await;
    }
}
