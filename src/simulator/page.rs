//! What a browser sees of the simulated platform: the portal page that frames the app the way
//! Bitrix24 does (a form POST into a named iframe from another origin), the item pages links
//! open, and the BX24.js stand-in that talks to the page with `postMessage`.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::SimPortal;
use super::rest::PortalCtx;

pub(crate) fn routes() -> Router<PortalCtx> {
    Router::new()
        .route("/", get(portal_page))
        .route("/_sim/install-finish", post(install_finish))
        .route("/_sim/page-event", post(page_event))
        .route("/crm/type/{entity_type_id}/details/{id}/", get(item_page))
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ domain }} · Bitrix24 (simulated)</title>
<style>
  body { margin: 0; font: 14px/1.4 "Helvetica Neue", Arial, sans-serif; background: #eef2f4; }
  .menu { position: fixed; top: 0; bottom: 0; left: 0; width: 200px; padding-top: 64px;
          background: #1e2a38; color: #cdd6df; }
  .menu a { display: block; padding: 8px 20px; color: inherit; text-decoration: none; }
  .menu a.active { background: #2fc6f6; color: #fff; }
  header { margin-left: 200px; height: 56px; padding: 0 24px; background: #fff;
           display: flex; align-items: center; box-shadow: 0 1px 2px rgba(0,0,0,.1); }
  header .portal { font-weight: bold; margin-right: auto; }
  main { margin-left: 200px; padding: 16px 24px; }
  iframe { width: 100%; height: 600px; border: 0; background: #fff; border-radius: 6px; }
  .status { color: #6a737f; font-size: 12px; margin-top: 8px; }
</style>
</head>
<body>
<nav class="menu">
  <a href="#">Activity Stream</a>
  <a href="#">CRM</a>
  <a href="#">Smart processes</a>
  <a class="active" href="?user={{ user_id }}">Applications</a>
</nav>
<header>
  <span class="portal">{{ domain }}</span>
  <span>{{ heading }} · user {{ user_id }}</span>
</header>
<main>
  <iframe name="app" id="app-frame" data-init="{{ init_json }}"></iframe>
  <form id="frame-form" method="post" target="app" action="{{ action }}">
  {%- for (name, value) in fields %}
    <input type="hidden" name="{{ name }}" value="{{ value }}">
  {%- endfor %}
  </form>
  <div class="status">Opened path: <span id="opened-path"></span></div>
</main>
<script>
(function () {
  var frame = document.getElementById('app-frame');
  var init = JSON.parse(frame.getAttribute('data-init'));
  var opened = document.getElementById('opened-path');
  // Every call from the frame is also reported, so tests can see what reached the portal.
  function report(m) {
    var headers = { 'Content-Type': 'application/json' };
    fetch('/_sim/page-event', { method: 'POST', headers: headers, body: JSON.stringify(m) });
  }
  window.addEventListener('message', function (event) {
    if (event.source !== frame.contentWindow) return;
    var m = event.data || {};
    if (typeof m.b24sim !== 'string') return;
    report(m);
    if (m.b24sim === 'getInitData') {
      frame.contentWindow.postMessage({ b24sim: 'initData', data: init }, '*');
    } else if (m.b24sim === 'installFinish') {
      fetch('/_sim/install-finish', { method: 'POST' }).then(function () { location.reload(); });
    } else if (m.b24sim === 'resize') {
      if (m.height) frame.style.height = parseInt(m.height, 10) + 'px';
    } else if (m.b24sim === 'openPath') {
      opened.textContent = String(m.path);
    }
  });
  document.getElementById('frame-form').submit();
})();
</script>
</body>
</html>
"##
)]
struct PortalPage {
    domain: String,
    heading: &'static str,
    user_id: u64,
    action: String,
    fields: Vec<(String, String)>,
    init_json: String,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r##"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }}</title></head>
<body>
<h1>{{ type_title }}: {{ title }}</h1>
<p>Item {{ id }} of type {{ entity_type_id }} on {{ domain }}.</p>
</body>
</html>
"##
)]
struct ItemPage {
    domain: String,
    entity_type_id: u64,
    id: u64,
    type_title: String,
    title: String,
}

/// `GET /?user=1&placement=DEFAULT&options={}`: frames the installer until `installFinish`,
/// the app afterwards, with a fresh frame POST each time.
async fn portal_page(
    State(ctx): State<PortalCtx>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let portal = SimPortal::new(ctx.sim.clone(), ctx.portal);
    let user_id = query.get("user").and_then(|u| u.parse().ok()).unwrap_or(1);
    let placement = query.get("placement").map_or("DEFAULT", String::as_str);
    let options = match query
        .get("options")
        .map(|o| serde_json::from_str::<Value>(o))
    {
        None => json!({}),
        Some(Ok(options)) => options,
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "options must be JSON").into_response(),
    };

    let installed = portal.is_installed();
    let target = match portal.page_target(user_id) {
        Ok(target) => target,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let frame = portal.frame(user_id, placement, options);

    let fields = frame.form_pairs();
    let mut init: Map<String, Value> = form_urlencoded::parse(frame.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), json!(v)))
        .collect();
    init.extend(fields.iter().map(|(k, v)| (k.clone(), json!(v))));
    let separator = if target.contains('?') { '&' } else { '?' };

    let page = PortalPage {
        domain: portal.domain(),
        heading: if installed {
            "Application"
        } else {
            "Installing the application"
        },
        user_id,
        action: format!("{target}{separator}{}", frame.query),
        fields,
        init_json: Value::Object(init).to_string(),
    };
    render(&page)
}

