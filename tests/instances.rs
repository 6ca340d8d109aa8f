//! Several instances on one database, as behind a load balancer: any instance takes any
//! request, and what they share (the log, token refresh, work leases, live updates, the
//! schema) is coordinated through the database alone.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use b24_activity::crypto::{TokenCipher, TokenKey};
use b24_activity::secret::Secret;
use b24_activity::simulator::{Changer, RateLimit, SimPortal, SimulatorConfig};
use b24_activity::store::{Installation, NewEntry, NewEvent, PortalId, Snapshot, Store};
use common::instance::Instance;
use common::{EmptyDatabase, TestApp, TestBackend, update_event};
use serde_json::json;

async fn portal_with_items(app: &TestApp, items: usize) -> (SimPortal, PortalId, Vec<u64>) {
    let portal = app.installed_portal().await;
    portal.add_type(1220, "Orders");
    portal.add_user(1, "Ivan", "Petrov");
    let mut ids = Vec::new();
    for n in 0..items {
        let (id, _) = portal
            .create_item(
                1220,
                json!({"title": format!("Order {n}")}),
                Changer::User(1),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    app.wait_for_log(&portal, items).await;
    let id = app.stored_portal(&portal).await.unwrap().id;
    (portal, id, ids)
}

fn item_event(portal: &SimPortal, item: u64, ts: u64) -> String {
    update_event(
        &portal.member_id(),
        &portal.application_token().unwrap(),
        1220,
        item,
        ts,
    )
}

fn test_installation() -> Installation {
    Installation {
        member_id: "m1".into(),
        domain: "m1.example".into(),
        client_endpoint: "https://m1.example/rest/".into(),
        server_endpoint: "https://oauth.example/rest/".into(),
        lang: "en".into(),
        access_token: Secret::new("a"),
        refresh_token: None,
        expires_in: 3600,
        application_token: None,
    }
}

fn test_event(portal: PortalId, n: i64) -> NewEvent {
    NewEvent {
        portal_id: portal,
        action: "update",
        entity_type_id: 1220,
        item_id: n,
        user_id: None,
        event_ts: n,
        dedup_key: format!("k{n}"),
    }
}

fn test_entry(event: &b24_activity::store::LeasedEvent) -> NewEntry {
    NewEntry {
        event_id: event.id,
        portal_id: event.portal_id,
        action: event.action.clone(),
        entity_type_id: event.entity_type_id,
        type_title: None,
        item_id: event.item_id,
        item_title: Some("x".into()),
        user_id: None,
        user_name: None,
        occurred_at: event.event_ts,
        changes: json!([]),
        outcome: "recorded",
    }
}

#[tokio::test]
async fn events_sent_to_either_instance_appear_once_in_the_log_both_show() {
    let first = TestApp::spawn().await;
    let second = Instance::beside(&first).await;
    let (portal, id, items) = portal_with_items(&first, 4).await;

    let mut sent = 0;
    for round in 0..10u64 {
        for (n, item) in items.iter().enumerate() {
            let body = item_event(&portal, *item, 1_700_000_000 + round * 10 + n as u64);
            let status = if sent % 2 == 0 {
                first.post_event(body).await.0
            } else {
                second.post_event(body).await
            };
            assert_eq!(status, 200);
            sent += 1;
        }
    }
    let expected = items.len() + sent;
    first.wait_for_log(&portal, expected).await;
    // Both workers idle a little longer: a double entry would show up now.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let through_first = first
        .state
        .store
        .recent_activity(id, None, 1000)
        .await
        .unwrap();
    let through_second = second
        .state
        .store
        .recent_activity(id, None, 1000)
        .await
        .unwrap();
    assert_eq!(through_first.len(), expected, "one entry per event");
    let ids = |entries: &[b24_activity::store::ActivityEntry]| -> Vec<i64> {
        entries.iter().map(|e| e.id).collect()
    };
    assert_eq!(ids(&through_first), ids(&through_second), "one log");
    let per_item = through_first.iter().fold(HashMap::new(), |mut count, e| {
        *count.entry(e.item_id).or_insert(0) += 1;
        count
    });
    assert!(
        per_item.values().all(|n| *n == 11),
        "each item: its creation and ten updates, {per_item:?}"
    );

    let frame = portal.frame(1, "DEFAULT", json!({}));
    let page = portal
        .post_frame(&format!("{}app", second.base), &frame)
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Order 3"),
        "the other instance shows the log"
    );
    second.stop().await;
}

#[tokio::test]
async fn twenty_calls_across_two_instances_after_an_expiry_cause_one_refresh() {
    let first = TestApp::spawn_with(SimulatorConfig {
        rate_limit: RateLimit {
            per_second: 100.0,
            burst: 200.0,
        },
        ..Default::default()
    })
    .await;
    let second = Instance::beside(&first).await;
    let portal = first.installed_portal().await;
    let id = first.stored_portal(&portal).await.unwrap().id;
    portal.expire_access_tokens();
    let before = first.sim.refresh_count();

    let calls: Vec<_> = (0..20)
        .map(|n| {
            let client = if n % 2 == 0 {
                first.state.portals.clone()
            } else {
                second.state.portals.clone()
            };
            tokio::spawn(async move { client.call(id, "event.get", json!({})).await })
        })
        .collect();
    for call in calls {
        let answer = call.await.expect("task");
        assert!(answer.is_ok(), "{answer:?}");
    }

    assert_eq!(
        first.sim.refresh_count() - before,
        1,
        "one refresh for one expiry, across instances"
    );
    second.stop().await;
}

#[tokio::test]
async fn events_held_by_an_instance_that_died_are_taken_over_after_its_lease() {
    let first = TestApp::spawn().await;
    let dying = Instance::beside_with(&first, |s| s.enrich_lease = Duration::from_secs(2)).await;
    let (portal, id, items) = portal_with_items(&first, 3).await;

    // The dying instance takes events the way its worker would, with its lease, and then
    // dies holding them. The survivor's worker may be quicker to some: send more until the
    // dying one holds some.
    let lease_ms = dying.state.settings.enrich_lease.as_millis() as i64;
    let (mut held, mut sent) = (Vec::new(), 0u64);
    while held.is_empty() {
        assert!(sent < 30, "the dying instance never got an event");
        for item in &items {
            let status = dying
                .post_event(item_event(&portal, *item, 1_700_000_000 + sent))
                .await;
            assert_eq!(status, 200);
            sent += 1;
        }
        held = dying
            .state
            .store
            .lease_events("dying-worker", 1000, lease_ms)
            .await
            .unwrap();
    }
    let leased_at = Instant::now();
    dying.stop().await;

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let states = event_states(&first, id).await;
    if leased_at.elapsed() < Duration::from_millis(1800) {
        assert!(
            held.iter().all(|e| states[&e.id] == "pending"),
            "nobody takes leased events before the lease runs out"
        );
    }

    let entries = first
        .wait_for_log(&portal, items.len() + sent as usize)
        .await;
    assert_eq!(
        entries.len(),
        items.len() + sent as usize,
        "nothing lost, nothing twice"
    );
    let states = event_states(&first, id).await;
    assert!(held.iter().all(|e| states[&e.id] == "done"));
}

async fn event_states(app: &TestApp, portal: PortalId) -> HashMap<i64, String> {
    app.state
        .store
        .recent_events(portal, None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.state))
        .collect()
}

