//! Speed and memory against the targets of the design ("Targets"), as printed figures.
//!
//! Ignored by a plain `cargo test`; run on a quiet machine with
//!
//! ```sh
//! cargo test --release --test benchmark -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Each test starts the real app with the portal simulator (as the integration suite does),
//! loads it over loopback for a few seconds and prints its figures beside the targets. The
//! assertions check that a run did what it claims (every answered event stored, every entry
//! there, no refusal by the portal), never a timing: timings depend on the machine.

mod common;
#[path = "benchmark/load.rs"]
mod load;

use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use b24_activity::simulator::{Changer, SimPortal};
use b24_activity::store::{Cursor, LogFilter, PortalId};
use common::{TestApp, update_event};
use load::{Pace, Run};
use serde_json::json;
use tokio::task::JoinSet;

/// Connections the platform's deliveries arrive on at once, flat out and paced.
const CONNECTIONS: [usize; 2] = [64, 256];
const PACED_CONNECTIONS: usize = 64;
const WARM_UP: Duration = Duration::from_millis(500);
const FLAT_OUT: Duration = Duration::from_secs(3);
const PACED_RATE: f64 = 2000.0;
const PACED: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn intake_throughput_and_latency() {
    production_logging();
    reset_peak_memory();
    let app = TestApp::spawn().await;
    let mut portals = Vec::new();
    for _ in 0..4 {
        portals.push(app.installed_portal().await);
    }
    let senders: Arc<Vec<(String, String)>> = Arc::new(
        portals
            .iter()
            .map(|p| (p.member_id(), p.application_token().unwrap()))
            .collect(),
    );
    let ids = portal_ids(&app, &portals).await;
    let bodies: load::Bodies = Arc::new(move |n| {
        let (member, token) = &senders[n as usize % senders.len()];
        update_event(
            member,
            token,
            1220,
            n % 50_000 + 1,
            1_800_000_000 + n / 1000,
        )
    });
    let bare = bare_server().await;
    let durable = app_addr(&app);
    let load =
        |addr, connections, pace| load::run(addr, "/events", connections, pace, bodies.clone());

    // Paced first, while the app has no backlog but what this run brings.
    println!();
    let bare_paced = load(bare, PACED_CONNECTIONS, paced()).await.unwrap();
    let app_paced = load(durable, PACED_CONNECTIONS, paced()).await.unwrap();
    println!(
        "intake latency at {} events/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         (target p99 < 25 ms); bare handler p50 {:.1} ms, p99 {:.1} ms",
        thousands(PACED_RATE),
        app_paced.quantile_ms(0.5),
        app_paced.quantile_ms(0.99),
        app_paced.quantile_ms(1.0),
        bare_paced.quantile_ms(0.5),
        bare_paced.quantile_ms(0.99),
    );

    // Flat out, the bare handler and the app in turns, so that both meet the same machine.
    let mut runs = Vec::new();
    for connections in CONNECTIONS {
        load(bare, connections, Pace::FlatOut(WARM_UP))
            .await
            .unwrap();
        let bare_run = load(bare, connections, Pace::FlatOut(FLAT_OUT))
            .await
            .unwrap();
        let app_run = load(durable, connections, Pace::FlatOut(FLAT_OUT))
            .await
            .unwrap();
        println!(
            "intake: {} events/s durable vs {} bare (ratio {:.2}, target >= 0.5) over {connections} \
             connections, {} s each; CPU per event {:.0} µs vs {:.0} µs (load included)",
            thousands(app_run.per_second()),
            thousands(bare_run.per_second()),
            app_run.per_second() / bare_run.per_second(),
            FLAT_OUT.as_secs(),
            app_run.cpu_us_each(),
            bare_run.cpu_us_each(),
        );
        runs.push(bare_run);
        runs.push(app_run);
    }

    print_memory("intake");

    for run in runs.iter().chain([&bare_paced, &app_paced]) {
        assert_eq!(
            run.ok(),
            run.answered(),
            "every event accepted: {:?}",
            run.statuses
        );
    }
    let expected_paced = (PACED_RATE * PACED.as_secs_f64()) as u64;
    assert_eq!(
        app_paced.answered(),
        expected_paced,
        "the paced run sent all"
    );
    let accepted = runs.iter().skip(1).step_by(2).map(Run::ok).sum::<u64>() + app_paced.ok();
    let mut stored = 0;
    for id in ids {
        stored += app.state.store.count_events(id).await.unwrap() as u64;
    }
    assert_eq!(stored, accepted, "every answered event is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn enrichment_requests_per_burst() {
    production_logging();
    reset_peak_memory();
    let app = TestApp::spawn().await;
    let items = 2000;
    let portal = portal_with_items(&app, items).await;
    let requests_before = portal.total_rest_requests();

    // A burst: one change to every item, by five users, as fast as the platform delivers.
    let started = Instant::now();
    let mut deliveries = JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    for _ in 0..16 {
        let (portal, next) = (portal.clone(), next.clone());
        deliveries.spawn(async move {
            let mut ok = 0;
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id > items {
                    return ok;
                }
                let user = Changer::User(id % 5 + 1);
                let sent = portal
                    .send_event("ONCRMDYNAMICITEMUPDATE", 1220, id, user)
                    .await
                    .unwrap();
                ok += sent.iter().filter(|d| d.status == Some(200)).count() as u64;
            }
        });
    }
    let mut delivered = 0;
    while let Some(ok) = deliveries.join_next().await {
        delivered += ok.unwrap();
    }
    let sent_in = started.elapsed();
    let entries = app.wait_for_log(&portal, items as usize).await;
    let enriched_in = started.elapsed();

    let requests = portal.total_rest_requests() - requests_before;
    let per_request = delivered as f64 / requests as f64;
    println!();
    println!(
        "enrichment: a burst of {} events on {} items (delivered in {:.1} s, all in the log \
         after {:.1} s): {requests} REST requests, one per {per_request:.0} events \
         (target: one per 40 or more); {} refused for rate (target 0)",
        thousands(delivered as f64),
        thousands(items as f64),
        sent_in.as_secs_f64(),
        enriched_in.as_secs_f64(),
        portal.rate_limited_count(),
    );
    print_memory("enrichment");

    assert_eq!(delivered, items, "every event accepted");
    assert_eq!(entries.len(), items as usize);
    assert!(
        entries.iter().all(|e| e
            .item_title
            .as_deref()
            .is_some_and(|t| t.starts_with("Item "))),
        "every item fetched"
    );
    assert_eq!(portal.rate_limited_count(), 0, "never over the budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn log_pages_of_a_million_entries() {
    production_logging();
    let app = TestApp::spawn().await;
    let portal = app.installed_portal().await;
    let id = app.stored_portal(&portal).await.unwrap().id;
    let rows = 1_000_000;

    let started = Instant::now();
    let oldest = fill_log(&app, id, rows).await;
    println!();
    println!(
        "log: {} entries (and their events) written in {:.1} s",
        thousands(rows as f64),
        started.elapsed().as_secs_f64()
    );
    reset_peak_memory();

    // What a page asks the store for, at the newest entry, half way down and at the oldest.
    let store = &app.state.store;
    let everything = LogFilter::default();
    let depths = [
        ("first page", None),
        ("middle", Some(oldest + rows / 2)),
        ("last page", Some(oldest + 40)),
    ];
    for (depth, before) in depths {
        let cursor = before.map_or(Cursor::Newest, Cursor::Before);
        let last = before == Some(oldest + 40);
        let expected = if last { 40 } else { 50 };
        let mut shown = 0;
        let figures = timed(50, async || {
            shown = store.recent_activity(id, before, 50).await.unwrap().len();
        })
        .await;
        println!("log: Store::recent_activity, {depth}: {figures} (target < 20 ms)");
        assert_eq!(shown, expected, "{depth}: a full page");
        let figures = timed(50, async || {
            shown = store
                .log_page(id, &everything, cursor, 51)
                .await
                .unwrap()
                .len();
        })
        .await;
        println!(
            "log: Store::log_page, 51 entries as a page asks, {depth}: {figures} (target < 20 ms)"
        );
        assert_eq!(
            shown,
            if last { 40 } else { 51 },
            "{depth}: a page and one more"
        );
    }
    let by_user = LogFilter {
        user_id: Some(3),
        ..LogFilter::default()
    };
    let figures = timed(20, async || {
        let middle = Cursor::Before(oldest + rows / 2);
        store.log_page(id, &by_user, middle, 51).await.unwrap();
    })
    .await;
    println!("log: Store::log_page, one user's entries, middle: {figures}");
    let figures = timed(20, async || {
        store.pending_events(id).await.unwrap();
    })
    .await;
    println!("log: Store::pending_events (the page's banner): {figures}");
    let figures = timed(20, async || {
        store.known_types(id).await.unwrap();
    })
    .await;
    println!("log: Store::known_types (the page's type filter): {figures}");

    // The whole page: the frame (verified with the OAuth server and the portal), then pages
    // of the session it opened, each rendered by the server.
    let mut body = String::new();
    let figures = timed(20, async || {
        let page = portal.open_app(1, "DEFAULT", json!({})).await.unwrap();
        assert_eq!(page.status, 200);
        body = page.body;
    })
    .await;
    println!(
        "log: POST /app as the portal's browser sees it, frame verification with the OAuth \
         server and the portal included: {figures}"
    );
    assert!(body.contains("Invoice "), "the page shows entries");
    let token = session_of(&body);
    for (depth, before) in depths {
        let position = before.map(|b| format!("&before={b}")).unwrap_or_default();
        let url = format!("{}log?s={token}{position}", app.base);
        let figures = timed(50, async || {
            let page = app.http.get(&url).send().await.unwrap();
            assert_eq!(page.status(), 200);
            body = page.text().await.unwrap();
        })
        .await;
        println!("log: GET /log, {depth}, rendered: {figures} (target < 20 ms)");
        assert!(body.contains("Invoice "), "{depth}: the page shows entries");
    }
    print_memory("log");
}

/// The session token a rendered log page carries.
fn session_of(body: &str) -> String {
    let start = body
        .find("data-token=\"")
        .expect("the page carries a session");
    body[start + "data-token=\"".len()..]
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// The baseline: an axum handler that answers 200 and does nothing else.
async fn bare_server() -> SocketAddr {
    let router = Router::new().route("/events", post(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn app_addr(app: &TestApp) -> SocketAddr {
    app.state.settings.public_url.socket_addrs(|| None).unwrap()[0]
}

fn paced() -> Pace {
    Pace::Paced {
        rate: PACED_RATE,
        duration: PACED,
    }
}

async fn portal_ids(app: &TestApp, portals: &[SimPortal]) -> Vec<PortalId> {
    let mut ids = Vec::new();
    for portal in portals {
        ids.push(app.stored_portal(portal).await.unwrap().id);
    }
    ids
}

/// A portal holding `items` items before the app is installed, so that setting it up costs
/// no REST budget: the burst is the first the app hears of them.
async fn portal_with_items(app: &TestApp, items: u64) -> SimPortal {
    let portal = app.sim.add_portal().await.unwrap();
    portal.add_type(1220, "Orders");
    for user in 1..=5 {
        portal.add_user(user, "User", &format!("Number {user}"));
    }
    portal.add_stage(1220, 30, "DT1220_30:NEW", "New");
    for n in 1..=items {
        let fields = json!({"title": format!("Item {n}"), "stageId": "DT1220_30:NEW",
            "categoryId": 30, "opportunity": n});
        let (id, sent) = portal
            .create_item(1220, fields, Changer::User(1))
            .await
            .unwrap();
        assert_eq!((id, sent.len()), (n, 0), "created quietly");
    }

    let installer = portal.open_installer(1).await.unwrap();
    assert_eq!(installer.status, 200, "installer: {}", installer.body);
    let deliveries = portal.finish_install().await.unwrap();
    assert!(deliveries.iter().all(|d| d.status == Some(200)));
    portal
}

/// Writes `rows` events and their entries for `portal` straight into the database, the way
/// years of enrichment would have left them. Returns the oldest entry id.
async fn fill_log(app: &TestApp, portal: PortalId, rows: i64) -> i64 {
    use sqlx::Connection;
    let mut db = sqlx::AnyConnection::connect(&app.state.settings.database_url)
        .await
        .unwrap();
    let since = 1_700_000_000i64;
    let mut tx = db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (portal_id, action, entity_type_id, item_id, user_id, event_ts,
             received_at, dedup_key, state, attempts)
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
         SELECT $1, 'update', 1220, i % 5000 + 1, i % 7 + 1, $3 + i * 30, $3 + i * 30,
             'id:' || i, 'done', 1
         FROM n",
    )
    .bind(portal.0)
    .bind(rows)
    .bind(since)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        r#"INSERT INTO activity (portal_id, event_id, action, entity_type_id, type_title,
             item_id, item_title, title_search, user_id, user_name, occurred_at, changes,
             outcome)
         SELECT portal_id, id, action, entity_type_id, 'Orders', item_id, 'Invoice ' || item_id,
             'invoice ' || item_id, user_id, 'User Number ' || user_id, event_ts,
             '[{"field":"stageId","label":"Stage","old":"New","new":"Won"},' ||
             '{"field":"opportunity","label":"Amount","old":"100","new":"' || id || '"}]',
             'recorded'
         FROM events WHERE portal_id = $1 ORDER BY id"#,
    )
    .bind(portal.0)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let (oldest, count): (i64, i64) =
        sqlx::query_as("SELECT MIN(id), COUNT(*) FROM activity WHERE portal_id = $1")
            .bind(portal.0)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(count, rows);
    oldest
}

/// Runs `step` `times` times after one warm-up run; "median X ms, max Y ms".
async fn timed(times: usize, mut step: impl AsyncFnMut()) -> String {
    step().await;
    let mut took = Vec::with_capacity(times);
    for _ in 0..times {
        let started = Instant::now();
        step().await;
        took.push(started.elapsed());
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.2} ms, max {:.2} ms over {times}",
        ms(took[times / 2]),
        ms(took[times - 1])
    )
}

/// Logs as `serve` does (one line per request at `info`), into nothing: the cost of
/// formatting the lines is part of serving.
fn production_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(b24_activity::telemetry::DEFAULT_FILTER)
            .with_target(false)
            .with_writer(std::io::sink)
            .init();
    });
}

/// Lets VmHWM start again from the current resident size (Linux `clear_refs` 5).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The resident size now and at its peak since the last reset, of this process: the server,
/// the simulator and the load together, so an upper bound for the server alone.
fn print_memory(what: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|kb| format!("{:.1} MiB", kb / 1024.0))
            .unwrap_or_else(|| "unknown".to_owned())
    };
    println!(
        "memory after {what}: VmRSS {}, VmHWM {} (target < 64 MiB; the test process: server, \
         simulator and load together)",
        field("VmRSS:"),
        field("VmHWM:")
    );
}

/// 41234.6 -> "41,235"
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (n, digit) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[test]
fn thousands_are_grouped() {
    assert_eq!(thousands(41234.6), "41,235");
    assert_eq!(thousands(999.0), "999");
    assert_eq!(thousands(1_000_000.0), "1,000,000");
}
