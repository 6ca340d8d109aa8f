//! The activity log as people read it: the application frame (`POST /app`, also the card tab
//! of a smart-process item), then paging and filters (`GET /log`), new rows for live updates
//! (`GET /log/rows`) inside the app's own session.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::i18n::{Strings, field_label, strings};
use super::session::{InSession, Session};
use super::{Page, framed_page};
use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::platform::rest;
use crate::secret::Secret;
use crate::store::{ActivityEntry, Cursor, LogFilter, Portal, PortalStatus};

/// Entries on one page.
pub const PAGE_SIZE: i64 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app", post(open_app))
        .route("/log", get(browse))
        .route("/log/rows", get(new_rows))
}

/// Filters and position as they travel in links and forms. Every field is text so that a
/// half-filled form is read, not refused.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct LogParams {
    #[serde(default, rename = "type")]
    pub entity_type: String,
    #[serde(default)]
    pub item: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub before: String,
    #[serde(default)]
    pub after: String,
    /// The browser's `Date.getTimezoneOffset()`, so dates mean the reader's days.
    #[serde(default)]
    pub tz: String,
    /// `1` on the card tab: one item's history.
    #[serde(default)]
    pub tab: String,
}

impl LogParams {
    pub fn filter(&self) -> LogFilter {
        let int = |text: &str| text.trim().parse::<i64>().ok().filter(|n| *n >= 0);
        let offset = self.tz.trim().parse::<i64>().unwrap_or(0).clamp(-900, 900) * 60;
        LogFilter {
            entity_type_id: int(&self.entity_type),
            item_id: int(&self.item),
            user_id: int(&self.user),
            from: day_start(&self.from).map(|t| t + offset),
            to: day_start(&self.to).map(|t| t + 86_400 + offset),
            search: Some(self.q.trim().to_owned())
                .filter(|q| !q.is_empty() && q.chars().count() <= 200),
        }
    }

    fn cursor(&self) -> Cursor {
        match (
            self.before.trim().parse::<i64>(),
            self.after.trim().parse::<i64>(),
        ) {
            (Ok(id), _) => Cursor::Before(id),
            (_, Ok(id)) => Cursor::After(id),
            _ => Cursor::Newest,
        }
    }

    /// The query string for a link to this view, with `s` and a new position.
    pub fn link(&self, token: &str, position: Option<(&str, i64)>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("s", token);
        for (key, value) in [
            ("type", &self.entity_type),
            ("item", &self.item),
            ("user", &self.user),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.q),
            ("tz", &self.tz),
            ("tab", &self.tab),
        ] {
            if !value.trim().is_empty() {
                query.append_pair(key, value.trim());
            }
        }
        if let Some((key, id)) = position {
            query.append_pair(key, &id.to_string());
        }
        query.finish()
    }
}

/// Unix seconds of 00:00 UTC on a `YYYY-MM-DD` day.
fn day_start(text: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text.trim(), &format).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

#[derive(Template)]
#[template(path = "app.html")]
struct LogPage<'a> {
    page: Page<'a>,
    t: &'static Strings,
    token: String,
    status: &'static str,
    status_reason: Option<String>,
    waiting: i64,
    waiting_reason: Option<String>,
    entries: Vec<EntryView>,
    params: LogParams,
    filtered: bool,
    item_view: bool,
    types: Vec<(i64, String)>,
    older: Option<String>,
    newer: Option<String>,
    newest: Option<String>,
    export: String,
    /// Set on the newest page only: where live updates come from.
    live: Option<String>,
    rows: String,
    newest_id: i64,
}

#[derive(Template)]
#[template(path = "rows.html")]
struct Rows<'a> {
    entries: &'a [EntryView],
}

pub struct EntryView {
    pub id: i64,
    pub when: String,
    pub when_unix: i64,
    pub action: String,
    pub action_label: &'static str,
    pub entity_type_id: i64,
    pub type_label: String,
    pub item_id: i64,
    pub item_label: String,
    pub item_url: String,
    pub item_path: String,
    pub who: String,
    pub who_link: Option<String>,
    pub note: &'static str,
    pub changes: Vec<ChangeView>,
}

pub struct ChangeView {
    pub label: String,
    pub old: String,
    pub new: String,
}

