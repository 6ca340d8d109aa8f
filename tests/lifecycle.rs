//! The whole life of an installation, over HTTP against the portal simulator: install,
//! install again, events from users and robots, the log in the frame, uninstall, reinstall.

mod common;

use b24_activity::simulator::Changer;
use b24_activity::store::PortalStatus;
use common::{TestApp, fixture_for, update_event};
use serde_json::json;

#[tokio::test]
async fn install_binds_every_event_once_and_finishes_in_the_browser() {
    let app = TestApp::spawn().await;
    let portal = app.sim.add_portal().await.unwrap();

    let page = portal.open_installer(1).await.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("BX24.installFinish()"),
        "installer page must finish the install"
    );
    assert!(
        page.body.contains(&app.sim.bx24_script_url()),
        "page loads the configured BX24 script"
    );

    let handler = format!("{}events", app.base);
    let mut events: Vec<String> = portal
        .bindings()
        .into_iter()
        .filter(|b| b.handler == handler)
        .map(|b| b.event)
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            "ONAPPINSTALL",
            "ONAPPUNINSTALL",
            "ONCRMDYNAMICITEMADD",
            "ONCRMDYNAMICITEMDELETE",
            "ONCRMDYNAMICITEMUPDATE"
        ]
    );

    let again = portal.open_installer(1).await.unwrap();
    assert_eq!(
        again.status, 200,
        "installing twice must not fail: {}",
        again.body
    );
    assert_eq!(
        portal.bindings().len(),
        5,
        "installing twice must not double a binding"
    );
}

#[tokio::test]
async fn install_event_activates_the_portal_with_its_application_token() {
    let app = TestApp::spawn_with(b24_activity::simulator::SimulatorConfig {
        send_application_token_in_frame: false,
        ..Default::default()
    })
    .await;
    let portal = app.sim.add_portal().await.unwrap();

    portal.open_installer(1).await.unwrap();
    let stored = app
        .stored_portal(&portal)
        .await
        .expect("portal stored by the installer");
    assert_eq!(stored.status, PortalStatus::Installing);
    assert!(!stored.has_application_token());

    let deliveries = portal.finish_install().await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].event, "ONAPPINSTALL");
    assert_eq!(deliveries[0].status, Some(200));

    let stored = app.stored_portal(&portal).await.unwrap();
    assert_eq!(stored.status, PortalStatus::Active);
    let token = portal.application_token().unwrap();
    assert!(stored.application_token_matches(&app.state.store, &token));
}

#[tokio::test]
async fn an_install_event_whose_token_does_not_check_out_is_refused() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let body = fixture_for("event_onappinstall.form", &portal).replace(
        "https%3A%2F%2Foauth.bitrix.info%2Frest%2F",
        &urlencode(&app.sim.server_endpoint()),
    );

    let (status, reason) = app.post_event(body).await;
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("refused the token"), "{reason}");
}

#[tokio::test]
async fn user_and_robot_changes_reach_the_log_newest_first() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    portal.add_type(1220, "Orders");

    let (id, adds) = portal
        .create_item(1220, json!({"title": "First"}), Changer::User(1))
        .await
        .unwrap();
    assert_eq!(adds[0].status, Some(200));
    let updates = portal
        .update_item(1220, id, json!({"title": "Second"}), Changer::Robot)
        .await
        .unwrap();
    assert_eq!(updates[0].status, Some(200));

    let stored = app.stored_portal(&portal).await.unwrap();
    let events = app
        .state
        .store
        .recent_events(stored.id, None, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].action.as_str(), events[0].user_id),
        ("update", None),
        "robot change has no user"
    );
    assert_eq!(
        (events[1].action.as_str(), events[1].user_id),
        ("add", Some(1))
    );
    assert!(
        events
            .iter()
            .all(|e| e.entity_type_id == 1220 && e.item_id == id as i64)
    );

    app.wait_for_log(&portal, 2).await;
    let page = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let first_update = page.body.find("entry action-update").expect("update shown");
    let first_add = page.body.find("entry action-add").expect("add shown");
    assert!(first_update < first_add, "newest first");
    assert!(page.body.contains(&format!("data-item=\"{id}\"")));
}

