//! Intake under load: events stored together stand or fall alone, and what an instance
//! remembers of a portal's token (so that a burst is not looked up event by event) never
//! stands against the database for more than moments, and never refuses what the database
//! would accept.

mod common;

use std::time::{Duration, Instant};

use b24_activity::store::{NewEvent, PortalId};
use common::instance::Instance;
use common::{TestApp, update_event};
use tokio::task::JoinSet;

#[tokio::test]
async fn an_uninstall_elsewhere_is_honoured_within_seconds_and_a_reinstall_at_once() {
    let app = TestApp::spawn().await;
    let other = Instance::beside(&app).await;
    let portal = app.installed_portal().await;
    let member = portal.member_id();
    let old_token = portal.application_token().unwrap();
    let event = |token: &str, item: u64| update_event(&member, token, 1220, item, 1);

    assert_eq!(other.post_event(event(&old_token, 1)).await, 200);

    // The platform tells the instance its handler is bound to; the other one hears nothing.
    let deliveries = portal.uninstall(false).await.unwrap();
    assert_eq!(deliveries[0].status, Some(200));
    let (status, _) = app.post_event(event(&old_token, 2)).await;
    assert_eq!(status, 410, "the instance that uninstalled refuses at once");
    let (started, mut accepted_meanwhile) = (Instant::now(), 0);
    while other.post_event(event(&old_token, 3)).await != 410 {
        accepted_meanwhile += 1;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the other instance still accepts the removed portal's events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    portal.open_installer(1).await.unwrap();
    let deliveries = portal.finish_install().await.unwrap();
    assert!(deliveries.iter().all(|d| d.status == Some(200)));
    let new_token = portal.application_token().unwrap();
    assert_ne!(new_token, old_token);
    assert_eq!(
        other.post_event(event(&new_token, 4)).await,
        200,
        "a new token is taken at once"
    );
    assert_eq!(other.post_event(event(&old_token, 5)).await, 403);

    let stored = app.stored_portal(&portal).await.unwrap();
    let events = app.state.store.count_events(stored.id).await.unwrap();
    other.stop().await;
    assert_eq!(
        events,
        2 + accepted_meanwhile,
        "every event answered 200 is stored"
    );
}

#[tokio::test]
async fn an_event_that_cannot_be_stored_costs_the_others_in_its_batch_nothing() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let id = app.stored_portal(&portal).await.unwrap().id;
    let event = |portal_id, n: i64| NewEvent {
        portal_id,
        action: "update",
        entity_type_id: 1220,
        item_id: n,
        user_id: None,
        event_ts: 1,
        dedup_key: format!("id:{n}"),
    };

    // Sent at once, so that they share transactions with the one whose portal does not exist.
    let mut stored = JoinSet::new();
    for n in 0..64 {
        let (store, portal_id) = (
            app.state.store.clone(),
            if n == 32 { PortalId(-1) } else { id },
        );
        stored.spawn(async move { (n, store.insert_event(event(portal_id, n)).await) });
    }
    while let Some(joined) = stored.join_next().await {
        let (n, result) = joined.unwrap();
        assert_eq!(result.is_ok(), n != 32, "event {n}: {result:?}");
    }
    assert_eq!(app.state.store.count_events(id).await.unwrap(), 63);
}
