//! Reading the activity log as people browse it: filters and keyset paging by entry id, so a
//! page costs the same at the first entry and the millionth.

use sqlx::Row;

use super::activity::entry_from_row;
use super::{ActivityEntry, PortalId, Store};

/// What a reader narrowed the log to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub entity_type_id: Option<i64>,
    pub item_id: Option<i64>,
    pub user_id: Option<i64>,
    /// Unix seconds, inclusive.
    pub from: Option<i64>,
    /// Unix seconds, exclusive.
    pub to: Option<i64>,
    /// Part of an item title, any case.
    pub search: Option<String>,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Newest,
    /// Entries older than this id.
    Before(i64),
    /// Entries newer than this id (paging back towards the newest).
    After(i64),
}

enum Bind {
    Int(i64),
    Text(String),
}

const ENTRY_COLUMNS: &str = "id, action, entity_type_id, type_title, item_id, item_title, user_id, \
                             user_name, occurred_at, changes, outcome";

impl Store {
    /// Up to `limit` entries newest first, from `cursor` on.
    pub async fn log_page(
        &self,
        portal: PortalId,
        filter: &LogFilter,
        cursor: Cursor,
        limit: i64,
    ) -> anyhow::Result<Vec<ActivityEntry>> {
        let mut binds = vec![Bind::Int(portal.0)];
        let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM activity WHERE portal_id = $1");
        let mut condition = |sql: &mut String, clause: &str, value: Bind| {
            binds.push(value);
            sql.push_str(&format!(" AND {clause} ${}", binds.len()));
        };

        if let Some(id) = filter.entity_type_id {
            condition(&mut sql, "entity_type_id =", Bind::Int(id));
        }
        if let Some(id) = filter.item_id {
            condition(&mut sql, "item_id =", Bind::Int(id));
        }
        if let Some(id) = filter.user_id {
            condition(&mut sql, "user_id =", Bind::Int(id));
        }
        if let Some(from) = filter.from {
            condition(&mut sql, "occurred_at >=", Bind::Int(from));
        }
        if let Some(to) = filter.to {
            condition(&mut sql, "occurred_at <", Bind::Int(to));
        }
        if let Some(search) = filter.search.as_deref().filter(|s| !s.is_empty()) {
            let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
            condition(&mut sql, "title_search LIKE", Bind::Text(pattern));
            sql.push_str(" ESCAPE '\\'");
        }
        let ascending = match cursor {
            Cursor::Newest => false,
            Cursor::Before(id) => {
                condition(&mut sql, "id <", Bind::Int(id));
                false
            }
            Cursor::After(id) => {
                condition(&mut sql, "id >", Bind::Int(id));
                true
            }
        };
        binds.push(Bind::Int(limit));
        sql.push_str(&format!(
            " ORDER BY id {} LIMIT ${}",
            if ascending { "ASC" } else { "DESC" },
            binds.len()
        ));

        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = match bind {
                Bind::Int(value) => query.bind(value),
                Bind::Text(value) => query.bind(value),
            };
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if ascending {
            entries.reverse();
        }
        Ok(entries)
    }

    /// The smart-process types the portal's log has named, for the type filter.
    pub async fn known_types(&self, portal: PortalId) -> anyhow::Result<Vec<(i64, String)>> {
        let rows =
            sqlx::query("SELECT name_key, name FROM names WHERE portal_id = $1 AND kind = 'type'")
                .bind(portal.0)
                .fetch_all(self.pool())
                .await?;
        let mut types = Vec::new();
        for row in rows {
            let key: String = row.try_get("name_key")?;
            let name: String = row.try_get("name")?;
            if let Ok(id) = key.parse::<i64>() {
                types.push((id, if name.is_empty() { key } else { name }));
            }
        }
        types.sort();
        Ok(types)
    }

    /// The newest entry id of a portal, for live updates.
    pub async fn newest_entry_id(&self, portal: PortalId) -> anyhow::Result<i64> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT MAX(id) FROM activity WHERE portal_id = $1")
                .bind(portal.0)
                .fetch_one(self.pool())
                .await?;
        Ok(id.unwrap_or(0))
    }
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
