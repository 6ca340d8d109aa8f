//! The simulator started for real and spoken to over HTTP, as the app will.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

use super::*;

async fn start(config: SimulatorConfig) -> (Simulator, SimPortal) {
    let sim = Simulator::start(config).await.expect("simulator starts");
    let portal = sim.add_portal().await.expect("portal starts");
    (sim, portal)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Calls a portal method with a form body; answers (status, JSON).
async fn call(portal: &SimPortal, method: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = client()
        .post(format!("{}{method}", portal.client_endpoint()))
        .form(form)
        .send()
        .await
        .expect("portal answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

async fn refresh(sim: &Simulator, refresh_token: &str) -> (u16, Value) {
    let config = sim.config();
    let response = client()
        .post(format!("{}oauth/token/", sim.oauth_base()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", config.client_id.as_str()),
            ("client_secret", config.client_secret.as_str()),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .expect("OAuth server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// A stand-in app: `/install`, `/app` and `/events` answer 200 and keep what they received.
async fn receiving_app(sim: &Simulator) -> Arc<Mutex<Vec<String>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let keep = received.clone();
    let router = Router::new().route(
        "/{page}",
        post(move |body: String| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body);
                "ok"
            }
        }),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    sim.register_app(AppRegistration {
        install_url: format!("{base}/install"),
        app_url: format!("{base}/app"),
    });
    received
}

#[tokio::test]
async fn a_refresh_token_works_once_and_kills_the_access_token_beside_it() {
    let (sim, portal) = start(SimulatorConfig::default()).await;
    let frame = portal.frame(1, "DEFAULT", json!({}));

    let (first, fresh) = refresh(&sim, &frame.refresh_id).await;
    let (second, refused) = refresh(&sim, &frame.refresh_id).await;
    let (_, old_access) = call(&portal, "app.info", &[("auth", &frame.auth_id)]).await;
    let new_token = fresh["access_token"].as_str().unwrap();
    let (new_access, _) = call(&portal, "app.info", &[("auth", new_token)]).await;

    assert_eq!(first, 200);
    assert_eq!((second, &refused["error"]), (400, &json!("invalid_grant")));
    assert_eq!(old_access["error"], "invalid_token");
    assert_eq!(new_access, 200);
    assert_eq!(sim.refresh_count(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_refresh_answer_looks_like_the_platform_s() {
    let (sim, portal) = start(SimulatorConfig::default()).await;
    let frame = portal.frame(3, "DEFAULT", json!({}));

    let (status, answer) = refresh(&sim, &frame.refresh_id).await;
    let new_token = answer["access_token"].as_str().unwrap();
    let (info_status, info) = call(&portal, "app.info", &[("auth", new_token)]).await;

    assert_eq!(status, 200);
    assert!(answer.get("token_type").is_none());
    assert_eq!(answer["user_id"], 3);
    assert_eq!(answer["member_id"], portal.member_id());
    assert_eq!(answer["client_endpoint"], portal.client_endpoint());
    assert_eq!(
        answer["domain"],
        sim.oauth_base()
            .trim_start_matches("http://")
            .trim_end_matches('/')
    );
    assert_eq!(info_status, 200);
    assert_eq!(info["result"]["CODE"], "local.b24activity.demo");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_without_using_the_token() {
    let (sim, portal) = start(SimulatorConfig::default()).await;
    let frame = portal.frame(1, "DEFAULT", json!({}));

    let response = client()
        .get(format!("{}oauth/token/", sim.oauth_base()))
        .query(&[
            ("grant_type", "refresh_token"),
            ("client_id", "local.b24activity.demo"),
            ("client_secret", "wrong"),
            ("refresh_token", frame.refresh_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();

    assert_eq!((status, &body["error"]), (401, &json!("invalid_client")));
    assert_eq!(refresh(&sim, &frame.refresh_id).await.0, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn binding_the_same_handler_twice_fails_with_error_core() {
    let (sim, portal) = start(SimulatorConfig::default()).await;
    let frame = portal.frame(1, "DEFAULT", json!({}));
    let bind = [
        ("auth", frame.auth_id.as_str()),
        ("event", "onCrmDynamicItemUpdate"),
        ("handler", "http://127.0.0.1:9/events"),
    ];

    let (first, _) = call(&portal, "event.bind", &bind).await;
    let (second, answer) = call(&portal, "event.bind", &bind).await;
    let (unknown, unknown_answer) = call(
        &portal,
        "event.bind",
        &[
            ("auth", &frame.auth_id),
            ("event", "ONCRMDEALUPDATE"),
            ("handler", "http://127.0.0.1:9/e"),
        ],
    )
    .await;

    assert_eq!(first, 200);
    assert_eq!(second, 400);
    assert_eq!(answer["error"], "ERROR_CORE");
    assert_eq!(answer["error_description"], "Handler already binded");
    assert_eq!(
        (unknown, &unknown_answer["error"]),
        (400, &json!("ERROR_EVENT_NOT_FOUND"))
    );
    assert_eq!(portal.bindings().len(), 1);
    assert_eq!(portal.bindings()[0].event, "ONCRMDYNAMICITEMUPDATE");
    sim.shutdown().await;
}

#[tokio::test]
async fn requests_over_the_burst_get_503() {
    let config = SimulatorConfig {
        rate_limit: RateLimit {
            per_second: 0.01,
            burst: 5.0,
        },
        ..SimulatorConfig::default()
    };
    let (sim, portal) = start(config).await;
    let frame = portal.frame(1, "DEFAULT", json!({}));

    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(call(&portal, "app.info", &[("auth", &frame.auth_id)]).await);
    }

    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 503, 503]);
    assert_eq!(statuses[5].1["error"], "QUERY_LIMIT_EXCEEDED");
    assert_eq!(portal.rate_limited_count(), 2);
    assert_eq!(portal.total_rest_requests(), 7);
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_files_results_and_errors_by_key_the_php_way() {
    let (sim, portal) = start(SimulatorConfig::default()).await;
    portal.add_type(1220, "Projects");
    let (id, _) = portal
        .create_item(1220, json!({"title": "Roof"}), Changer::User(1))
        .await
        .unwrap();
    let frame = portal.frame(1, "DEFAULT", json!({}));
    let good = format!("crm.item.get?entityTypeId=1220&id={id}");

    let (status, clean) = call(
        &portal,
        "batch",
        &[
            ("auth", &frame.auth_id),
            ("halt", "0"),
            ("cmd[item]", &good),
            ("cmd[type]", "crm.type.getByEntityTypeId?entityTypeId=1220"),
        ],
    )
    .await;
    let (_, mixed) = call(
        &portal,
        "batch",
        &[
            ("auth", &frame.auth_id),
            ("cmd[a]", "crm.item.get?entityTypeId=1220&id=999"),
            ("cmd[b]", &good),
        ],
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(clean["result"]["result_error"], json!([]));
    assert_eq!(clean["result"]["result"]["item"]["item"]["title"], "Roof");
    assert_eq!(
        clean["result"]["result"]["type"]["type"]["title"],
        "Projects"
    );
    assert_eq!(mixed["result"]["result_error"]["a"]["error"], "NOT_FOUND");
    assert_eq!(mixed["result"]["result"]["b"]["item"]["id"], id);
    assert_eq!(portal.rest_calls("batch"), 2);
    assert_eq!(portal.sub_calls("crm.item.get"), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_refuses_more_than_fifty_commands_and_obeys_faults_inside() {
    let (sim, portal) = start(SimulatorConfig::default()).await;
    let frame = portal.frame(1, "DEFAULT", json!({}));
    let keys: Vec<String> = (0..51).map(|i| format!("cmd[c{i}]")).collect();
    let mut long: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "app.info")).collect();
    long.push(("auth", &frame.auth_id));
    portal.fail_next("app.info", 1, 500, "INTERNAL_SERVER_ERROR");

    let (too_long, _) = call(&portal, "batch", &long).await;
    let (_, faulted) = call(
        &portal,
        "batch",
        &[
            ("auth", &frame.auth_id),
            ("halt", "1"),
            ("cmd[x]", "app.info"),
            ("cmd[y]", "app.info"),
        ],
    )
    .await;

    assert_eq!(too_long, 400);
    assert_eq!(
        faulted["result"]["result_error"]["x"]["error"],
        "INTERNAL_SERVER_ERROR"
    );
    // halt=1 stops at the first error.
    assert_eq!(faulted["result"]["result"], json!([]));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_moved_portal_redirects_the_old_address() {
    let (sim, portal) = start(SimulatorConfig::default()).await;
    let old = portal.client_endpoint();

    let moved = portal.move_domain().unwrap();
    let response = client()
        .post(format!("{old}crm.item.get?id=1"))
        .send()
        .await
        .unwrap();

    assert_ne!(moved.client_endpoint(), old);
    assert_eq!(response.status().as_u16(), 302);
    assert_eq!(
        response.headers()["location"].to_str().unwrap(),
        format!("{}crm.item.get?id=1", moved.client_endpoint())
    );
    assert_eq!(portal.redirected_count(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn expired_and_foreign_tokens_get_401() {
    let (sim, portal) = start(SimulatorConfig::default()).await;
    let other = sim.add_portal().await.unwrap();
    let frame = portal.frame(1, "DEFAULT", json!({}));
    let foreign = other.frame(1, "DEFAULT", json!({}));

    let (_, missing) = call(&portal, "app.info", &[]).await;
    let (_, wrong_portal) = call(&portal, "app.info", &[("auth", &foreign.auth_id)]).await;
    portal.expire_access_tokens();
    let (status, expired) = call(&portal, "app.info", &[("auth", &frame.auth_id)]).await;

    assert_eq!(missing["error"], "NO_AUTH_FOUND");
    assert_eq!(wrong_portal["error"], "invalid_token");
    assert_eq!((status, &expired["error"]), (401, &json!("expired_token")));
    assert_ne!(portal.domain(), other.domain());
    sim.shutdown().await;
}

#[tokio::test]
async fn install_events_and_uninstall_go_over_the_wire() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let received = receiving_app(&sim).await;
    let portal = sim.add_portal().await.unwrap();

    let opened = portal.open_installer(1).await.unwrap();
    let token = portal
        .application_token()
        .expect("created by the installer");
    let installer_body = received.lock().unwrap().pop().unwrap();
    let frame = portal.frame(1, "DEFAULT", json!({}));
    let app_base = sim.world().app.clone().unwrap().app_url.replace("/app", "");
    for event in ["ONAPPINSTALL", "ONCRMDYNAMICITEMUPDATE", "ONAPPUNINSTALL"] {
        let handler = format!("{app_base}/events");
        call(
            &portal,
            "event.bind",
            &[
                ("auth", &frame.auth_id),
                ("event", event),
                ("handler", &handler),
            ],
        )
        .await;
    }
    let (id, before_finish) = portal
        .create_item(1220, json!({}), Changer::User(1))
        .await
        .unwrap();

    let installed = portal.finish_install().await.unwrap();
    let updated = portal
        .update_item(1220, id, json!({"title": "New"}), Changer::Robot)
        .await
        .unwrap();
    let removed = portal.uninstall(true).await.unwrap();
    let bodies = received.lock().unwrap().clone();

    assert_eq!(opened.status, 200);
    assert!(installer_body.contains(&format!("APPLICATION_TOKEN={token}")));
    assert!(before_finish.is_empty(), "no events before installFinish");
    assert_eq!(installed[0].status, Some(200));
    assert!(bodies[0].starts_with("event=ONAPPINSTALL&data%5BVERSION%5D=1"));
    assert!(bodies[0].contains("auth%5Brefresh_token%5D="));
    assert_eq!(updated[0].event, "ONCRMDYNAMICITEMUPDATE");
    assert!(bodies[1].contains(&format!("data%5BFIELDS%5D%5BID%5D={id}&")));
    assert!(
        !bodies[1].contains("access_token"),
        "a robot change carries no token"
    );
    assert!(bodies[2].contains("data%5BCLEAN%5D=1"));
    assert_eq!(removed.len(), 1);
    assert!(portal.bindings().is_empty());
    let (status, _) = call(&portal, "app.info", &[("auth", &frame.auth_id)]).await;
    assert_eq!(status, 401);
    let (_, refused) = refresh(&sim, &frame.refresh_id).await;
    assert_eq!(refused["error"], "NOT_INSTALLED");

    portal.open_installer(1).await.unwrap();
    assert_ne!(
        portal.application_token(),
        Some(token),
        "a reinstall brings a new token"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_is_down_gets_the_event_once_and_never_again() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    receiving_app(&sim).await;
    let portal = sim.add_portal().await.unwrap();
    portal.open_installer(1).await.unwrap();
    let frame = portal.frame(1, "DEFAULT", json!({}));
    // Port 9 (discard) is closed on loopback: the connection fails at once.
    let bind = [
        ("auth", frame.auth_id.as_str()),
        ("event", "ONCRMDYNAMICITEMADD"),
        ("handler", "http://127.0.0.1:9/events"),
    ];
    call(&portal, "event.bind", &bind).await;
    portal.finish_install().await.unwrap();

    let (_, deliveries) = tokio::time::timeout(
        Duration::from_secs(15),
        portal.create_item(1220, json!({}), Changer::User(1)),
    )
    .await
    .unwrap()
    .unwrap();

    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, None);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_oauth_server_app_info_reports_install_state() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    receiving_app(&sim).await;
    let portal = sim.add_portal().await.unwrap();
    portal.open_installer(1).await.unwrap();
    let frame = portal.frame(1, "DEFAULT", json!({}));
    let url = format!("{}app.info", sim.server_endpoint());

    let before: Value = client()
        .get(&url)
        .query(&[("auth", &frame.auth_id)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    portal.finish_install().await.unwrap();
    let after: Value = client()
        .post(&url)
        .json(&json!({"auth": frame.auth_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(before["result"]["INSTALLED"], false);
    assert_eq!(before["result"]["install"]["member_id"], portal.member_id());
    assert_eq!(after["result"]["install"]["installed"], true);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_portal_page_frames_the_installer_then_the_app() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    receiving_app(&sim).await;
    let portal = sim.add_portal().await.unwrap();

    let first = client()
        .get(portal.page_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let finished = client()
        .post(format!("{}_sim/install-finish", portal.page_url()))
        .send()
        .await
        .unwrap();
    let second = client()
        .get(portal.page_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let script = client()
        .get(sim.bx24_script_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(first.contains(r#"<iframe name="app" id="app-frame""#));
    assert!(first.contains("/install?DOMAIN="));
    assert!(first.contains(r#"name="AUTH_ID""#));
    assert_eq!(finished.status().as_u16(), 200);
    assert!(second.contains("/app?DOMAIN="));
    assert!(script.contains("window.BX24"));
    sim.shutdown().await;
}