#[tokio::test]
async fn new_entries_reach_the_pages_of_every_instance() {
    let first = TestApp::spawn().await;
    let second = Instance::beside(&first).await;
    let portal = first.installed_portal().await;
    let id = first.stored_portal(&portal).await.unwrap().id;
    let mut on_first = first.state.live.subscribe();
    let mut on_second = second.state.live.subscribe();

    // One event, enriched by whichever instance's worker is quicker.
    portal
        .create_item(1220, json!({"title": "Live"}), Changer::User(1))
        .await
        .unwrap();

    let news = tokio::time::timeout(Duration::from_secs(10), on_first.recv()).await;
    assert_eq!(news.expect("in time").unwrap(), id);
    match TestBackend::from_env() {
        TestBackend::Postgres => {
            let news = tokio::time::timeout(Duration::from_secs(10), on_second.recv()).await;
            assert_eq!(news.expect("in time").unwrap(), id);
        }
        TestBackend::Sqlite => {
            eprintln!("skipped the second instance: on SQLite live updates stay within one process")
        }
    }

    // An instance skips its own notice: each page hears the news once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(on_first.try_recv().is_err(), "no second notice");
    if TestBackend::from_env() == TestBackend::Postgres {
        assert!(on_second.try_recv().is_err(), "no second notice");
    }
    second.stop().await;
}

