//! The enrichment side of the store: leasing stored events, item snapshots, cached names and
//! the activity entries themselves.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, PortalId, Store, now, now_ms};

/// The advisory lock that makes leasing take turns on PostgreSQL ("b24lease"); far above the
/// portal ids used as locks by `record_activity`.
const LEASE_LOCK: i64 = 0x6232_346c_6561_7365;

/// Values per `IN (...)` list, well under every driver's parameter limit.
const ID_CHUNK: usize = 500;

/// Rows per multi-row `INSERT` (13 parameters each, far from any driver's limit).
const ROWS_PER_INSERT: usize = 100;

/// Closes leased events of `owner` as done; returns the ids it closed (others lost their
/// lease meanwhile and belong to another worker now).
async fn close_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    owner: &str,
    ids: &[i64],
) -> anyhow::Result<std::collections::HashSet<i64>> {
    let mut closed = std::collections::HashSet::new();
    for chunk in ids.chunks(ID_CHUNK) {
        let sql = format!(
            "UPDATE events SET state = 'done', lease_owner = NULL, lease_until = NULL, last_error = NULL
             WHERE lease_owner = $1 AND state = 'pending' AND id IN ({})
             RETURNING id",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).bind(owner);
        for id in chunk {
            query = query.bind(*id);
        }
        closed.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(closed)
}

/// `($1, ..., $columns), (...)`: the VALUES of a multi-row INSERT.
fn value_rows(count: usize, columns: usize) -> String {
    (0..count)
        .map(|n| format!("({})", placeholders(n * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$first, $first+1, ...`: `count` numbered parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An event leased to one worker until its lease runs out.
#[derive(Debug, Clone)]
pub struct LeasedEvent {
    pub id: i64,
    pub portal_id: PortalId,
    pub action: String,
    pub entity_type_id: i64,
    pub item_id: i64,
    pub user_id: Option<i64>,
    pub event_ts: i64,
    pub attempts: i64,
    pub dedup_key: String,
}

/// An activity entry ready to be written.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub event_id: i64,
    pub portal_id: PortalId,
    pub action: String,
    pub entity_type_id: i64,
    pub type_title: Option<String>,
    pub item_id: i64,
    pub item_title: Option<String>,
    pub user_id: Option<i64>,
    pub user_name: Option<String>,
    pub occurred_at: i64,
    /// JSON list of changes.
    pub changes: Value,
    pub outcome: &'static str,
}

/// An entry as the log shows it.
#[derive(Debug, Clone)]
pub struct ActivityEntry {
    pub id: i64,
    pub action: String,
    pub entity_type_id: i64,
    pub type_title: Option<String>,
    pub item_id: i64,
    pub item_title: Option<String>,
    pub user_id: Option<i64>,
    pub user_name: Option<String>,
    pub occurred_at: i64,
    pub changes: Value,
    pub outcome: String,
}

/// The last fetched state of one item.
pub struct Snapshot<'a> {
    pub portal_id: PortalId,
    pub entity_type_id: i64,
    pub item_id: i64,
    pub fields: &'a Value,
}

impl Store {
    /// Leases up to `limit` events that are due, oldest first. An event whose lease ran out
    /// (its worker died) is due again, so nothing is lost and nothing is worked on twice at
    /// once: the lease conditions are checked again on each row as it is updated. An item
    /// with events leased elsewhere is left alone until those are done, so two workers never
    /// compare the same item with the same snapshot; leasing takes turns across instances for
    /// that check to hold.
    pub async fn lease_events(
        &self,
        owner: &str,
        limit: i64,
        lease_ms: i64,
    ) -> anyhow::Result<Vec<LeasedEvent>> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(LEASE_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let rows = sqlx::query(
            "UPDATE events SET lease_owner = $1, lease_until = $2, attempts = attempts + 1
             WHERE id IN (
                 SELECT due.id FROM events due
                 WHERE due.state = 'pending' AND due.next_attempt_at <= $3
                   AND (due.lease_until IS NULL OR due.lease_until < $3)
                   AND NOT EXISTS (
                       SELECT 1 FROM events busy
                       WHERE busy.portal_id = due.portal_id
                         AND busy.entity_type_id = due.entity_type_id
                         AND busy.item_id = due.item_id
                         AND busy.state = 'pending' AND busy.lease_until >= $3)
                 ORDER BY due.id LIMIT $4)
               AND state = 'pending' AND (lease_until IS NULL OR lease_until < $3)
             RETURNING id, portal_id, action, entity_type_id, item_id, user_id, event_ts, attempts,
                 dedup_key",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut events = rows
            .iter()
            .map(leased_from_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        events.sort_by_key(|e| e.id);
        Ok(events)
    }

    /// Writes entries and snapshots and closes their events, all or nothing; `repeats` are
    /// events closed without an entry (repeated deliveries). Events whose lease was lost to
    /// another worker meanwhile are left to that worker.
    pub async fn record_activity(
        &self,
        owner: &str,
        entries: &[NewEntry],
        repeats: &[i64],
        snapshots: &[Snapshot<'_>],
    ) -> anyhow::Result<usize> {
        let mut tx = self.pool().begin().await?;
        // Pages ask for entries past the newest they show, so a portal's entries must become
        // visible in id order. SQLite has one writer at a time; on PostgreSQL two workers
        // could commit a portal's entries out of order, so they take turns per portal.
        if self.backend() == Backend::Postgres {
            let portals: BTreeSet<i64> = entries.iter().map(|e| e.portal_id.0).collect();
            for portal in portals {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(portal)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // A handful of statements per round, whatever its size: the write lock (SQLite has
        // one) is held briefly, so intake is not kept waiting behind enrichment.
        close_events(&mut tx, owner, repeats).await?;
        let ids: Vec<i64> = entries.iter().map(|e| e.event_id).collect();
        let closed = close_events(&mut tx, owner, &ids).await?;
        let kept: Vec<&NewEntry> = entries
            .iter()
            .filter(|e| closed.contains(&e.event_id))
            .collect();

        for chunk in kept.chunks(ROWS_PER_INSERT) {
            let rows = value_rows(chunk.len(), 13);
            let sql = format!(
                "INSERT INTO activity (portal_id, event_id, action, entity_type_id, type_title, item_id,
                     item_title, title_search, user_id, user_name, occurred_at, changes, outcome)
                 VALUES {rows} ON CONFLICT (event_id) DO NOTHING"
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for entry in chunk {
                insert = insert
                    .bind(entry.portal_id.0)
                    .bind(entry.event_id)
                    .bind(&entry.action)
                    .bind(entry.entity_type_id)
                    .bind(&entry.type_title)
                    .bind(entry.item_id)
                    .bind(&entry.item_title)
                    .bind(entry.item_title.as_ref().map(|t| t.to_lowercase()))
                    .bind(entry.user_id)
                    .bind(&entry.user_name)
                    .bind(entry.occurred_at)
                    .bind(entry.changes.to_string())
                    .bind(entry.outcome);
            }
            insert.execute(&mut *tx).await?;
        }
        let written = kept.len();

        for chunk in snapshots.chunks(ROWS_PER_INSERT) {
            let rows = value_rows(chunk.len(), 5);
            let sql = format!(
                "INSERT INTO item_snapshots (portal_id, entity_type_id, item_id, fields, fetched_at)
                 VALUES {rows}
                 ON CONFLICT (portal_id, entity_type_id, item_id)
                 DO UPDATE SET fields = excluded.fields, fetched_at = excluded.fetched_at"
            );
            let mut upsert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for snapshot in chunk {
                upsert = upsert
                    .bind(snapshot.portal_id.0)
                    .bind(snapshot.entity_type_id)
                    .bind(snapshot.item_id)
                    .bind(snapshot.fields.to_string())
                    .bind(now());
            }
            upsert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Puts leased events back for a later try, with the reason shown to the portal.
    pub async fn retry_events(
        &self,
        ids: &[i64],
        owner: &str,
        at_ms: i64,
        reason: &str,
    ) -> anyhow::Result<()> {
        for chunk in ids.chunks(ID_CHUNK) {
            let sql = format!(
                "UPDATE events SET lease_owner = NULL, lease_until = NULL, next_attempt_at = $2, last_error = $3
                 WHERE lease_owner = $1 AND state = 'pending' AND id IN ({})",
                placeholders(4, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner)
                .bind(at_ms)
                .bind(reason);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Gives up on leased events, keeping the reason.
    pub async fn fail_events(&self, ids: &[i64], owner: &str, reason: &str) -> anyhow::Result<()> {
        for chunk in ids.chunks(ID_CHUNK) {
            let sql = format!(
                "UPDATE events SET state = 'failed', lease_owner = NULL, lease_until = NULL, last_error = $2
                 WHERE lease_owner = $1 AND id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner)
                .bind(reason);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }

    pub async fn snapshot(
        &self,
        portal: PortalId,
        entity_type_id: i64,
        item_id: i64,
    ) -> anyhow::Result<Option<Value>> {
        let fields: Option<String> = sqlx::query_scalar(
            "SELECT fields FROM item_snapshots WHERE portal_id = $1 AND entity_type_id = $2 AND item_id = $3",
        )
        .bind(portal.0)
        .bind(entity_type_id)
        .bind(item_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(fields.and_then(|f| serde_json::from_str(&f).ok()))
    }

    /// Cached names of `kind` for `keys` that have not expired.
    pub async fn cached_names(
        &self,
        portal: PortalId,
        kind: &str,
        keys: &[String],
    ) -> anyhow::Result<HashMap<String, String>> {
        let mut names = HashMap::new();
        for chunk in keys.chunks(ID_CHUNK) {
            let sql = format!(
                "SELECT name_key, name FROM names
                 WHERE portal_id = $1 AND kind = $2 AND expires_at > $3 AND name_key IN ({})",
                placeholders(4, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(portal.0)
                .bind(kind)
                .bind(now());
            for key in chunk {
                query = query.bind(key);
            }
            for row in query.fetch_all(self.pool()).await? {
                names.insert(row.try_get("name_key")?, row.try_get("name")?);
            }
        }
        Ok(names)
    }

    pub async fn cache_names(
        &self,
        portal: PortalId,
        kind: &str,
        names: &HashMap<String, String>,
        ttl_secs: i64,
    ) -> anyhow::Result<()> {
        let expires = now() + ttl_secs;
        for (key, name) in names {
            sqlx::query(
                "INSERT INTO names (portal_id, kind, name_key, name, expires_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (portal_id, kind, name_key) DO UPDATE SET name = excluded.name, expires_at = excluded.expires_at",
            )
            .bind(portal.0)
            .bind(kind)
            .bind(key)
            .bind(name)
            .bind(expires)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Which of `keys` belong to events of the portal already turned into entries.
    pub async fn recorded_keys(
        &self,
        portal: PortalId,
        keys: &[&str],
    ) -> anyhow::Result<std::collections::HashSet<String>> {
        let mut found = std::collections::HashSet::new();
        for chunk in keys.chunks(ID_CHUNK) {
            let sql = format!(
                "SELECT DISTINCT dedup_key FROM events
                 WHERE portal_id = $1 AND state = 'done' AND dedup_key IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query =
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(portal.0);
            for key in chunk {
                query = query.bind(*key);
            }
            found.extend(query.fetch_all(self.pool()).await?);
        }
        Ok(found)
    }

    /// Cached stage names of one stage list, keyed `{list}|{STATUS_ID}`.
    pub async fn stages_of_list(
        &self,
        portal: PortalId,
        list: &str,
    ) -> anyhow::Result<HashMap<String, String>> {
        let pattern = format!(
            "{}|%",
            list.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = sqlx::query(
            "SELECT name_key, name FROM names
             WHERE portal_id = $1 AND kind = 'stage' AND name_key LIKE $2 ESCAPE '\\' AND expires_at > $3",
        )
        .bind(portal.0)
        .bind(pattern)
        .bind(now())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("name_key")?, row.try_get("name")?)))
            .collect()
    }

    /// How many events of a portal wait for enrichment, and the latest reason one waits.
    pub async fn pending_events(&self, portal: PortalId) -> anyhow::Result<(i64, Option<String>)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS waiting, MAX(last_error) AS reason FROM events
             WHERE portal_id = $1 AND state = 'pending'",
        )
        .bind(portal.0)
        .fetch_one(self.pool())
        .await?;
        Ok((row.try_get("waiting")?, row.try_get("reason")?))
    }

    /// The newest entries of a portal, newest first, before entry id `before` when given.
    pub async fn recent_activity(
        &self,
        portal: PortalId,
        before: Option<i64>,
        limit: i64,
    ) -> anyhow::Result<Vec<ActivityEntry>> {
        let rows = sqlx::query(
            "SELECT id, action, entity_type_id, type_title, item_id, item_title, user_id, user_name,
                 occurred_at, changes, outcome
             FROM activity WHERE portal_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(portal.0)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }
}

fn leased_from_row(row: &AnyRow) -> anyhow::Result<LeasedEvent> {
    Ok(LeasedEvent {
        id: row.try_get("id")?,
        portal_id: PortalId(row.try_get("portal_id")?),
        action: row.try_get("action")?,
        entity_type_id: row.try_get("entity_type_id")?,
        item_id: row.try_get("item_id")?,
        user_id: row.try_get("user_id")?,
        event_ts: row.try_get("event_ts")?,
        attempts: row.try_get("attempts")?,
        dedup_key: row.try_get("dedup_key")?,
    })
}

pub(super) fn entry_from_row(row: &AnyRow) -> anyhow::Result<ActivityEntry> {
    let changes: String = row.try_get("changes")?;
    Ok(ActivityEntry {
        id: row.try_get("id")?,
        action: row.try_get("action")?,
        entity_type_id: row.try_get("entity_type_id")?,
        type_title: row.try_get("type_title")?,
        item_id: row.try_get("item_id")?,
        item_title: row.try_get("item_title")?,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        occurred_at: row.try_get("occurred_at")?,
        changes: serde_json::from_str(&changes).unwrap_or(Value::Array(vec![])),
        outcome: row.try_get("outcome")?,
    })
}
