//! The store: portals, their token chains, events and the activity log.
//!
//! One interface over SQLite (the embedded default) and PostgreSQL. Queries are written once
//! in SQL both understand and run through sqlx's `Any` driver; only the migrations differ, and
//! the locks that make instances take turns where SQLite's single writer does that by itself.
//! Times are unix seconds and flags are integers or text, the types `Any` carries on both.

mod activity;
mod budget;
mod chains;
mod events;
mod log;
mod portals;
mod writer;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::crypto::TokenCipher;

pub use activity::{ActivityEntry, LeasedEvent, NewEntry, Snapshot};
pub use chains::{NewPair, TokenChain};
pub use events::{EventRecord, NewEvent};
pub use log::{Cursor, LogFilter};
pub use portals::{Installation, Portal, PortalId, PortalStatus};

/// Which database sits behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "portals and events",
        sqlite: include_str!("../../migrations/sqlite/0001_portals_and_events.sql"),
        postgres: include_str!("../../migrations/postgres/0001_portals_and_events.sql"),
    },
    Migration {
        version: 2,
        name: "activity log, snapshots and names",
        sqlite: include_str!("../../migrations/sqlite/0002_activity.sql"),
        postgres: include_str!("../../migrations/postgres/0002_activity.sql"),
    },
];

/// The advisory lock key that makes PostgreSQL migrations take turns ("b24activ"). The other
/// advisory locks are portal ids (see `record_activity`), far below this.
const MIGRATION_LOCK: i64 = 0x6232_3461_6374_6976;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    cipher: TokenCipher,
    /// Group commit of accepted events (see `writer`).
    events: writer::EventWriter,
}

impl Store {
    /// Connects to `url`; an SQLite file and its folder are created when missing.
    pub async fn connect(url: &str, cipher: TokenCipher) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();

        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url).context("DATABASE_URL is malformed")?;

        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .context("cannot connect to the database (DATABASE_URL)")?;

        Ok(Store {
            events: writer::EventWriter::start(pool.clone(), backend),
            pool,
            backend,
            cipher,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations not applied yet, each in its own transaction. Instances that
    /// start together may all call this: each transaction first takes the migration lock, so
    /// they take turns and each migration is applied once.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let mut tx = self.begin_migration().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .context("creating schema_migrations")?;
        tx.commit().await?;

        let mut applied = 0;
        for migration in MIGRATIONS {
            let mut tx = self.begin_migration().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(migration.version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }

            let sql = match self.backend {
                Backend::Sqlite => migration.sqlite,
                Backend::Postgres => migration.postgres,
            };
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("migration {} ({})", migration.version, migration.name))?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            applied += 1;
        }
        Ok(applied)
    }

    /// A transaction holding the migration lock: on PostgreSQL an advisory lock released with
    /// the transaction, on SQLite the database's write lock, taken at the start rather than at
    /// the first write so that a second migrator waits instead of failing.
    async fn begin_migration(&self) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Any>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut *tx)
                    .await
                    .context("taking the migration lock")?;
                tx
            }
        };
        Ok(tx)
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn cipher(&self) -> &TokenCipher {
        &self.cipher
    }
}

/// Makes sure the folder exists and asks SQLite to create the file.
fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        anyhow::bail!("DATABASE_URL: give SQLite a file, e.g. sqlite://data/b24-activity.db");
    }
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("DATABASE_URL: cannot create folder {}", dir.display()))?;
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else {
        format!("{url}{separator}mode=rwc")
    })
}

/// Unix seconds now.
pub fn now() -> i64 {
    now_ms() / 1000
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::prepare_sqlite_url;

    #[test]
    fn sqlite_urls_gain_create_mode_and_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/app.db", dir.path().display());

        assert_eq!(prepare_sqlite_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(dir.path().join("sub").is_dir());
        assert!(prepare_sqlite_url("sqlite::memory:").is_err());
    }
}
