//! Enrichment against the simulator: names instead of ids, field-level differences, bursts
//! within the rate budget, injected failures, deleted items and duplicate deliveries.

mod common;

use b24_activity::simulator::{Changer, SimPortal};
use common::{TestApp, update_event};
use serde_json::{Value, json};

fn order_fields() -> Value {
    json!({"title": "Invoice for ACME", "stageId": "DT1220_30:NEW", "categoryId": 30,
        "opportunity": 100, "currencyId": "USD", "assignedById": 1})
}

async fn portal_with_orders(app: &TestApp) -> SimPortal {
    let portal = app.installed_portal().await;
    portal.add_type(1220, "Orders");
    portal.add_user(1, "Ivan", "Petrov");
    portal.add_user(7, "Maria", "Sokolova");
    portal.add_stage(1220, 30, "DT1220_30:NEW", "New");
    portal.add_stage(1220, 30, "DT1220_30:WON", "Won");
    portal
}

fn change<'a>(entry: &'a b24_activity::store::ActivityEntry, field: &str) -> Option<&'a Value> {
    entry
        .changes
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == field)
}

#[tokio::test]
async fn item_type_and_user_names_appear_in_the_log() {
    let app = TestApp::spawn().await;
    let portal = portal_with_orders(&app).await;

    portal
        .create_item(1220, order_fields(), Changer::User(1))
        .await
        .unwrap();
    let entries = app.wait_for_log(&portal, 1).await;

    let entry = &entries[0];
    assert_eq!(entry.item_title.as_deref(), Some("Invoice for ACME"));
    assert_eq!(entry.type_title.as_deref(), Some("Orders"));
    assert_eq!(entry.user_name.as_deref(), Some("Ivan Petrov"));
    assert_eq!(
        change(entry, "stageId").unwrap()["new"],
        "New",
        "a new item starts from its values"
    );

    let page = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    for text in ["Invoice for ACME", "Orders", "Ivan Petrov"] {
        assert!(page.body.contains(text), "page shows {text}");
    }
}

#[tokio::test]
async fn two_updates_show_the_old_and_new_values_of_stage_and_amount() {
    let app = TestApp::spawn().await;
    let portal = portal_with_orders(&app).await;

    let (id, _) = portal
        .create_item(1220, order_fields(), Changer::User(1))
        .await
        .unwrap();
    app.wait_for_log(&portal, 1).await;
    portal
        .update_item(
            1220,
            id,
            json!({"stageId": "DT1220_30:WON"}),
            Changer::User(7),
        )
        .await
        .unwrap();
    app.wait_for_log(&portal, 2).await;
    portal
        .update_item(1220, id, json!({"opportunity": 250}), Changer::User(7))
        .await
        .unwrap();
    let entries = app.wait_for_log(&portal, 3).await;

    let (amount, stage) = (&entries[0], &entries[1]);
    let stage_change = change(stage, "stageId").expect("stage change recorded");
    assert_eq!(
        (stage_change["old"].as_str(), stage_change["new"].as_str()),
        (Some("New"), Some("Won"))
    );
    assert_eq!(stage.user_name.as_deref(), Some("Maria Sokolova"));
    let amount_change = change(amount, "opportunity").expect("amount change recorded");
    assert_eq!(
        (amount_change["old"].as_str(), amount_change["new"].as_str()),
        (Some("100"), Some("250"))
    );
    assert_eq!(
        amount.changes.as_array().unwrap().len(),
        1,
        "only what changed: {:?}",
        amount.changes
    );

    let page = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert!(
        page.body.contains("New</span> → <span class=\"new\">Won"),
        "stage shown by name"
    );
}

#[tokio::test]
async fn custom_fields_are_compared_too() {
    let app = TestApp::spawn().await;
    let portal = portal_with_orders(&app).await;
    let mut fields = order_fields();
    fields["ufCrm5_Color"] = json!("red");

    let (id, _) = portal
        .create_item(1220, fields, Changer::User(1))
        .await
        .unwrap();
    app.wait_for_log(&portal, 1).await;
    portal
        .update_item(1220, id, json!({"ufCrm5_Color": "blue"}), Changer::Robot)
        .await
        .unwrap();
    let entries = app.wait_for_log(&portal, 2).await;

    let color = change(&entries[0], "ufCrm5_Color").expect("custom field change");
    assert_eq!(
        (color["old"].as_str(), color["new"].as_str()),
        (Some("red"), Some("blue"))
    );
    assert_eq!(entries[0].user_id, None, "a robot change names no user");
}

