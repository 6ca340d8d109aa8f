//! Events as received: the durable queue between intake and enrichment.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::writer::WriterGone;
use super::{Backend, PortalId, Store, now};

/// An item event accepted by the intake.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub portal_id: PortalId,
    pub action: &'static str,
    pub entity_type_id: i64,
    pub item_id: i64,
    pub user_id: Option<i64>,
    pub event_ts: i64,
    pub dedup_key: String,
}

/// An event as stored.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: i64,
    pub action: String,
    pub entity_type_id: i64,
    pub item_id: i64,
    pub user_id: Option<i64>,
    pub event_ts: i64,
    pub received_at: i64,
    pub state: String,
}

impl Store {
    /// Stores an event durably: returns once the transaction holding it has committed. A
    /// repeated delivery is stored too: only enrichment can tell it from a second real change
    /// in the same second, by whether the item changed.
    ///
    /// Events arriving together share a transaction (see `writer`), so a burst costs one
    /// commit per batch rather than one per event.
    pub async fn insert_event(&self, event: NewEvent) -> anyhow::Result<()> {
        match self.events.store(event).await {
            Ok(stored) => stored,
            // The runtime the writer ran on has ended, while this store lives on.
            Err(WriterGone(event)) => {
                let mut conn = self.pool().acquire().await?;
                insert_rows(&mut conn, self.backend, &[&event], now()).await
            }
        }
    }

    /// The newest events of a portal, newest first, before event id `before` when given.
    pub async fn recent_events(
        &self,
        portal: PortalId,
        before: Option<i64>,
        limit: i64,
    ) -> anyhow::Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT id, action, entity_type_id, item_id, user_id, event_ts, received_at, state
             FROM events WHERE portal_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(portal.0)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;

        rows.iter()
            .map(|row| {
                Ok(EventRecord {
                    id: row.try_get("id")?,
                    action: row.try_get("action")?,
                    entity_type_id: row.try_get("entity_type_id")?,
                    item_id: row.try_get("item_id")?,
                    user_id: row.try_get("user_id")?,
                    event_ts: row.try_get("event_ts")?,
                    received_at: row.try_get("received_at")?,
                    state: row.try_get("state")?,
                })
            })
            .collect()
    }

    /// Forgets events that became entries before `cutoff` (event time, unix seconds).
    pub async fn prune_done_events(&self, cutoff: i64) -> anyhow::Result<u64> {
        let done = sqlx::query("DELETE FROM events WHERE state = 'done' AND received_at < $1")
            .bind(cutoff)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn count_events(&self, portal: PortalId) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE portal_id = $1")
                .bind(portal.0)
                .fetch_one(self.pool())
                .await?,
        )
    }
}

/// Inserts `events` in their order with one statement: all or none of them, committed when
/// it returns (no transaction is open on `conn`). The events travel as one JSON array, so that
/// a batch of any size is one round trip and one prepared statement.
pub(super) async fn insert_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[&NewEvent],
    received_at: i64,
) -> anyhow::Result<()> {
    let rows: Vec<EventRow> = events.iter().map(|event| EventRow::from(*event)).collect();
    let sql = match backend {
        // Each element is parsed once into SQLite's binary JSON, then read field by field.
        Backend::Sqlite => {
            "WITH batch AS MATERIALIZED (SELECT key, jsonb(value) AS event FROM json_each($1))
             INSERT INTO events (portal_id, action, entity_type_id, item_id, user_id, event_ts,
                 received_at, dedup_key)
             SELECT event ->> 'portal_id', event ->> 'action', event ->> 'entity_type_id',
                 event ->> 'item_id', event ->> 'user_id', event ->> 'event_ts', $2,
                 event ->> 'dedup_key'
             FROM batch ORDER BY key"
        }
        Backend::Postgres => {
            "INSERT INTO events (portal_id, action, entity_type_id, item_id, user_id, event_ts,
                 received_at, dedup_key)
             SELECT (e.event ->> 'portal_id')::BIGINT, e.event ->> 'action',
                 (e.event ->> 'entity_type_id')::BIGINT, (e.event ->> 'item_id')::BIGINT,
                 (e.event ->> 'user_id')::BIGINT, (e.event ->> 'event_ts')::BIGINT, $2,
                 e.event ->> 'dedup_key'
             FROM jsonb_array_elements($1::JSONB) WITH ORDINALITY AS e (event, n)
             ORDER BY e.n"
        }
    };
    sqlx::query(sql)
        .bind(serde_json::to_string(&rows)?)
        .bind(received_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// An event as `insert_rows` sends it.
#[derive(Serialize)]
struct EventRow<'a> {
    portal_id: i64,
    action: &'a str,
    entity_type_id: i64,
    item_id: i64,
    user_id: Option<i64>,
    event_ts: i64,
    dedup_key: &'a str,
}

impl<'a> From<&'a NewEvent> for EventRow<'a> {
    fn from(event: &'a NewEvent) -> EventRow<'a> {
        EventRow {
            portal_id: event.portal_id.0,
            action: event.action,
            entity_type_id: event.entity_type_id,
            item_id: event.item_id,
            user_id: event.user_id,
            event_ts: event.event_ts,
            dedup_key: &event.dedup_key,
        }
    }
}
