//! The log page over HTTP: the app's own session, paging, filters, the card tab, the CSV
//! download, live updates, languages and escaping. (The same in a real browser: browser.rs.)

mod common;

use std::time::Duration;

use b24_activity::simulator::{Changer, SimPortal};
use common::TestApp;
use serde_json::json;

/// The session token a rendered page carries.
fn token_of(body: &str) -> String {
    let start = body.find("data-token=\"").expect("page carries a session") + "data-token=\"".len();
    body[start..].split('"').next().unwrap().to_owned()
}

fn rows(body: &str) -> usize {
    body.matches("<tr class=\"entry").count()
}

/// The `data-item` of every row, in page order.
fn items(body: &str) -> Vec<u64> {
    body.split("data-item=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect()
}

/// The `data-id` (entry id) of every row, in page order.
fn entry_ids(body: &str) -> Vec<u64> {
    body.split("<tr class=\"entry")
        .skip(1)
        .map(|row| {
            row.split("data-id=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

async fn get(app: &TestApp, path_and_query: &str) -> (u16, String) {
    let response = app
        .http
        .get(format!("{}{path_and_query}", app.base))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn portal_with_items(app: &TestApp, count: u64) -> (SimPortal, Vec<u64>) {
    let portal = app.installed_portal().await;
    portal.add_type(1220, "Orders");
    portal.add_type(1038, "Contracts");
    portal.add_user(1, "Ivan", "Petrov");
    portal.add_user(7, "Maria", "Sokolova");
    let mut ids = Vec::new();
    for n in 0..count {
        let (type_id, user) = if n % 2 == 0 { (1220, 1) } else { (1038, 7) };
        let fields = json!({"title": format!("Item {n:03}"), "opportunity": n});
        ids.push(
            portal
                .create_item(type_id, fields, Changer::User(user))
                .await
                .unwrap()
                .0,
        );
    }
    app.wait_for_log(&portal, count as usize).await;
    (portal, ids)
}

#[tokio::test]
async fn a_verified_frame_opens_a_session_that_pages_through_the_log() {
    let app = TestApp::spawn().await;
    let (portal, _) = portal_with_items(&app, 120).await;

    let first = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(rows(&first.body), 50, "a page holds fifty entries");
    let token = token_of(&first.body);
    assert!(
        !first.headers.contains_key("set-cookie"),
        "no cookies in a third-party frame"
    );

    let newest = entry_ids(&first.body);
    let older = first
        .body
        .split("id=\"page-older\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (status, second) = get(
        &app,
        &older.replace("&amp;", "&").replace("&#38;", "&")[1..],
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let next = entry_ids(&second);
    assert_eq!(next.len(), 50);
    assert!(
        next.iter().all(|id| !newest.contains(id)),
        "the next page continues where the first ended"
    );
    assert!(
        next[0] < *newest.last().unwrap(),
        "newest first across pages"
    );
    assert!(second.contains("id=\"page-newer\""));

    let (_, oldest) = get(
        &app,
        &format!("log?s={token}&before={}", next.last().unwrap()),
    )
    .await;
    assert_eq!(rows(&oldest), 20, "the last page holds the rest");
    assert!(
        !oldest.contains("id=\"page-older\""),
        "nothing older than the last page"
    );
    let (status, _) = get(&app, "log").await;
    assert_eq!(status, 401, "no session, no log");
}

#[tokio::test]
async fn tampered_expired_and_foreign_sessions_show_nothing() {
    let app = TestApp::spawn().await;
    let (a, _) = portal_with_items(&app, 3).await;
    let b = app.installed_portal().await;
    let a_token = token_of(&a.open_app(1, "DEFAULT", json!({})).await.unwrap().body);
    let b_page = b.open_app(1, "DEFAULT", json!({})).await.unwrap();
    let b_token = token_of(&b_page.body);

    let mut tampered = a_token.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let (status, body) = get(
        &app,
        &format!("log?s={}", String::from_utf8(tampered).unwrap()),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(rows(&body), 0);

    let stored = app.stored_portal(&a).await.unwrap();
    let expired = b24_activity::ui::session::Session {
        portal_id: stored.id,
        member_id: stored.member_id.clone(),
        user_id: 1,
        lang: "en".into(),
        expires_at: b24_activity::store::now() - 1,
    };
    let (status, body) = get(&app, &format!("log?s={}", expired.token(&app.state))).await;
    assert_eq!(status, 401);
    assert!(body.contains("expired"));

    let (status, body) = get(&app, &format!("log?s={b_token}")).await;
    assert_eq!(status, 200);
    assert_eq!(rows(&body), 0, "b's session never shows a's entries");

    a.uninstall(true).await.unwrap();
    let (status, _) = get(&app, &format!("log?s={a_token}")).await;
    assert_eq!(status, 403, "a removed portal's session is refused");
}

#[tokio::test]
async fn filters_narrow_the_log_by_type_item_user_time_and_title() {
    let app = TestApp::spawn().await;
    let (portal, ids) = portal_with_items(&app, 10).await;
    let token = token_of(&portal.open_app(1, "DEFAULT", json!({})).await.unwrap().body);
    let today = time::OffsetDateTime::now_utc().date();
    let day = |d: time::Date| format!("{}-{:02}-{:02}", d.year(), d.month() as u8, d.day());

    let cases = [
        ("type=1220".to_owned(), 5),
        ("type=1038&user=7".to_owned(), 5),
        ("user=1".to_owned(), 5),
        (format!("item={}&type=1220", ids[2]), 1),
        ("q=item+00".to_owned(), 10),
        ("q=ITEM+007".to_owned(), 1),
        (format!("from={}&to={}", day(today), day(today)), 10),
        (format!("to={}", day(today.previous_day().unwrap())), 0),
        ("type=abc".to_owned(), 10),
    ];
    for (query, expected) in cases {
        let (status, body) = get(&app, &format!("log?s={token}&{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(rows(&body), expected, "{query}");
    }
    let (_, body) = get(&app, &format!("log?s={token}&type=1220")).await;
    assert!(body.contains("id=\"filter-reset\""));
    assert!(
        body.contains("<option value=\"1220\" selected>Orders</option>"),
        "the type filter names types"
    );
}

#[tokio::test]
async fn the_card_tab_shows_the_history_of_its_item_only() {
    let app = TestApp::spawn().await;
    let portal = app.sim.add_portal().await.unwrap();
    portal.add_type(1220, "Orders");
    portal.add_type(1038, "Contracts");
    let installer = portal.open_installer(1).await.unwrap();
    assert_eq!(installer.status, 200);
    portal.finish_install().await.unwrap();
    let tabs: Vec<String> = portal
        .placements()
        .into_iter()
        .map(|p| p.placement)
        .collect();
    assert!(
        tabs.contains(&"CRM_DYNAMIC_1220_DETAIL_TAB".to_owned()),
        "{tabs:?}"
    );
    assert!(
        tabs.contains(&"CRM_DYNAMIC_1038_DETAIL_TAB".to_owned()),
        "{tabs:?}"
    );
    portal.open_installer(1).await.unwrap();
    assert_eq!(
        portal.placements().len(),
        2,
        "installing again binds no tab twice"
    );

    let (mine, _) = portal
        .create_item(1220, json!({"title": "Mine"}), Changer::User(1))
        .await
        .unwrap();
    let (other, _) = portal
        .create_item(1220, json!({"title": "Other"}), Changer::User(1))
        .await
        .unwrap();
    portal
        .update_item(
            1220,
            mine,
            json!({"title": "Mine, renamed"}),
            Changer::User(1),
        )
        .await
        .unwrap();
    app.wait_for_log(&portal, 3).await;

    let tab = portal
        .open_app(
            1,
            "CRM_DYNAMIC_1220_DETAIL_TAB",
            json!({"ID": mine.to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(tab.status, 200, "{}", tab.body);
    assert_eq!(items(&tab.body), [mine, mine]);
    assert!(!items(&tab.body).contains(&other));
    assert!(tab.body.contains("History of this item"));
    assert!(
        !tab.body.contains("id=\"filters\""),
        "the tab has no filters of its own"
    );
}

#[tokio::test]
async fn the_csv_download_holds_the_filtered_log() {
    let app = TestApp::spawn().await;
    let (portal, _) = portal_with_items(&app, 6).await;
    let token = token_of(&portal.open_app(1, "DEFAULT", json!({})).await.unwrap().body);

    let response = app
        .http
        .get(format!("{}log/export.csv?s={token}&type=1038", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "time_utc,type_id,type,item_id,item,action,user_id,user,changes"
    );
    assert_eq!(lines.len(), 4, "header and three Contracts rows:\n{csv}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains(",1038,Contracts,") && l.contains("Maria Sokolova"))
    );
    assert!(lines[1].contains("Title:  -> Item 00"), "{}", lines[1]);

    let (status, _) = get(&app, "log/export.csv?s=forged").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn new_entries_are_announced_to_an_open_page() {
    let app = TestApp::spawn().await;
    let (portal, _) = portal_with_items(&app, 1).await;
    let page = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    let token = token_of(&page.body);
    let newest: i64 = page
        .body
        .split("data-newest=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let mut stream = app
        .http
        .get(format!("{}log/live?s={token}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    portal
        .create_item(1220, json!({"title": "Arrived live"}), Changer::User(1))
        .await
        .unwrap();

    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        let mut text = String::new();
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: changed") {
                return text;
            }
        }
        text
    })
    .await
    .expect("the page hears of the new entry");
    assert!(heard.contains("event: changed"));

    let response = app
        .http
        .get(format!("{}log/rows?after={newest}", app.base))
        .header("x-session", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let newest_id: i64 = response.headers()["x-newest-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(newest_id > newest);
    let html = response.text().await.unwrap();
    assert_eq!(rows(&html), 1);
    assert!(html.contains("Arrived live"));
}

#[tokio::test]
async fn russian_portals_read_russian_and_others_english() {
    let app = TestApp::spawn().await;
    let (portal, _) = portal_with_items(&app, 1).await;
    let url = format!("{}app", app.base);

    let ru = portal
        .post_frame(&url, &portal.frame(1, "DEFAULT", json!({})).with_lang("ru"))
        .await
        .unwrap();
    assert!(ru.body.contains("Журнал изменений"), "{}", ru.body);
    assert!(ru.body.contains("lang=\"ru\""));
    let de = portal
        .post_frame(&url, &portal.frame(1, "DEFAULT", json!({})).with_lang("de"))
        .await
        .unwrap();
    assert!(de.body.contains("Activity log"));
    assert!(de.body.contains("lang=\"en\""));
}

#[tokio::test]
async fn markup_in_item_titles_is_shown_as_text() {
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    portal
        .create_item(
            1220,
            json!({"title": "<script>alert(1)</script>"}),
            Changer::User(1),
        )
        .await
        .unwrap();
    app.wait_for_log(&portal, 1).await;

    let page = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
    assert!(!page.body.contains("<script>alert(1)</script>"));
    assert!(
        page.body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "escaped as text"
    );
}