#[tokio::test]
async fn instances_migrating_at_once_apply_each_migration_once() {
    let database = EmptyDatabase::create().await;
    let cipher = TokenCipher::new(&TokenKey::generate());
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Store::connect(&database.url, cipher.clone()).await.unwrap());
    }

    let runs: Vec<_> = stores
        .iter()
        .map(|store| {
            let store = store.clone();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    let mut applied = 0;
    for run in runs {
        applied += run
            .await
            .unwrap()
            .expect("migrate succeeds beside the others");
    }

    assert_eq!(
        applied, 2,
        "each migration once, by whichever got there first"
    );
    assert_eq!(stores[0].migrate().await.unwrap(), 0);
    for store in stores {
        store.close().await;
    }
}

#[tokio::test]
async fn two_workers_never_take_the_same_event() {
    let database = EmptyDatabase::create().await;
    let cipher = TokenCipher::new(&TokenKey::generate());
    let (one, two) = (
        Store::connect(&database.url, cipher.clone()).await.unwrap(),
        Store::connect(&database.url, cipher).await.unwrap(),
    );
    one.migrate().await.unwrap();
    let portal = one
        .record_installation(&test_installation())
        .await
        .unwrap()
        .id;
    const EVENTS: i64 = 400;
    for n in 0..EVENTS {
        one.insert_event(test_event(portal, n)).await.unwrap();
    }

    // Four workers on each of two connection pools, all after the oldest events at once.
    let workers: Vec<_> = (0..8)
        .map(|n| {
            let store = if n % 2 == 0 { one.clone() } else { two.clone() };
            tokio::spawn(async move {
                let owner = format!("worker-{n}");
                let mut taken = Vec::new();
                let mut idle = 0;
                while idle < 3 {
                    let leased = store.lease_events(&owner, 7, 60_000).await.unwrap();
                    idle = if leased.is_empty() { idle + 1 } else { 0 };
                    taken.extend(leased.into_iter().map(|e| e.id));
                    tokio::task::yield_now().await;
                }
                taken
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for worker in workers {
        for id in worker.await.unwrap() {
            assert!(seen.insert(id), "event {id} taken twice");
        }
    }

    assert_eq!(seen.len() as i64, EVENTS, "every event taken once");
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_page_reading_past_its_newest_entry_misses_none_that_two_workers_write() {
    let database = EmptyDatabase::create().await;
    let cipher = TokenCipher::new(&TokenKey::generate());
    let stores = [
        Store::connect(&database.url, cipher.clone()).await.unwrap(),
        Store::connect(&database.url, cipher).await.unwrap(),
    ];
    stores[0].migrate().await.unwrap();
    let portal = stores[0]
        .record_installation(&test_installation())
        .await
        .unwrap()
        .id;
    const EVENTS: i64 = 300;
    for n in 0..EVENTS {
        stores[0].insert_event(test_event(portal, n)).await.unwrap();
    }

    // Two workers write entries a few at a time, side by side, each transaction stretched by
    // snapshots; a page polls for entries past the newest it has shown, as live updates do.
    let workers: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(n, store)| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = format!("worker-{n}");
                let fields = json!({"title": "x"});
                let mut idle = 0;
                while idle < 3 {
                    let chunk = store.lease_events(&owner, 3, 60_000).await.unwrap();
                    idle = if chunk.is_empty() { idle + 1 } else { 0 };
                    let entries: Vec<NewEntry> = chunk.iter().map(test_entry).collect();
                    let snapshots: Vec<Snapshot> = (0..20)
                        .map(|item| Snapshot {
                            portal_id: portal,
                            entity_type_id: 1220,
                            item_id: item,
                            fields: &fields,
                        })
                        .collect();
                    store
                        .record_activity(&owner, &entries, &[], &snapshots)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let page = stores[0].clone();
    let reader = tokio::spawn(async move {
        let (mut newest, mut shown, mut missed) = (0, HashSet::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        while shown.len() < EVENTS as usize && Instant::now() < deadline {
            for entry in page.recent_activity(portal, None, 10_000).await.unwrap() {
                if shown.insert(entry.id) && entry.id < newest {
                    missed.push(entry.id);
                }
            }
            newest = shown.iter().copied().max().unwrap_or(0);
        }
        missed
    });
    for worker in workers {
        worker.await.unwrap();
    }

    let missed = reader.await.unwrap();
    let written = stores[0]
        .recent_activity(portal, None, 10_000)
        .await
        .unwrap();
    assert_eq!(written.len() as i64, EVENTS, "every event became an entry");
    assert!(
        missed.is_empty(),
        "entries became visible below the newest shown: {missed:?}"
    );
}

#[tokio::test]
async fn an_item_leased_by_one_worker_waits_for_it() {
    let database = EmptyDatabase::create().await;
    let store = Store::connect(&database.url, TokenCipher::new(&TokenKey::generate()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let portal = store
        .record_installation(&test_installation())
        .await
        .unwrap()
        .id;
    let mut second = test_event(portal, 1);
    second.dedup_key = "again".into();
    store.insert_event(test_event(portal, 1)).await.unwrap();
    store.insert_event(second).await.unwrap();
    store.insert_event(test_event(portal, 2)).await.unwrap();

    let first = store.lease_events("one", 1, 60_000).await.unwrap();
    assert_eq!(first.len(), 1);
    let other = store.lease_events("two", 10, 60_000).await.unwrap();
    assert_eq!(
        other.iter().map(|e| e.item_id).collect::<Vec<_>>(),
        [2],
        "the item the first worker holds is not compared twice at once"
    );

    store
        .retry_events(&[first[0].id], "one", 0, "test")
        .await
        .unwrap();
    let later = store.lease_events("two", 10, 60_000).await.unwrap();
    assert_eq!(
        later.len(),
        2,
        "once released, both events of the item are taken together"
    );
    assert!(later.iter().all(|e| e.item_id == 1));
    store.close().await;
}

#[tokio::test]
async fn instances_share_one_rest_budget_per_portal() {
    let database = EmptyDatabase::create().await;
    let cipher = TokenCipher::new(&TokenKey::generate());
    let one = Store::connect(&database.url, cipher.clone()).await.unwrap();
    let two = Store::connect(&database.url, cipher).await.unwrap();
    one.migrate().await.unwrap();
    let portal = one
        .record_installation(&test_installation())
        .await
        .unwrap()
        .id;

    for n in 0..5 {
        let store = if n % 2 == 0 { &one } else { &two };
        assert_eq!(
            store.take_budget(portal, 0.5, 5.0).await.unwrap(),
            None,
            "request {n} fits the burst"
        );
    }
    let wait = two
        .take_budget(portal, 0.5, 5.0)
        .await
        .unwrap()
        .expect("the sixth waits, whoever asks");
    assert!(
        wait > Duration::from_millis(1000) && wait <= Duration::from_secs(2),
        "{wait:?}"
    );
    one.close().await;
    two.close().await;
}
