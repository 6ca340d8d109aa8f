//! The filtered log as a CSV download, streamed page by page so memory stays flat however
//! long the log is.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::i18n::{field_label, strings};
use super::log::LogParams;
use super::session::InSession;
use crate::app::AppState;
use crate::store::{ActivityEntry, Cursor};

/// Rows read per query while streaming.
const CHUNK: i64 = 1000;
/// A download stops here; narrower filters get the rest.
const MAX_ROWS: usize = 500_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/log/export.csv", get(export))
}

async fn export(
    State(state): State<AppState>,
    session: InSession,
    Query(params): Query<LogParams>,
) -> Response {
    let filter = params.filter();
    let portal = session.portal.id;
    let lang = session.session.lang.clone();
    let header_row = csv_row(&[
        "time_utc", "type_id", "type", "item_id", "item", "action", "user_id", "user", "changes",
    ]);

    struct Progress {
        cursor: Cursor,
        written: usize,
        done: bool,
    }
    let start = Progress {
        cursor: Cursor::Newest,
        written: 0,
        done: false,
    };
    let rows = futures_util::stream::unfold(start, move |mut progress| {
        let (state, filter, lang) = (state.clone(), filter.clone(), lang.clone());
        async move {
            if progress.done || progress.written >= MAX_ROWS {
                return None;
            }
            let page = match state
                .store
                .log_page(portal, &filter, progress.cursor, CHUNK)
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::error!("export failed: {err:#}");
                    return Some((
                        Err(std::io::Error::other("export failed")),
                        Progress {
                            done: true,
                            ..progress
                        },
                    ));
                }
            };
            progress.done = (page.len() as i64) < CHUNK;
            let last = page.last()?;
            progress.cursor = Cursor::Before(last.id);
            progress.written += page.len();
            let text: String = page.iter().map(|entry| entry_row(entry, &lang)).collect();
            Some((Ok(Bytes::from(text)), progress))
        }
    });
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(header_row))]);
    let body = Body::from_stream(futures_util::StreamExt::chain(body, rows));

    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"activity-log.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn entry_row(entry: &ActivityEntry, lang: &str) -> String {
    let t = strings(lang);
    let time = time::OffsetDateTime::from_unix_timestamp(entry.occurred_at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let changes: Vec<String> = entry
        .changes
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| {
                    let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                    format!(
                        "{}: {} -> {}",
                        field_label(&text("field"), lang),
                        text("old"),
                        text("new")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let user = match (&entry.user_name, entry.user_id) {
        (Some(name), _) => name.clone(),
        (None, Some(id)) => format!("{} {id}", t.user_prefix),
        (None, None) => t.automation.to_owned(),
    };
    csv_row(&[
        &time,
        &entry.entity_type_id.to_string(),
        entry.type_title.as_deref().unwrap_or_default(),
        &entry.item_id.to_string(),
        entry.item_title.as_deref().unwrap_or_default(),
        &entry.action,
        &entry.user_id.map(|id| id.to_string()).unwrap_or_default(),
        &user,
        &changes.join("; "),
    ])
}

/// One CSV line. Cells are quoted when needed; a cell a spreadsheet would run as a formula
/// gets a leading apostrophe.
fn csv_row(cells: &[&str]) -> String {
    let mut line = cells
        .iter()
        .map(|cell| csv_cell(cell))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn csv_cell(cell: &str) -> String {
    let guarded = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(
            csv_row(&["a", "b,c", "say \"hi\""]),
            "a,\"b,c\",\"say \"\"hi\"\"\"\r\n"
        );
        assert_eq!(csv_cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_cell("-5"), "'-5");
        assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
    }
}
