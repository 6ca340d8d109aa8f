//! The portal page and the BX24.js stand-in in a real browser: headless Chromium opens the
//! portal page, the framed installer calls `installFinish`, the page reloads into the app, and
//! the app's `fitWindow` and `openPath` reach the page. Ignored by default: it needs
//! `chromium` on the PATH (`apt-get install chromium`); run it with `--ignored`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Html;
use axum::routing::post;
use serde_json::json;

use super::*;

/// A framed page that loads BX24.js and runs `script` once BX24 is ready.
fn framed_page(bx24: &str, script: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><body><div style=\"height:900px\">app</div>\
         <script src=\"{bx24}\"></script>\
         <script>BX24.init(function () {{ {script} }});</script></body></html>"
    ))
}

#[tokio::test]
#[ignore = "needs chromium"]
async fn the_page_installs_the_app_and_relays_bx24_calls_in_a_browser() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let bx24 = sim.bx24_script_url();
    let install = framed_page(&bx24, "BX24.installFinish();");
    let app = framed_page(
        &bx24,
        "BX24.fitWindow(); BX24.openPath('/crm/type/1220/details/' + BX24.getAuth().member_id + '/');",
    );
    let router = Router::new()
        .route(
            "/install",
            post(move || std::future::ready(install.clone())),
        )
        .route("/app", post(move || std::future::ready(app.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    sim.register_app(AppRegistration {
        install_url: format!("{base}/install"),
        app_url: format!("{base}/app"),
    });
    let portal = sim.add_portal().await.unwrap();

    let profile = tempfile::tempdir().unwrap();
    let _browser = Browser(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(portal.page_url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts"),
    );

    // The page installs, reloads into the app, and the app calls fitWindow and openPath.
    let opened = format!("/crm/type/1220/details/{}/", portal.member_id());
    let seen = |kind: &str| {
        portal
            .page_events()
            .into_iter()
            .find(|e| e["b24sim"] == kind)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen("openPath").is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(portal.is_installed(), "installFinish reached the portal");
    assert_eq!(
        seen("openPath").map(|e| e["path"].clone()),
        Some(json!(opened))
    );
    let height = seen("resize").and_then(|e| e["height"].as_u64());
    assert!(
        height.is_some_and(|h| h >= 900),
        "fitWindow measured the page: {height:?}"
    );
    assert!(seen("getInitData").is_some());
    sim.shutdown().await;
}

/// Ends the browser when the test ends, passed or not.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