impl EntryView {
    pub fn new(
        entry: ActivityEntry,
        portal_origin: &str,
        t: &'static Strings,
        user_link: Option<String>,
    ) -> EntryView {
        let changes = entry
            .changes
            .as_array()
            .map(|list| list.iter().map(|c| change_view(c, t.code)).collect())
            .unwrap_or_default();
        let item_path = format!(
            "/crm/type/{}/details/{}/",
            entry.entity_type_id, entry.item_id
        );
        EntryView {
            id: entry.id,
            when: super::format_time(entry.occurred_at),
            when_unix: entry.occurred_at,
            action_label: match entry.action.as_str() {
                "add" => t.action_add,
                "delete" => t.action_delete,
                _ => t.action_update,
            },
            action: entry.action,
            entity_type_id: entry.entity_type_id,
            type_label: entry
                .type_title
                .unwrap_or_else(|| format!("{} {}", t.type_prefix, entry.entity_type_id)),
            item_id: entry.item_id,
            item_label: entry
                .item_title
                .unwrap_or_else(|| format!("#{}", entry.item_id)),
            item_url: format!("{portal_origin}{item_path}"),
            item_path,
            who: match (entry.user_name, entry.user_id) {
                (Some(name), _) => name,
                (None, Some(id)) => format!("{} {id}", t.user_prefix),
                (None, None) => t.automation.to_owned(),
            },
            who_link: entry.user_id.and(user_link),
            note: match entry.outcome.as_str() {
                "first_seen" => t.note_first_seen,
                "collapsed" => t.note_collapsed,
                "deleted" => t.note_deleted,
                "inaccessible" => t.note_inaccessible,
                _ => "",
            },
            changes,
        }
    }
}

fn change_view(change: &Value, lang: &str) -> ChangeView {
    let text = |key: &str| change[key].as_str().unwrap_or_default().to_owned();
    ChangeView {
        label: field_label(&text("field"), lang),
        old: text("old"),
        new: text("new"),
    }
}

/// The application frame: verify it, open a session, show the log (or, on a smart-process
/// card tab, the history of that item).
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

    let user_id = current_user(&state, &portal, &frame.auth_id).await;
    let session = Session::issue(&state, &portal, user_id, &frame.lang);
    let mut params = LogParams::default();
    if let Some(type_id) = card_tab_type(&frame.placement) {
        params.entity_type = type_id.to_string();
        params.item = frame.placement_options["ID"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                frame.placement_options["ID"]
                    .as_i64()
                    .map(|id| id.to_string())
                    .unwrap_or_default()
            });
        params.tab = "1".into();
    }
    render_log(&state, &session, &portal, params).await
}

/// Paging and filters inside a session.
async fn browse(
    State(state): State<AppState>,
    session: InSession,
    Query(params): Query<LogParams>,
) -> AppResult<Response> {
    render_log(&state, &session.session, &session.portal, params).await
}

/// Rows newer than `after`, for a page that is open while entries arrive.
async fn new_rows(
    State(state): State<AppState>,
    session: InSession,
    Query(params): Query<LogParams>,
) -> AppResult<Response> {
    let after = params
        .after
        .trim()
        .parse::<i64>()
        .map_err(|_| AppError::BadRequest("after is required".into()))?;
    let t = strings(&session.session.lang);
    let origin = session.portal.origin().unwrap_or_default();
    let entries = state
        .store
        .log_page(
            session.portal.id,
            &params.filter(),
            Cursor::After(after),
            PAGE_SIZE,
        )
        .await?;
    let newest = entries.first().map(|e| e.id).unwrap_or(after);
    let views: Vec<EntryView> = entries
        .into_iter()
        .map(|e| {
            let link = e.user_id.map(|id| user_link(&params, &session.token, id));
            EntryView::new(e, &origin, t, link)
        })
        .collect();

    let html = Rows { entries: &views }
        .render()
        .map_err(|e| AppError::Internal(e.into()))?;
    let mut response = axum::response::Html(html).into_response();
    let newest =
        HeaderValue::from_str(&newest.to_string()).map_err(|e| AppError::Internal(e.into()))?;
    response.headers_mut().insert("x-newest-id", newest);
    Ok(response)
}