/// What the page calls when the framed installer runs `BX24.installFinish()`.
async fn install_finish(State(ctx): State<PortalCtx>) -> Response {
    let portal = SimPortal::new(ctx.sim.clone(), ctx.portal);
    match portal.finish_install().await {
        Ok(deliveries) => {
            let sent: Vec<Value> = deliveries
                .iter()
                .map(|d| json!({ "handler": d.handler, "event": d.event, "status": d.status }))
                .collect();
            axum::Json(json!({ "installed": true, "deliveries": sent })).into_response()
        }
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

/// A `postMessage` call the page received from the frame.
async fn page_event(
    State(ctx): State<PortalCtx>,
    axum::Json(event): axum::Json<Value>,
) -> StatusCode {
    ctx.sim.world().portals[ctx.portal].page_events.push(event);
    StatusCode::NO_CONTENT
}

/// Where the app's links into the portal lead.
async fn item_page(
    State(ctx): State<PortalCtx>,
    Path((entity_type_id, id)): Path<(u64, u64)>,
) -> Response {
    let found = {
        let world = ctx.sim.world();
        let portal = &world.portals[ctx.portal];
        portal.crm.item(entity_type_id, id).map(|item| ItemPage {
            domain: portal.domain(),
            entity_type_id,
            id,
            type_title: portal
                .crm
                .type_title(entity_type_id)
                .unwrap_or("Smart process")
                .to_string(),
            title: item
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    };

    match found {
        Some(page) => render(&page),
        None => (
            StatusCode::NOT_FOUND,
            Html("<h1>The element was not found</h1>"),
        )
            .into_response(),
    }
}

fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a simulator page");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A stand-in for `//api.bitrix24.com/api/v1/`: the same calls, talking to the simulated
/// portal page instead of a real one.
const BX24_JS: &str = r#"/* BX24.js stand-in of the b24-activity portal simulator. */
(function () {
  var framed = window.parent && window.parent !== window;
  var initData = null;
  var ready = false;
  var waiting = [];

  function send(message) {
    if (framed) window.parent.postMessage(message, '*');
  }

  function becomeReady() {
    if (ready) return;
    ready = true;
    var callbacks = waiting;
    waiting = [];
    callbacks.forEach(function (cb) { try { cb(); } catch (e) { console.error(e); } });
  }

  function options() {
    var raw = initData && initData.PLACEMENT_OPTIONS;
    if (!raw) return {};
    try {
      var parsed = JSON.parse(raw);
      return Array.isArray(parsed) ? {} : parsed;
    } catch (e) {
      return {};
    }
  }

  window.addEventListener('message', function (event) {
    var m = event.data || {};
    if (m.b24sim === 'initData') {
      initData = m.data;
      becomeReady();
    }
  });

  window.BX24 = {
    init: function (callback) {
      if (typeof callback !== 'function') return;
      if (ready) setTimeout(callback, 0); else waiting.push(callback);
    },
    installFinish: function () { send({ b24sim: 'installFinish' }); },
    fitWindow: function (callback) {
      send({ b24sim: 'resize', width: '100%', height: document.documentElement.scrollHeight });
      if (typeof callback === 'function') setTimeout(callback, 0);
    },
    resizeWindow: function (width, height, callback) {
      send({ b24sim: 'resize', width: width, height: height });
      if (typeof callback === 'function') setTimeout(callback, 0);
    },
    openPath: function (path, callback) {
      send({ b24sim: 'openPath', path: path });
      if (typeof callback !== 'function') return;
      setTimeout(function () { callback({ result: 'opened' }); }, 0);
    },
    placement: {
      info: function () {
        return { placement: (initData && initData.PLACEMENT) || 'DEFAULT', options: options() };
      }
    },
    getAuth: function () {
      if (!initData || !initData.AUTH_ID) return false;
      return {
        access_token: initData.AUTH_ID,
        refresh_token: initData.REFRESH_ID,
        expires_in: Number(initData.AUTH_EXPIRES),
        domain: initData.DOMAIN,
        member_id: initData.member_id
      };
    },
    getDomain: function () { return initData ? initData.DOMAIN : location.host; },
    getLang: function () { return initData ? initData.LANG : 'en'; }
  };

  // Without a simulated portal around (a page opened on its own), init still calls back.
  send({ b24sim: 'getInitData' });
  setTimeout(becomeReady, framed ? 300 : 0);
})();
"#;

pub(crate) async fn bx24_js() -> Response {
    let content_type = [(
        header::CONTENT_TYPE,
        "application/javascript; charset=utf-8",
    )];
    (content_type, BX24_JS).into_response()
}
