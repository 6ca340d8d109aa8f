//! The per-portal REST budget kept in the database, so that several instances calling the
//! same portal share one bucket (the platform counts them together).

use sqlx::Row;

use super::{Backend, PortalId, Store, now_ms};

/// A leaky bucket: `level` requests in it at `at_ms`, draining `per_second`.
pub fn drained(level: f64, at_ms: i64, now_ms: i64, per_second: f64) -> f64 {
    let elapsed = (now_ms - at_ms).max(0) as f64 / 1000.0;
    (level - elapsed * per_second).max(0.0)
}

/// How long until one more request fits under `burst`, or `None` if it fits now.
pub fn wait_for_room(level: f64, per_second: f64, burst: f64) -> Option<std::time::Duration> {
    (level + 1.0 > burst)
        .then(|| std::time::Duration::from_secs_f64((level + 1.0 - burst) / per_second))
}

impl Store {
    /// Takes one request from the portal's shared budget, or says how long to wait.
    pub async fn take_budget(
        &self,
        portal: PortalId,
        per_second: f64,
        burst: f64,
    ) -> anyhow::Result<Option<std::time::Duration>> {
        let mut tx = self.pool().begin().await?;
        let lock = if self.backend() == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT budget_level, budget_at FROM portals WHERE id = $1{lock}"
        )))
        .bind(portal.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };

        let now = now_ms();
        let level = drained(
            row.try_get("budget_level")?,
            row.try_get("budget_at")?,
            now,
            per_second,
        );
        if let Some(wait) = wait_for_room(level, per_second, burst) {
            return Ok(Some(wait));
        }
        sqlx::query("UPDATE portals SET budget_level = $2, budget_at = $3 WHERE id = $1")
            .bind(portal.0)
            .bind(level + 1.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(None)
    }

    /// After the platform refused for load: the bucket is full for everyone.
    pub async fn fill_budget(&self, portal: PortalId, burst: f64) -> anyhow::Result<()> {
        sqlx::query("UPDATE portals SET budget_level = $2, budget_at = $3 WHERE id = $1")
            .bind(portal.0)
            .bind(burst)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_drains_and_makes_room() {
        assert_eq!(drained(10.0, 0, 1000, 2.0), 8.0);
        assert_eq!(drained(1.0, 0, 10_000, 2.0), 0.0);
        assert_eq!(wait_for_room(49.0, 2.0, 50.0), None);
        assert_eq!(
            wait_for_room(50.0, 2.0, 50.0),
            Some(std::time::Duration::from_millis(500))
        );
    }
}
