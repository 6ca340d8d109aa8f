//! The pages shown inside the portal and what they share: framing headers, the BX24 script,
//! the language, static assets. The log itself is in `log`, its live updates in `live`, the
//! CSV download in `export`.

pub mod export;
pub mod i18n;
pub mod live;
pub mod log;
pub mod session;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::{AppError, AppResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(log::router())
        .merge(live::router())
        .merge(export::router())
        .route("/", get(landing))
        .route("/static/app.css", get(stylesheet))
        .route("/static/app.js", get(script))
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

/// What someone who opens the app's address outside a portal sees.
async fn landing() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "b24-activity is running. It is used from inside a Bitrix24 portal: install it from the \
         marketplace, then open it from the portal's applications.\n",
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/app.js"),
    )
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
