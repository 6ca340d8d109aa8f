//! Every log line of a full lifecycle, at every level of every crate, is free of tokens and
//! secrets. Its own test binary, so that it can own the global log subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use b24_activity::simulator::{Changer, SimulatorConfig};
use common::{TestApp, update_event};
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_full_lifecycle_logs_no_token_or_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let config = SimulatorConfig {
        client_secret: "client-secret-7f3a9c".into(),
        ..Default::default()
    };
    let app = TestApp::spawn_with(config.clone()).await;
    let portal = app.sim.add_portal().await.unwrap();
    let mut tokens = Vec::new();

    // Install; the stored chain holds the installer's pair, then the install event's.
    let answer = portal.open_installer(1).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let id = app.stored_portal(&portal).await.unwrap().id;
    tokens.extend(chain_tokens(&app, id).await);
    portal.finish_install().await.unwrap();
    tokens.extend(chain_tokens(&app, id).await);
    tokens.push(portal.application_token().unwrap());

    // Events from a user and a robot, a refused one, the log page, an expiry and a refresh.
    portal
        .create_item(1220, json!({"title": "t"}), Changer::User(1))
        .await
        .unwrap();
    portal
        .create_item(1220, json!({"title": "u"}), Changer::Robot)
        .await
        .unwrap();
    let (status, _) = app
        .post_event(update_event(
            &portal.member_id(),
            "wrong-token-1234",
            1220,
            1,
            1,
        ))
        .await;
    assert_eq!(status, 403);
    let viewer = portal.frame(2, "DEFAULT", json!({}));
    tokens.extend([viewer.auth_id.clone(), viewer.refresh_id.clone()]);
    assert_eq!(
        portal
            .post_frame(&format!("{}app", app.base), &viewer)
            .await
            .unwrap()
            .status,
        200
    );

    portal.expire_access_tokens();
    app.state
        .portals
        .call(id, "event.get", json!({}))
        .await
        .unwrap();
    tokens.extend(chain_tokens(&app, id).await);

    portal.uninstall(true).await.unwrap();
    app.stop().await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.lines().count() > 20,
        "the lifecycle was logged at all:\n{logs}"
    );
    assert!(logs.contains(&portal.member_id()), "lines name the portal");
    for token in &tokens {
        assert!(token.len() >= 16, "a real token: {token}");
        assert!(!logs.contains(token.as_str()), "a token reached the log");
    }
    assert!(
        !logs.contains(&config.client_secret),
        "the client secret reached the log"
    );
    assert!(
        !logs.contains("auth="),
        "a URL or body with auth= reached the log"
    );
}

async fn chain_tokens(app: &TestApp, id: b24_activity::store::PortalId) -> Vec<String> {
    let chain = app.state.store.load_chain(id).await.unwrap().unwrap();
    [chain.access_token, chain.refresh_token]
        .into_iter()
        .map(|t| t.unwrap().expose().to_owned())
        .collect()
}