async fn render_log(
    state: &AppState,
    session: &Session,
    portal: &Portal,
    params: LogParams,
) -> AppResult<Response> {
    let t = strings(&session.lang);
    let token = session.token(state);
    let filter = params.filter();
    let cursor = params.cursor();

    let mut entries = state
        .store
        .log_page(portal.id, &filter, cursor, PAGE_SIZE + 1)
        .await?;
    let more = entries.len() as i64 > PAGE_SIZE;
    if more {
        match cursor {
            Cursor::After(_) => entries.remove(0),
            _ => entries.pop().expect("more than a page"),
        };
    }
    let (first, last) = (entries.first().map(|e| e.id), entries.last().map(|e| e.id));
    let older = match (cursor, more, last) {
        (Cursor::After(_), _, Some(last)) | (_, true, Some(last)) => {
            Some(params.link(&token, Some(("before", last))))
        }
        _ => None,
    };
    let newer = match (cursor, more, first) {
        (Cursor::Before(_), _, Some(first)) | (Cursor::After(_), true, Some(first)) => {
            Some(params.link(&token, Some(("after", first))))
        }
        _ => None,
    };
    let at_newest = cursor == Cursor::Newest || (matches!(cursor, Cursor::After(_)) && !more);
    let (waiting, waiting_reason) = state.store.pending_events(portal.id).await?;
    let origin = portal.origin().unwrap_or_default();
    let newest_id = first.unwrap_or(0);

    let views = entries
        .into_iter()
        .map(|e| {
            let link = e.user_id.map(|id| user_link(&params, &token, id));
            EntryView::new(e, &origin, t, link)
        })
        .collect();
    let page = LogPage {
        page: Page::new(state, &session.lang),
        t,
        status: portal.status.as_str(),
        status_reason: portal.status_reason.clone(),
        waiting,
        waiting_reason,
        entries: views,
        filtered: filter != LogFilter::default(),
        item_view: params.tab == "1",
        types: state.store.known_types(portal.id).await?,
        older,
        newer,
        newest: (!at_newest).then(|| params.link(&token, None)),
        export: params.link(&token, None),
        live: at_newest.then(|| params.link(&token, None)),
        rows: params.link(&token, None),
        newest_id,
        params,
        token,
    };
    framed_page(&page, portal.origin().as_deref())
}

fn user_link(params: &LogParams, token: &str, user_id: i64) -> String {
    let mut by_user = params.clone();
    by_user.user = user_id.to_string();
    by_user.link(token, None)
}

/// `CRM_DYNAMIC_1220_DETAIL_TAB` -> 1220.
pub fn card_tab_type(placement: &str) -> Option<i64> {
    placement
        .strip_prefix("CRM_DYNAMIC_")?
        .strip_suffix("_DETAIL_TAB")?
        .parse()
        .ok()
}

/// Who opened the frame, by asking the portal with the frame's own token; 0 when unknown.
async fn current_user(state: &AppState, portal: &Portal, auth_id: &str) -> i64 {
    let token = Secret::new(auth_id.to_owned());
    match rest::call(
        &state.http,
        &portal.client_endpoint,
        "user.current",
        json!({}),
        &token,
    )
    .await
    {
        Ok(answer) => match &answer["result"]["ID"] {
            Value::String(id) => id.parse().unwrap_or(0),
            Value::Number(id) => id.as_i64().unwrap_or(0),
            _ => 0,
        },
        Err(err) => {
            tracing::debug!("user.current failed: {err}");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_tab_placements_name_their_type() {
        assert_eq!(card_tab_type("CRM_DYNAMIC_1220_DETAIL_TAB"), Some(1220));
        assert_eq!(card_tab_type("DEFAULT"), None);
        assert_eq!(card_tab_type("CRM_DYNAMIC_X_DETAIL_TAB"), None);
    }

    #[test]
    fn filters_read_half_filled_forms() {
        let params = LogParams {
            entity_type: "1220".into(),
            item: "abc".into(),
            from: "2026-12-04".into(),
            to: "2026-12-04".into(),
            tz: "-180".into(),
            q: "  ACME ".into(),
            ..Default::default()
        };
        let filter = params.filter();
        assert_eq!(filter.entity_type_id, Some(1220));
        assert_eq!(filter.item_id, None);
        let midnight_utc = 1_796_342_400;
        assert_eq!(
            filter.from,
            Some(midnight_utc - 3 * 3600),
            "the reader's day, UTC+3"
        );
        assert_eq!(filter.to, Some(midnight_utc + 86_400 - 3 * 3600));
        assert_eq!(filter.search.as_deref(), Some("ACME"));
    }

    #[test]
    fn links_carry_the_session_and_the_filters() {
        let params = LogParams {
            entity_type: "1220".into(),
            q: "a b".into(),
            ..Default::default()
        };
        assert_eq!(
            params.link("tok", Some(("before", 7))),
            "s=tok&type=1220&q=a+b&before=7"
        );
        assert_eq!(params.cursor(), Cursor::Newest);
    }
}
