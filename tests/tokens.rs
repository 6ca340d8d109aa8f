//! Token chains against the simulator: refresh on expiry, one refresh however many callers,
//! restarts, revocation, a moved portal, idle portals, and no token at rest in plaintext.

mod common;

use std::time::Duration;

use b24_activity::platform::portal::CallError;
use b24_activity::simulator::{Changer, SimulatorConfig};
use b24_activity::store::{Backend, PortalId, PortalStatus};
use common::TestApp;
use serde_json::json;

async fn portal_id(app: &TestApp, portal: &b24_activity::simulator::SimPortal) -> PortalId {
    app.stored_portal(portal).await.expect("portal stored").id
}

#[tokio::test]
async fn twenty_concurrent_calls_after_an_expiry_cause_exactly_one_refresh() {
    let app = TestApp::spawn_with(SimulatorConfig {
        rate_limit: b24_activity::simulator::RateLimit {
            per_second: 100.0,
            burst: 200.0,
        },
        ..Default::default()
    })
    .await;
    let portal = app.installed_portal().await;
    let id = portal_id(&app, &portal).await;
    portal.expire_access_tokens();
    let before = app.sim.refresh_count();

    let calls = (0..20).map(|_| {
        let client = app.state.portals.clone();
        tokio::spawn(async move { client.call(id, "event.get", json!({})).await })
    });
    let results = futures_join(calls).await;

    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(
        app.sim.refresh_count() - before,
        1,
        "one refresh for one expiry"
    );
}

#[tokio::test]
async fn a_restarted_service_keeps_working_with_the_refreshed_chain() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let id = portal_id(&app, &portal).await;

    portal.expire_access_tokens();
    app.state
        .portals
        .call(id, "event.get", json!({}))
        .await
        .expect("call after refresh");
    assert_eq!(app.sim.refresh_count(), 1);

    let app = app.restart().await;
    app.state
        .portals
        .call(id, "event.get", json!({}))
        .await
        .expect("stored access token still works");
    portal.expire_access_tokens();
    app.state
        .portals
        .call(id, "event.get", json!({}))
        .await
        .expect("stored refresh token still works");
    assert_eq!(
        app.sim.refresh_count(),
        2,
        "the chain refreshed before the restart was the one kept"
    );
}

#[tokio::test]
async fn a_revoked_chain_needs_a_reinstall_and_troubles_no_other_portal() {
    let app = TestApp::spawn().await;
    let broken = app.installed_portal().await;
    let healthy = app.installed_portal().await;
    let (broken_id, healthy_id) = (
        portal_id(&app, &broken).await,
        portal_id(&app, &healthy).await,
    );

    broken.revoke_refresh_tokens();
    broken.expire_access_tokens();
    healthy.expire_access_tokens();

    let failed = app
        .state
        .portals
        .call(broken_id, "event.get", json!({}))
        .await;
    assert!(matches!(failed, Err(CallError::Refresh(_))), "{failed:?}");
    let stored = app.stored_portal(&broken).await.unwrap();
    assert_eq!(stored.status, PortalStatus::NeedsReinstall);
    assert!(
        stored
            .status_reason
            .as_deref()
            .unwrap()
            .contains("invalid_grant")
    );
    let again = app
        .state
        .portals
        .call(broken_id, "event.get", json!({}))
        .await;
    assert!(
        matches!(
            again,
            Err(CallError::PortalUnavailable(PortalStatus::NeedsReinstall))
        ),
        "no second refresh try"
    );

    app.state
        .portals
        .call(healthy_id, "event.get", json!({}))
        .await
        .expect("the other portal works");

    let page = broken.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("id=\"status-needs-reinstall\""),
        "the admin is told what to do"
    );

    let installer = broken.open_installer(1).await.unwrap();
    assert_eq!(installer.status, 200);
    broken.finish_install().await.unwrap();
    assert_eq!(
        app.stored_portal(&broken).await.unwrap().status,
        PortalStatus::Active
    );
    app.state
        .portals
        .call(broken_id, "event.get", json!({}))
        .await
        .expect("works after reinstall");
}

