//! Live updates: who is told that a portal's log has new entries.
//!
//! Inside one process a broadcast channel carries the news from the enrichment worker to every
//! open page of that portal. On PostgreSQL the news also goes out with `NOTIFY`, and every
//! instance `LISTEN`s, so a page open on one instance hears of entries another one wrote.
//!
//! The news is a hint ("look again"), not the data: a notice lost while a listener reconnects
//! leaves a page behind until the next one, never wrong.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, broadcast, watch};

use crate::store::PortalId;

/// The PostgreSQL channel every instance of one database listens on.
pub const CHANNEL: &str = "b24_activity_live";

/// Portal ids per notice: a payload must stay under PostgreSQL's 8000 bytes.
const IDS_PER_NOTICE: usize = 300;

/// Wait before listening again after the connection was lost.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<PortalId>,
    /// Set on PostgreSQL: what to tell the other instances.
    fanout: Option<Arc<Fanout>>,
    /// Dropped with the last clone, which ends the background tasks.
    _running: Arc<watch::Sender<()>>,
}

/// Portals with news not yet sent to the other instances; a burst collapses to one notice.
struct Fanout {
    pending: Mutex<BTreeSet<PortalId>>,
    ready: Notify,
}

impl Default for Live {
    /// Live updates within this process only.
    fn default() -> Live {
        Live {
            sender: broadcast::channel(1024).0,
            fanout: None,
            _running: Arc::new(watch::channel(()).0),
        }
    }
}

impl Live {
    /// Live updates for the instances sharing `database_url`: across all of them on
    /// PostgreSQL (the listener is up when this returns), within this process on SQLite,
    /// which one process owns.
    pub async fn connect(database_url: &str) -> anyhow::Result<Live> {
        if database_url.starts_with("sqlite:") {
            return Ok(Live::default());
        }

        let mut listener = PgListener::connect(database_url)
            .await
            .context("live updates: cannot connect to the database (DATABASE_URL)")?;
        listener
            .listen(CHANNEL)
            .await
            .context("live updates: LISTEN failed")?;
        let notifier = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy(database_url)
            .context("live updates: DATABASE_URL is malformed")?;

        let live = Live {
            fanout: Some(Arc::new(Fanout {
                pending: Mutex::default(),
                ready: Notify::new(),
            })),
            ..Live::default()
        };
        // Notices carry the sender's id so that an instance skips its own, which its pages
        // already heard of in-process.
        let instance = crate::crypto::TokenKey::generate().to_hex()[..16].to_owned();
        let fanout = live.fanout.clone().expect("set above");
        tokio::spawn(send_notices(
            notifier,
            fanout,
            instance.clone(),
            live._running.subscribe(),
        ));
        tokio::spawn(hear_notices(
            listener,
            live.sender.clone(),
            instance,
            live._running.subscribe(),
        ));
        Ok(live)
    }

    /// Tells every listener, on every instance, that `portal` has new entries.
    pub fn publish(&self, portal: PortalId) {
        // No listener is not an error: nobody has the page open.
        let _ = self.sender.send(portal);
        if let Some(fanout) = &self.fanout {
            fanout
                .pending
                .lock()
                .expect("live updates lock")
                .insert(portal);
            fanout.ready.notify_one();
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PortalId> {
        self.sender.subscribe()
    }
}

/// Sends what `publish` collected, one `NOTIFY` per few hundred portals.
async fn send_notices(
    pool: PgPool,
    fanout: Arc<Fanout>,
    instance: String,
    mut running: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = fanout.ready.notified() => {}
            _ = running.changed() => break,
        }
        let portals: Vec<PortalId> =
            std::mem::take(&mut *fanout.pending.lock().expect("live updates lock"))
                .into_iter()
                .collect();
        for chunk in portals.chunks(IDS_PER_NOTICE) {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(notice(&instance, chunk))
                .execute(&pool)
                .await;
            if let Err(err) = sent {
                tracing::warn!(
                    portals = chunk.len(),
                    "live updates: notice to other instances lost: {err}"
                );
            }
        }
    }
    pool.close().await;
}

/// Hands notices of other instances to this one's pages, listening again after a lost
/// connection.
async fn hear_notices(
    mut listener: PgListener,
    sender: broadcast::Sender<PortalId>,
    instance: String,
    mut running: watch::Receiver<()>,
) {
    loop {
        let heard = tokio::select! {
            heard = listener.try_recv() => heard,
            _ = running.changed() => return,
        };
        match heard {
            Ok(Some(notification)) => {
                for portal in from_notice(&instance, notification.payload()) {
                    let _ = sender.send(portal);
                }
            }
            // The listener reconnects and listens again on the next call.
            Ok(None) => tracing::warn!("live updates: connection lost; listening again"),
            Err(err) => {
                tracing::warn!("live updates: cannot listen: {err}");
                tokio::select! {
                    _ = tokio::time::sleep(RECONNECT_WAIT) => {}
                    _ = running.changed() => return,
                }
            }
        }
    }
}

/// `{instance} {id},{id},...`
fn notice(instance: &str, portals: &[PortalId]) -> String {
    let ids: Vec<String> = portals.iter().map(|p| p.0.to_string()).collect();
    format!("{instance} {}", ids.join(","))
}

/// The portals of a notice, unless this instance sent it.
fn from_notice(instance: &str, payload: &str) -> Vec<PortalId> {
    match payload.split_once(' ') {
        Some((sender, ids)) if sender != instance => ids
            .split(',')
            .filter_map(|id| id.parse().ok())
            .map(PortalId)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_names_its_portals_to_every_instance_but_its_sender() {
        let payload = notice("a1", &[PortalId(3), PortalId(17)]);

        assert_eq!(from_notice("b2", &payload), vec![PortalId(3), PortalId(17)]);
        assert!(from_notice("a1", &payload).is_empty());
        assert!(from_notice("b2", "garbage").is_empty());
    }

    #[test]
    fn the_largest_notice_fits_a_postgres_payload() {
        let ids = vec![PortalId(i64::MAX); IDS_PER_NOTICE];
        assert!(notice(&"f".repeat(16), &ids).len() < 8000);
    }

    #[tokio::test]
    async fn within_one_process_a_publish_reaches_every_subscriber() {
        let live = Live::default();
        let (mut first, mut second) = (live.subscribe(), live.subscribe());

        live.clone().publish(PortalId(9));

        assert_eq!(first.recv().await.unwrap(), PortalId(9));
        assert_eq!(second.recv().await.unwrap(), PortalId(9));
    }
}
