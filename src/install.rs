//! Installing: the installer frame (`POST /install`) and the event bindings it makes.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::platform::rest::{self, RestError};
use crate::platform::wire::{EventKind, Frame};
use crate::secret::Secret;
use crate::store::Installation;
use crate::ui::i18n::{Strings, strings};
use crate::ui::{Page, framed_page};

pub fn router() -> Router<AppState> {
    Router::new().route("/install", post(open_installer))
}

#[derive(Template)]
#[template(path = "install.html")]
struct InstallPage<'a> {
    page: Page<'a>,
    t: &'static Strings,
    bound: usize,
}

/// The installer frame: verify it, store the portal and its token chain, bind the events, and
/// answer a page that tells the portal the install is finished.
async fn open_installer(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> AppResult<Response> {
    let frame = crate::verify::parse_frame(query.as_deref(), &body)?;
    let (domain, client_endpoint) = portal_address(&frame, state.settings.allow_http)?;
    let info = crate::verify::verify_frame(&state, &frame, None).await?;
    tracing::info!(installed = ?info.installed, "installer frame verified");

    // Only configured servers are ever stored as a portal's OAuth server.
    let server_endpoint = frame
        .server_endpoint
        .as_deref()
        .and_then(|s| state.oauth.trusted(s))
        .unwrap_or(&state.settings.oauth_servers[0]);
    let access_token = Secret::new(frame.auth_id.clone());
    let install = Installation {
        member_id: frame.member_id.clone(),
        domain,
        client_endpoint,
        server_endpoint: format!("{server_endpoint}rest/"),
        lang: frame.lang.clone(),
        access_token: access_token.clone(),
        refresh_token: frame.refresh_id.clone().map(Secret::new),
        expires_in: frame.auth_expires.unwrap_or(3600),
        application_token: frame.application_token.clone().map(Secret::new),
    };
    let portal = state.store.record_installation(&install).await?;

    let bound = bind_events(&state, &portal.client_endpoint, &access_token)
        .await
        .map_err(|err| {
            tracing::warn!("binding events failed: {err}");
            AppError::BadGateway(
                "the portal refused to bind the app's events; open the installer again".into(),
            )
        })?;
    // The card tab is a courtesy: a portal without the `placement` scope still gets its log.
    let tabs = match bind_card_tabs(&state, &portal.client_endpoint, &access_token).await {
        Ok(tabs) => tabs,
        Err(err) => {
            tracing::warn!("binding card tabs failed: {err}");
            0
        }
    };
    tracing::info!(
        bound,
        tabs,
        status = portal.status.as_str(),
        "portal installed"
    );

    let page = InstallPage {
        page: Page::new(&state, &frame.lang),
        t: strings(&frame.lang),
        bound,
    };
    framed_page(&page, portal.origin().as_deref())
}

/// The portal's address from the frame. The frame is verified for its member id only, so the
/// address is checked for shape; a wrong one can only misdirect the installing portal's calls.
fn portal_address(frame: &Frame, allow_http: bool) -> AppResult<(String, String)> {
    let domain = frame
        .domain
        .as_deref()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| AppError::BadRequest("frame names no DOMAIN".into()))?;
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain.as_str(), None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    if !host_ok || !port_ok {
        return Err(AppError::BadRequest("frame DOMAIN is malformed".into()));
    }
    if !frame.https && !allow_http {
        return Err(AppError::BadRequest("portal must use https".into()));
    }

    let scheme = if frame.https { "https" } else { "http" };
    let endpoint = format!("{scheme}://{domain}/rest/");
    Ok((domain, endpoint))
}

/// Binds every event the app handles to `{PUBLIC_URL}events`, skipping those already bound,
/// so installing again never fails and never doubles a binding. Returns how many were new.
pub async fn bind_events(
    state: &AppState,
    endpoint: &str,
    token: &Secret,
) -> Result<usize, RestError> {
    let handler = state.settings.events_url();
    let answer = rest::call(&state.http, endpoint, "event.get", json!({}), token).await?;
    let bound: Vec<(String, String)> = answer["result"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|b| (text(&b["event"]), text(&b["handler"])))
                .collect()
        })
        .unwrap_or_default();

    let mut new = 0;
    for kind in EventKind::ALL {
        if bound
            .iter()
            .any(|(event, h)| event.eq_ignore_ascii_case(kind.name()) && *h == handler)
        {
            continue;
        }
        let params = json!({"event": kind.name(), "handler": handler});
        match rest::call(&state.http, endpoint, "event.bind", params, token).await {
            Ok(_) => new += 1,
            Err(err) if is_already_bound(&err) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(new)
}

/// Binds the smart-process card tab `CRM_DYNAMIC_{type}_DETAIL_TAB` of every type the portal
/// has now to `{PUBLIC_URL}app`, skipping those already bound. Returns how many were new.
pub async fn bind_card_tabs(
    state: &AppState,
    endpoint: &str,
    token: &Secret,
) -> Result<usize, RestError> {
    let handler = format!("{}app", state.settings.public_url);
    let types = rest::call(&state.http, endpoint, "crm.type.list", json!({}), token).await?;
    let placements = rest::call(&state.http, endpoint, "placement.get", json!({}), token).await?;
    let bound: Vec<(String, String)> = placements["result"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| (text(&p["placement"]), text(&p["handler"])))
                .collect()
        })
        .unwrap_or_default();

    let mut new = 0;
    for kind in types["result"]["types"].as_array().into_iter().flatten() {
        let Some(type_id) = kind["entityTypeId"]
            .as_i64()
            .or_else(|| text(&kind["entityTypeId"]).parse().ok())
        else {
            continue;
        };
        let placement = format!("CRM_DYNAMIC_{type_id}_DETAIL_TAB");
        if bound
            .iter()
            .any(|(p, h)| p.eq_ignore_ascii_case(&placement) && *h == handler)
        {
            continue;
        }
        let params = json!({"PLACEMENT": placement, "HANDLER": handler, "TITLE": "Activity log",
            "LANG_ALL": {"en": {"TITLE": "Activity log"}, "ru": {"TITLE": "Журнал изменений"}}});
        match rest::call(&state.http, endpoint, "placement.bind", params, token).await {
            Ok(_) => new += 1,
            Err(err) if is_already_bound(&err) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(new)
}

fn is_already_bound(err: &RestError) -> bool {
    matches!(err, RestError::Api { code, description, .. }
        if code == "ERROR_CORE" && description.to_ascii_lowercase().contains("already bind"))
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}