#[tokio::test]
async fn an_expired_payment_is_shown_as_such() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let id = portal_id(&app, &portal).await;

    portal.set_payment_required(true);
    portal.expire_access_tokens();
    assert!(
        app.state
            .portals
            .call(id, "event.get", json!({}))
            .await
            .is_err()
    );
    assert_eq!(
        app.stored_portal(&portal).await.unwrap().status,
        PortalStatus::PaymentRequired
    );

    portal.set_payment_required(false);
    let page = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert!(
        page.body.contains("id=\"status-payment-required\""),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn a_moved_portal_is_followed_with_the_same_call() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let id = portal_id(&app, &portal).await;

    let moved = portal.move_domain().unwrap();
    let answer = app
        .state
        .portals
        .call(id, "event.get", json!({}))
        .await
        .expect("call follows the move");

    assert_eq!(
        answer["result"].as_array().unwrap().len(),
        5,
        "the same method answered at the new address"
    );
    let stored = app.stored_portal(&portal).await.unwrap();
    assert_eq!(stored.domain, moved.domain());
    assert_eq!(stored.client_endpoint, moved.client_endpoint());
    assert_eq!(portal.redirected_count(), 1);
    app.state
        .portals
        .call(id, "event.get", json!({}))
        .await
        .unwrap();
    assert_eq!(
        portal.redirected_count(),
        1,
        "later calls go straight to the new address"
    );
}

#[tokio::test]
async fn only_idle_portals_get_a_refresh() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let id = portal_id(&app, &portal).await;

    let refreshed = app
        .state
        .portals
        .refresh_idle_portals(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(refreshed, 0, "a portal installed a moment ago is not idle");
    assert_eq!(app.sim.refresh_count(), 0);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refreshed = app
        .state
        .portals
        .refresh_idle_portals(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(refreshed, 1);
    assert_eq!(app.sim.refresh_count(), 1);
    let again = app
        .state
        .portals
        .refresh_idle_portals(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(again, 0, "the refresh itself counts as activity");
    app.state
        .portals
        .call(id, "event.get", json!({}))
        .await
        .expect("refreshed chain works");
}

#[tokio::test]
async fn the_database_files_hold_no_token_in_plaintext() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let id = portal_id(&app, &portal).await;
    let frame = portal.frame(1, "DEFAULT", json!({}));
    portal
        .create_item(1220, json!({"title": "x"}), Changer::User(1))
        .await
        .unwrap();
    portal.expire_access_tokens();
    app.state
        .portals
        .call(id, "event.get", json!({}))
        .await
        .unwrap();

    let application_token = portal.application_token().unwrap();
    let bytes = match app.state.store.backend() {
        Backend::Sqlite => {
            let dir = app.stop().await;
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("app.db")
                {
                    bytes.extend(std::fs::read(&path).unwrap());
                }
            }
            assert!(bytes.len() > 4096, "database files were read");
            bytes
        }
        // No files to read on a server: every row of every table, as text.
        Backend::Postgres => {
            let bytes = common::postgres_contents(&app.state.settings.database_url).await;
            app.stop().await;
            bytes
        }
    };
    assert!(
        contains(&bytes, portal.member_id().as_bytes()),
        "the scan sees plaintext data"
    );
    for token in [
        application_token.as_str(),
        frame.auth_id.as_str(),
        frame.refresh_id.as_str(),
    ] {
        assert!(
            !contains(&bytes, token.as_bytes()),
            "a token was found in the database files"
        );
    }
}

#[tokio::test]
async fn a_new_key_reseals_every_token() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let id = portal_id(&app, &portal).await;

    let new_key = b24_activity::crypto::TokenKey::generate();
    let new_cipher = b24_activity::crypto::TokenCipher::new(&new_key);
    assert_eq!(app.state.store.reseal_tokens(&new_cipher).await.unwrap(), 1);
    assert!(
        app.state.store.load_chain(id).await.is_err(),
        "the old key no longer opens the tokens"
    );

    let url = app.state.settings.database_url.clone();
    let resealed = b24_activity::store::Store::connect(&url, new_cipher)
        .await
        .unwrap();
    let chain = resealed.load_chain(id).await.unwrap().unwrap();
    assert!(chain.access_token.is_some() && chain.refresh_token.is_some());
    let stored = resealed
        .find_portal(&portal.member_id())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.application_token_matches(&resealed, &portal.application_token().unwrap()));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.expect("task"));
    }
    out
}
