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
use crate::store::{EventRecord, PortalStatus};

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
    entries: Vec<EntryView>,
}

struct EntryView {
    when: String,
    action: String,
    entity_type_id: i64,
    item_id: i64,
    user: String,
}

impl From<EventRecord> for EntryView {
    fn from(event: EventRecord) -> EntryView {
        EntryView {
            when: format_time(event.event_ts),
            action: event.action,
            entity_type_id: event.entity_type_id,
            item_id: event.item_id,
            user: event
                .user_id
                .map(|id| id.to_string())
                .unwrap_or_else(|| "robot".to_owned()),
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

    let events = state.store.recent_events(portal.id, None, 50).await?;
    let page = LogPage {
        page: Page::new(&state, &frame.lang),
        status: portal.status.as_str(),
        status_reason: portal.status_reason.clone(),
        entries: events.into_iter().map(EntryView::from).collect(),
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
