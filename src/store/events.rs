//! Events as received: the durable queue between intake and enrichment.

use std::fmt::Write as _;

use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::writer::WriterGone;
use super::{PortalId, Store, now};

/// Rows per `INSERT`: a batch goes in statements of these sizes, largest first, so that only
/// these few statements exist and each stays prepared on its connection.
const ROWS_PER_STATEMENT: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

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
                insert_rows(&mut conn, &[&event], now()).await
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

/// Inserts `events` on `conn` (a transaction, when they must stand or fall together).
pub(super) async fn insert_rows(
    conn: &mut AnyConnection,
    events: &[&NewEvent],
    received_at: i64,
) -> anyhow::Result<()> {
    let mut rest = events;
    while !rest.is_empty() {
        let rows = ROWS_PER_STATEMENT
            .into_iter()
            .find(|rows| *rows <= rest.len())
            .unwrap_or(1);
        let (these, after) = rest.split_at(rows);
        let mut insert = sqlx::query(AssertSqlSafe(insert_sql(rows)));
        for event in these {
            insert = insert
                .bind(event.portal_id.0)
                .bind(event.action)
                .bind(event.entity_type_id)
                .bind(event.item_id)
                .bind(event.user_id)
                .bind(event.event_ts)
                .bind(received_at)
                .bind(&event.dedup_key);
        }
        insert.execute(&mut *conn).await?;
        rest = after;
    }
    Ok(())
}

/// `INSERT INTO events (...) VALUES ($1, ..., $8), ($9, ..., $16), ...` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    const COLUMNS: usize = 8;
    let mut sql = String::from(
        "INSERT INTO events (portal_id, action, entity_type_id, item_id, user_id, event_ts, \
         received_at, dedup_key) VALUES ",
    );
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 1..=COLUMNS {
            let separator = if column == COLUMNS { ")" } else { ", " };
            let _ = write!(sql, "${}{separator}", row * COLUMNS + column);
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::insert_sql;

    #[test]
    fn an_insert_of_two_rows_numbers_sixteen_parameters() {
        let sql = insert_sql(2);
        assert!(
            sql.ends_with(
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8), ($9, $10, $11, $12, $13, $14, $15, $16)"
            ),
            "{sql}"
        );
    }
}