#[tokio::test]
async fn a_burst_over_forty_items_is_fetched_in_few_requests() {
    let app = TestApp::spawn().await;
    let portal = portal_with_orders(&app).await;
    let mut ids = Vec::new();
    for n in 0..40 {
        let fields =
            json!({"title": format!("Item {n}"), "stageId": "DT1220_30:NEW", "categoryId": 30});
        ids.push(
            portal
                .create_item(1220, fields, Changer::User(1))
                .await
                .unwrap()
                .0,
        );
    }
    app.wait_for_log(&portal, 40).await;
    let batches_before = portal.rest_calls("batch");
    let gets_before = portal.sub_calls("crm.item.get");

    // 200 events: five rounds over the forty items, each round by another user.
    for round in 0..5u64 {
        for id in &ids {
            let deliveries = portal
                .send_event(
                    "ONCRMDYNAMICITEMUPDATE",
                    1220,
                    *id,
                    Changer::User(round + 1),
                )
                .await
                .unwrap();
            assert_eq!(deliveries[0].status, Some(200));
        }
    }
    let entries = app.wait_for_log(&portal, 240).await;

    let requests = portal.rest_calls("batch") - batches_before;
    eprintln!("burst of 200 events: {requests} batch requests");
    assert!(
        requests <= 20,
        "{requests} REST requests for a burst of 200 events"
    );
    assert!(
        portal.sub_calls("crm.item.get") - gets_before >= 40,
        "every item was fetched"
    );
    assert_eq!(
        portal.rate_limited_count(),
        0,
        "never over the portal's budget"
    );
    assert_eq!(entries.len(), 240);
    for id in &ids {
        let newest = entries.iter().find(|e| e.item_id == *id as i64).unwrap();
        assert!(
            newest.item_title.as_deref().unwrap().starts_with("Item "),
            "item {id} enriched"
        );
    }
}

#[tokio::test]
async fn items_are_enriched_even_when_the_portal_answers_503() {
    let app = TestApp::spawn().await;
    let portal = portal_with_orders(&app).await;
    portal.fail_next("batch", 3, 503, "QUERY_LIMIT_EXCEEDED");

    for n in 0..5 {
        portal
            .create_item(
                1220,
                json!({"title": format!("Busy {n}")}),
                Changer::User(1),
            )
            .await
            .unwrap();
    }
    let entries = app.wait_for_log(&portal, 5).await;

    assert!(entries.iter().all(|e| {
        e.item_title
            .as_deref()
            .is_some_and(|t| t.starts_with("Busy"))
    }));
    assert!(
        portal.rest_calls("batch") >= 4,
        "the failed requests were retried"
    );
}

#[tokio::test]
async fn a_deleted_item_still_gets_its_entries() {
    let app = TestApp::spawn().await;
    let portal = portal_with_orders(&app).await;
    let (id, _) = portal
        .create_item(1220, order_fields(), Changer::User(1))
        .await
        .unwrap();
    app.wait_for_log(&portal, 1).await;

    portal
        .delete_item(1220, id, Changer::User(7))
        .await
        .unwrap();
    let entries = app.wait_for_log(&portal, 2).await;
    assert_eq!(
        (entries[0].action.as_str(), entries[0].outcome.as_str()),
        ("delete", "deleted")
    );
    assert_eq!(
        entries[0].item_title.as_deref(),
        Some("Invoice for ACME"),
        "title from the last snapshot"
    );

    // An update that arrives after the item is gone: fetched, NOT_FOUND, still an entry.
    portal
        .send_event("ONCRMDYNAMICITEMUPDATE", 1220, id, Changer::User(1))
        .await
        .unwrap();
    let entries = app.wait_for_log(&portal, 3).await;
    assert_eq!(
        (entries[0].action.as_str(), entries[0].outcome.as_str()),
        ("update", "deleted")
    );
}

#[tokio::test]
async fn a_duplicate_delivery_makes_one_entry() {
    let app = TestApp::spawn().await;
    let portal = portal_with_orders(&app).await;
    let (id, _) = portal
        .create_item(1220, order_fields(), Changer::User(1))
        .await
        .unwrap();
    app.wait_for_log(&portal, 1).await;

    let body = update_event(
        &portal.member_id(),
        &portal.application_token().unwrap(),
        1220,
        id,
        1_800_000_000,
    );
    for _ in 0..2 {
        let (status, reason) = app.post_event(body.clone()).await;
        assert_eq!(status, 200, "{reason}");
    }
    let entries = app.wait_for_log(&portal, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let id = app.stored_portal(&portal).await.unwrap().id;
    assert_eq!(
        app.state
            .store
            .recent_activity(id, None, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(entries.iter().filter(|e| e.action == "update").count(), 1);
}
