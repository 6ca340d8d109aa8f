//! Events as received: the durable queue between intake and enrichment.

use sqlx::Row;

use super::{PortalId, Store, now};

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
    /// Stores an event durably. A repeated delivery is stored too: only enrichment can tell
    /// it from a second real change in the same second, by whether the item changed.
    pub async fn insert_event(&self, event: &NewEvent) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO events (portal_id, action, entity_type_id, item_id, user_id, event_ts,
                 received_at, dedup_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.portal_id.0)
        .bind(event.action)
        .bind(event.entity_type_id)
        .bind(event.item_id)
        .bind(event.user_id)
        .bind(event.event_ts)
        .bind(now())
        .bind(&event.dedup_key)
        .execute(self.pool())
        .await?;
        Ok(())
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
