//! Live updates: a server-sent event stream per open page that says "the log has new
//! entries"; the page then asks for the new rows itself (`GET /log/rows`).

use std::convert::Infallible;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::session::InSession;
use crate::app::AppState;
use crate::store::now;

pub fn router() -> Router<AppState> {
    Router::new().route("/log/live", get(live_updates))
}

async fn live_updates(
    State(state): State<AppState>,
    session: InSession,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let portal = session.portal.id;
    let expires_at = session.session.expires_at;
    let news = state.live.subscribe();
    let stopping = state.stopping.subscribe();

    let stream = futures_util::stream::unfold(
        (news, stopping),
        move |(mut news, mut stopping)| async move {
            loop {
                let heard = tokio::select! {
                    heard = news.recv() => heard,
                    _ = crate::app::stopped(&mut stopping) => return None,
                };
                if now() > expires_at {
                    return None;
                }
                match heard {
                    Ok(changed) if changed != portal => continue,
                    // Missed news may have been ours: say so.
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        let event = Event::default().event("changed").data("new entries");
                        return Some((Ok(event), (news, stopping)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}
