//! The pages shown inside the portal: the activity log (`POST /app`) and what every framed
//! page shares (framing headers, the BX24 script, static assets).

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::store::{ActivityEntry, PortalStatus};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app", post(open_app))
        .route("/static/app.css", get(stylesheet))
}

/// What every page template needs.
pub struct Page<'a> {
    pub lang: &'a str,
    pub bx24_script: &'a str,
}

impl<'a> Page<'a> {
    pub fn new(state: &'a AppState, lang: &'a str) -> Page<'a> {
        let lang = if lang.eq_ignore_ascii_case("ru") {
            "ru"
        } else {
            "en"
        };
        Page {
            lang,
            bx24_script: &state.settings.bx24_script_url,
        }
    }
}

#[derive(Template)]
#[template(path = "app.html")]
struct LogPage<'a> {
    page: Page<'a>,
    /// The portal's state, for the banners.
    status: &'static str,
    status_reason: Option<String>,
    /// Events stored but not yet in the log, and why the oldest waits.
    waiting: i64,
    waiting_reason: Option<String>,
    entries: Vec<EntryView>,
}

struct EntryView {
    when: String,
    action: String,
    entity_type_id: i64,
    type_label: String,
    item_id: i64,
    item_label: String,
    item_url: String,
    who: String,
    note: &'static str,
    changes: Vec<ChangeView>,
}

struct ChangeView {
    label: String,
    old: String,
    new: String,
}

impl EntryView {
    fn new(entry: ActivityEntry, portal_origin: &str) -> EntryView {
        let changes = entry
            .changes
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|c| ChangeView {
                        label: c["label"].as_str().unwrap_or_default().to_owned(),
                        old: c["old"].as_str().unwrap_or_default().to_owned(),
                        new: c["new"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let note = match entry.outcome.as_str() {
            "first_seen" => "first seen: its current state is the starting point",
            "collapsed" => "changed again moments later: see the next entry",
            "deleted" => "the item is deleted",
            "inaccessible" => "the item is not accessible to the app",
            _ => "",
        };
        EntryView {
            when: format_time(entry.occurred_at),
            action: entry.action,
            entity_type_id: entry.entity_type_id,
            type_label: entry
                .type_title
                .unwrap_or_else(|| format!("type {}", entry.entity_type_id)),
            item_id: entry.item_id,
            item_label: entry
                .item_title
                .unwrap_or_else(|| format!("#{}", entry.item_id)),
            item_url: format!(
                "{portal_origin}/crm/type/{}/details/{}/",
                entry.entity_type_id, entry.item_id
            ),
            who: match (entry.user_name, entry.user_id) {
                (Some(name), _) => name,
                (None, Some(id)) => format!("user {id}"),
                (None, None) => "automation".to_owned(),
            },
            note,
            changes,
        }
    }
}

/// The application frame: verify it, then show the portal's log, newest first.
async fn open_app(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> AppResult<Response> {
    let frame = crate::verify::parse_frame(query.as_deref(), &body)?;
    let portal = state
        .store
        .find_portal(&frame.member_id)
        .await?
        .filter(|p| p.status != PortalStatus::Removed)
        .ok_or_else(|| AppError::Forbidden("the app is not installed on this portal".into()))?;
    crate::verify::verify_frame(&state, &frame, Some(&portal.server_endpoint)).await?;

    let entries = state.store.recent_activity(portal.id, None, 50).await?;
    let (waiting, waiting_reason) = state.store.pending_events(portal.id).await?;
    let origin = portal.origin().unwrap_or_default();
    let page = LogPage {
        page: Page::new(&state, &frame.lang),
        status: portal.status.as_str(),
        status_reason: portal.status_reason.clone(),
        waiting,
        waiting_reason,
        entries: entries
            .into_iter()
            .map(|e| EntryView::new(e, &origin))
            .collect(),
    };
    framed_page(&page, portal.origin().as_deref())
}

/// Renders a page that only `frame_origin` may frame.
pub fn framed_page(template: &impl Template, frame_origin: Option<&str>) -> AppResult<Response> {
    let html = template
        .render()
        .map_err(|err| AppError::Internal(err.into()))?;
    let ancestors = match frame_origin {
        Some(origin) => format!("frame-ancestors {origin}"),
        None => "frame-ancestors 'none'".to_owned(),
    };

    let mut response = axum::response::Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&ancestors).map_err(|err| AppError::Internal(err.into()))?,
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/app.css"),
    )
}

/// `2026-12-04 14:03:05 UTC`
pub fn format_time(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .map(|t| format!("{t} UTC"))
        .unwrap_or_default()
}