#[tokio::test]
async fn every_wire_fixture_is_accepted() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;

    for name in [
        "event_oncrmdynamicitemupdate.form",
        "event_oncrmdynamicitemupdate_no_token.form",
    ] {
        let (status, reason) = app.post_event(fixture_for(name, &portal)).await;
        assert_eq!(status, 200, "{name}: {reason}");
    }
    let stored = app.stored_portal(&portal).await.unwrap();
    let events = app
        .state
        .store
        .recent_events(stored.id, None, 10)
        .await
        .unwrap();
    // Same item, same second, one with a user and one without: two distinct events.
    assert_eq!(events.len(), 2);

    // The install fixture, carrying a token the simulator really issued.
    let live = portal.frame(1, "DEFAULT", json!({}));
    let install = fixture_for("event_onappinstall.form", &portal)
        .replace(
            "69ecb16200fa1c2e004f4a3c00000001000007a3f2f6e6f3b5e0b5f5d0b1a2c3d4e5f6",
            &live.auth_id,
        )
        .replace(
            "https%3A%2F%2Foauth.bitrix.info%2Frest%2F",
            &urlencode(&app.sim.server_endpoint()),
        );
    let (status, reason) = app.post_event(install).await;
    assert_eq!(status, 200, "install fixture: {reason}");

    let uninstall = fixture_for("event_onappuninstall.form", &portal);
    let (status, reason) = app.post_event(uninstall).await;
    assert_eq!(status, 200, "{reason}");
    assert!(
        app.stored_portal(&portal).await.is_none(),
        "CLEAN=1 removes the portal"
    );
}

#[tokio::test]
async fn the_same_content_as_json_is_accepted() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let body = json!({
        "event": "ONCRMDYNAMICITEMUPDATE",
        "data": {"FIELDS": {"ID": 24, "ENTITY_TYPE_ID": 1220}},
        "ts": 1723538517,
        "auth": {"member_id": portal.member_id(), "application_token": portal.application_token()}
    });

    let (status, reason) = app
        .post_event_typed(body.to_string(), "application/json")
        .await;
    assert_eq!(status, 200, "{reason}");
    let stored = app.stored_portal(&portal).await.unwrap();
    assert_eq!(app.state.store.count_events(stored.id).await.unwrap(), 1);
}

#[tokio::test]
async fn refused_events_get_a_reason_and_store_nothing() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let member = portal.member_id();
    let token = portal.application_token().unwrap();
    let stored = app.stored_portal(&portal).await.unwrap();

    let oversize = format!(
        "{}&padding={}",
        update_event(&member, &token, 1220, 1, 1),
        "x".repeat(70 * 1024)
    );
    let cases = [
        (
            update_event("0123456789abcdef0123456789abcdef", &token, 1220, 1, 1),
            403,
            "unknown portal",
        ),
        (
            update_event(&member, "not-the-token", 1220, 1, 1),
            403,
            "application token mismatch",
        ),
        (
            update_event(&member, "", 1220, 1, 1),
            401,
            "missing application token",
        ),
        (
            format!(
                "event=ONCRMDYNAMICITEMUPDATE&auth%5Bmember_id%5D={member}&data%5BFIELDS%5D%5BID%5D=abc"
            ),
            400,
            "malformed",
        ),
        ("%%%garbage=[[".to_owned(), 400, "malformed"),
        (
            format!("event=ONCRMLEADADD&auth%5Bmember_id%5D={member}"),
            400,
            "unsupported event",
        ),
        (oversize, 413, ""),
    ];
    for (body, expected, reason_part) in cases {
        let (status, reason) = app.post_event(body).await;
        assert_eq!(status, expected, "{reason}");
        assert!(
            reason.contains(reason_part),
            "{reason:?} should mention {reason_part:?}"
        );
    }
    assert_eq!(app.state.store.count_events(stored.id).await.unwrap(), 0);
}

#[tokio::test]
async fn two_portals_never_see_each_other() {
    let app = TestApp::spawn().await;
    let a = app.installed_portal().await;
    let b = app.installed_portal().await;

    a.create_item(1220, json!({"title": "A's item"}), Changer::User(1))
        .await
        .unwrap();
    let a_token = a.application_token().unwrap();
    let (status, _) = app
        .post_event(update_event(&b.member_id(), &a_token, 1220, 99, 5))
        .await;
    assert_eq!(status, 403, "a's token must not pass for b");

    app.wait_for_log(&a, 1).await;
    let a_page = a.open_app(1, "DEFAULT", json!({})).await.unwrap();
    let b_page = b.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert!(a_page.body.contains("<tr class=\"entry"));
    assert!(
        !b_page.body.contains("<tr class=\"entry"),
        "b's log must be empty"
    );
    assert!(b_page.body.contains("id=\"empty-log\""));

    // A frame claiming b's member id with a's token is refused.
    let mut frame = a.frame(1, "DEFAULT", json!({}));
    frame.form = frame.form.replace(&a.member_id(), &b.member_id());
    let forged = a
        .post_frame(&format!("{}app", app.base), &frame)
        .await
        .unwrap();
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(!forged.body.contains("<tr class=\"entry"));
}

