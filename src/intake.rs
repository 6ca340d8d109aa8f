//! Event intake (`POST /events`): check, store durably, answer.
//!
//! The platform never retries, so an accepted event must be on disk before the 200 goes out,
//! and nothing slow may happen here: item events do no REST work at all. Every refusal is a
//! 4xx with a short reason and stores nothing. Storing is a group commit (the store's
//! `writer`), and a portal whose token passed moments ago is not looked up again (`recent`):
//! both so that a burst costs little more per event than answering it.

mod recent;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;

use crate::app::{AppState, record_portal};
use crate::error::{AppError, AppResult};
use crate::platform::wire::{self, Event, EventKind, EventRejection};
use crate::secret::Secret;
use crate::store::{Installation, NewEvent, Portal, PortalId, now};
use recent::RecentPortals;

/// Real event bodies are well under 2 KiB.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/events", post(receive_event))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(Extension(RecentPortals::default()))
}

async fn receive_event(
    State(state): State<AppState>,
    Extension(recent): Extension<RecentPortals>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<(StatusCode, &'static str)> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let tree = wire::parse_body(&body, is_json)
        .map_err(|err| AppError::BadRequest(format!("malformed body: {err}")))?;
    let event = Event::from_tree(&tree).map_err(|err| match err {
        EventRejection::UnknownEvent => AppError::BadRequest("unsupported event".into()),
        EventRejection::Wire(err) => AppError::BadRequest(format!("malformed body: {err}")),
    })?;
    let member_id = event.auth.member_id.as_str();
    record_portal(member_id);

    // In a burst, the portal and token were checked against the database moments ago.
    let item_event = !matches!(event.kind, EventKind::AppInstall | EventKind::AppUninstall);
    if item_event
        && let Some(presented) = event.auth.application_token.as_deref()
        && let Some(portal) = recent.accepted(member_id, presented)
    {
        return store_item_event(&state, portal, &event).await;
    }

    let seen = recent.generation();
    let portal = state.store.find_portal(member_id).await?;
    if event.kind == EventKind::AppInstall {
        let answer = app_installed(&state, portal, &event).await;
        recent.forget(member_id);
        return answer;
    }

    let portal = portal.ok_or_else(|| AppError::Forbidden("unknown portal".into()))?;
    if !portal.accepts_events() {
        return Err(AppError::Gone("the app is removed from this portal".into()));
    }
    let presented = event
        .auth
        .application_token
        .as_deref()
        .ok_or_else(|| AppError::Unauthorized("missing application token".into()))?;
    if !portal.application_token_matches(&state.store, presented) {
        return Err(AppError::Forbidden("application token mismatch".into()));
    }

    if event.kind == EventKind::AppUninstall {
        let answer = app_uninstalled(&state, &portal, event.clean).await;
        recent.forget(member_id);
        return answer;
    }
    recent.remember(seen, member_id, portal.id, presented);
    store_item_event(&state, portal.id, &event).await
}

/// Stores an item event of a portal whose token checked out, then wakes enrichment.
async fn store_item_event(
    state: &AppState,
    portal: PortalId,
    event: &Event,
) -> AppResult<(StatusCode, &'static str)> {
    let Some((entity_type_id, item_id)) = event.item else {
        return Err(AppError::BadRequest("malformed body: no item".into()));
    };
    let new = new_event(portal, event, entity_type_id, item_id);
    state.store.insert_event(new).await?;
    state.wake.notify();
    tracing::debug!(entity_type_id, item_id, "item event stored");
    Ok((StatusCode::OK, "stored"))
}

fn new_event(portal: PortalId, event: &Event, entity_type_id: i64, item_id: i64) -> NewEvent {
    let kind = event.kind;
    let event_ts = event.ts.unwrap_or_else(now);
    // Without the platform's own id, an event is identified by what it says.
    let dedup_key = match &event.event_id {
        Some(id) => format!("id:{id}"),
        None => format!(
            "{}:{entity_type_id}:{item_id}:{event_ts}:{}",
            kind.action(),
            event.auth.user_id.unwrap_or(0)
        ),
    };
    NewEvent {
        portal_id: portal,
        action: kind.action(),
        entity_type_id,
        item_id,
        user_id: event.auth.user_id,
        event_ts,
        dedup_key,
    }
}

/// ONAPPINSTALL brings the application token. It cannot be checked against a stored token
/// (there may be none yet), so its access token must check out with a trusted OAuth server.
async fn app_installed(
    state: &AppState,
    portal: Option<Portal>,
    event: &Event,
) -> AppResult<(StatusCode, &'static str)> {
    let auth = &event.auth;
    let (Some(access), Some(application)) = (&auth.access_token, &auth.application_token) else {
        return Err(AppError::Unauthorized(
            "install event without tokens".into(),
        ));
    };
    let access = Secret::new(access.clone());
    state
        .oauth
        .verify(
            &state.http,
            auth.server_endpoint.as_deref(),
            &access,
            &auth.member_id,
        )
        .await
        .map_err(crate::verify::verify_failure)?;

    let server = auth
        .server_endpoint
        .as_deref()
        .and_then(|s| state.oauth.trusted(s));
    let server_endpoint = match (server, &portal) {
        (Some(server), _) => format!("{server}rest/"),
        (None, Some(p)) => p.server_endpoint.clone(),
        (None, None) => format!("{}rest/", state.settings.oauth_servers[0]),
    };
    // The stored address came from the verified installer frame; keep it when there is one.
    let (domain, client_endpoint) = match &portal {
        Some(p) => (p.domain.clone(), p.client_endpoint.clone()),
        None => endpoint_from_event(state, event)?,
    };
    let install = Installation {
        member_id: auth.member_id.clone(),
        domain,
        client_endpoint,
        server_endpoint,
        lang: portal
            .as_ref()
            .map(|p| p.lang.clone())
            .unwrap_or_else(|| "en".to_owned()),
        access_token: access,
        refresh_token: auth.refresh_token.clone().map(Secret::new),
        expires_in: auth.expires_in.unwrap_or(3600),
        application_token: Some(Secret::new(application.clone())),
    };
    let portal = state.store.record_installation(&install).await?;
    tracing::info!(status = portal.status.as_str(), "install event accepted");
    Ok((StatusCode::OK, "installed"))
}

fn endpoint_from_event(state: &AppState, event: &Event) -> AppResult<(String, String)> {
    let endpoint = event
        .auth
        .client_endpoint
        .as_deref()
        .and_then(|e| url::Url::parse(e).ok())
        .filter(|u| u.scheme() == "https" || (u.scheme() == "http" && state.settings.allow_http))
        .ok_or_else(|| AppError::BadRequest("malformed body: auth[client_endpoint]".into()))?;
    let domain = match (endpoint.host_str(), endpoint.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => {
            return Err(AppError::BadRequest(
                "malformed body: auth[client_endpoint]".into(),
            ));
        }
    };
    Ok((domain, endpoint.to_string()))
}

/// ONAPPUNINSTALL: every token stops working now; with CLEAN the portal's data goes too.
async fn app_uninstalled(
    state: &AppState,
    portal: &Portal,
    clean: bool,
) -> AppResult<(StatusCode, &'static str)> {
    if clean {
        state.store.purge_portal(portal.id).await?;
    } else {
        state.store.mark_removed(portal.id).await?;
    }
    tracing::info!(clean, "portal uninstalled");
    Ok((StatusCode::OK, "uninstalled"))
}