#[tokio::test]
async fn frames_that_fail_verification_show_no_data() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    portal
        .create_item(1220, json!({"title": "secret"}), Changer::User(1))
        .await
        .unwrap();
    let url = format!("{}app", app.base);

    let mut garbage = portal.frame(1, "DEFAULT", json!({}));
    garbage.form = garbage.form.replace(&garbage.auth_id, "0000");
    let answer = portal.post_frame(&url, &garbage).await.unwrap();
    assert_eq!(answer.status, 401, "{}", answer.body);

    let mut untrusted = portal.frame(1, "DEFAULT", json!({}));
    let server = urlencode(&app.sim.server_endpoint());
    untrusted.form = untrusted
        .form
        .replace(&server, &urlencode("https://oauth.evil.example/rest/"));
    let answer = portal.post_frame(&url, &untrusted).await.unwrap();
    assert_eq!(answer.status, 403, "{}", answer.body);

    let genuine = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert_eq!(genuine.status, 200);
    let csp = genuine.headers["content-security-policy"].to_str().unwrap();
    assert_eq!(csp, format!("frame-ancestors http://{}", portal.domain()));
    assert!(genuine.headers.get("x-frame-options").is_none());
}

#[tokio::test]
async fn uninstall_without_clean_keeps_the_log_for_a_reinstall() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    portal
        .create_item(1220, json!({"title": "kept"}), Changer::User(1))
        .await
        .unwrap();
    let old_token = portal.application_token().unwrap();

    let deliveries = portal.uninstall(false).await.unwrap();
    assert_eq!(deliveries[0].status, Some(200));
    let stored = app.stored_portal(&portal).await.unwrap();
    assert_eq!(stored.status, PortalStatus::Removed);
    assert!(
        !stored.has_application_token(),
        "tokens are dropped at once"
    );

    let (status, reason) = app
        .post_event(update_event(&portal.member_id(), &old_token, 1220, 1, 9))
        .await;
    assert_eq!(status, 410, "{reason}");
    let page = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert_eq!(page.status, 403, "a removed app shows nothing");

    app_reinstall(&portal).await;
    let stored = app.stored_portal(&portal).await.unwrap();
    assert_eq!(stored.status, PortalStatus::Active);
    assert_eq!(
        app.state.store.count_events(stored.id).await.unwrap(),
        1,
        "history survived"
    );
    let (_, deliveries) = portal
        .create_item(1220, json!({"title": "after"}), Changer::User(1))
        .await
        .unwrap();
    assert_eq!(
        deliveries[0].status,
        Some(200),
        "events flow again after reinstall"
    );
}

#[tokio::test]
async fn uninstall_with_clean_deletes_the_log() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    portal
        .create_item(1220, json!({"title": "gone"}), Changer::User(1))
        .await
        .unwrap();
    let old = app.stored_portal(&portal).await.unwrap();

    portal.uninstall(true).await.unwrap();
    assert!(app.stored_portal(&portal).await.is_none());
    assert_eq!(app.state.store.count_events(old.id).await.unwrap(), 0);

    app_reinstall(&portal).await;
    let page = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        !page.body.contains("<tr class=\"entry"),
        "nothing of the old log is left"
    );
}

async fn app_reinstall(portal: &b24_activity::simulator::SimPortal) {
    let installer = portal.open_installer(1).await.unwrap();
    assert_eq!(installer.status, 200, "{}", installer.body);
    let deliveries = portal.finish_install().await.unwrap();
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "{deliveries:?}"
    );
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn a_removed_portal_is_deleted_once_its_retention_ran_out() {
    let app = TestApp::spawn().await;
    let kept = app.installed_portal().await;
    let removed = app.installed_portal().await;
    removed
        .create_item(1220, json!({"title": "old"}), Changer::User(1))
        .await
        .unwrap();
    app.wait_for_log(&removed, 1).await;
    let id = app.stored_portal(&removed).await.unwrap().id;
    removed.uninstall(false).await.unwrap();

    let now = b24_activity::store::now();
    assert_eq!(
        app.state
            .store
            .purge_removed_portals(now - 60)
            .await
            .unwrap(),
        0,
        "still within retention"
    );
    assert!(app.stored_portal(&removed).await.is_some());

    assert_eq!(
        app.state
            .store
            .purge_removed_portals(now + 1)
            .await
            .unwrap(),
        1
    );
    assert!(app.stored_portal(&removed).await.is_none());
    assert!(
        app.state
            .store
            .recent_activity(id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.state.store.count_events(id).await.unwrap(), 0);
    assert!(
        app.stored_portal(&kept).await.is_some(),
        "an active portal is never touched"
    );
}
