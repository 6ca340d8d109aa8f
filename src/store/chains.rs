//! Token chains: reading a portal's pair, and the compare-and-swap that makes one refresh per
//! expiry hold across every task and every instance sharing the database.
//!
//! A chain carries a version bumped on every write. A refresher first takes a lease on the
//! version it saw (one row update, so only one wins), spends the refresh token, and writes the
//! new pair only if the version is still the one it leased.

use sqlx::Row;

use super::{PortalId, PortalStatus, Store, now};
use crate::crypto::TokenCipher;
use crate::secret::Secret;

/// What REST calls need about a portal, with its tokens opened.
#[derive(Debug, Clone)]
pub struct TokenChain {
    pub portal_id: PortalId,
    pub member_id: String,
    pub client_endpoint: String,
    pub server_endpoint: String,
    pub status: PortalStatus,
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    pub version: i64,
}

/// A freshly granted pair to store.
pub struct NewPair<'a> {
    pub access_token: &'a Secret,
    pub refresh_token: &'a Secret,
    pub expires_in: i64,
}

impl Store {
    pub async fn load_chain(&self, id: PortalId) -> anyhow::Result<Option<TokenChain>> {
        let row = sqlx::query(
            "SELECT id, member_id, client_endpoint, server_endpoint, status, access_token,
                 refresh_token, chain_version
             FROM portals WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };

        let member_id: String = row.try_get("member_id")?;
        let open = |column: &str, sealed: Option<Vec<u8>>| -> anyhow::Result<Option<Secret>> {
            sealed
                .map(|s| self.cipher().open(&s, &format!("{member_id}/{column}")))
                .transpose()
        };
        Ok(Some(TokenChain {
            portal_id: id,
            access_token: open("access", row.try_get("access_token")?)?,
            refresh_token: open("refresh", row.try_get("refresh_token")?)?,
            member_id: member_id.clone(),
            client_endpoint: row.try_get("client_endpoint")?,
            server_endpoint: row.try_get("server_endpoint")?,
            status: PortalStatus::parse(&row.try_get::<String, _>("status")?),
            version: row.try_get("chain_version")?,
        }))
    }

    /// Takes the right to refresh chain `version` for `lease_secs`. Fails when the chain has
    /// moved on or another owner holds a live lease.
    pub async fn take_refresh_lease(
        &self,
        id: PortalId,
        version: i64,
        owner: &str,
        lease_secs: i64,
    ) -> anyhow::Result<bool> {
        let now = now();
        let taken = sqlx::query(
            "UPDATE portals SET refresh_owner = $3, refresh_lease_until = $4
             WHERE id = $1 AND chain_version = $2
               AND (refresh_lease_until IS NULL OR refresh_lease_until < $5)",
        )
        .bind(id.0)
        .bind(version)
        .bind(owner)
        .bind(now + lease_secs)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Stores the pair a lease holder got; `false` if the chain was replaced meanwhile
    /// (a reinstall), in which case the stored chain is the newer one.
    pub async fn store_refreshed_pair(
        &self,
        id: PortalId,
        member_id: &str,
        version: i64,
        owner: &str,
        pair: NewPair<'_>,
    ) -> anyhow::Result<bool> {
        let cipher: &TokenCipher = self.cipher();
        let now = now();
        let stored = sqlx::query(
            "UPDATE portals SET access_token = $4, refresh_token = $5, access_expires_at = $6,
                 chain_version = chain_version + 1, refresh_owner = NULL,
                 refresh_lease_until = NULL, last_refresh_at = $7, updated_at = $7
             WHERE id = $1 AND chain_version = $2 AND refresh_owner = $3",
        )
        .bind(id.0)
        .bind(version)
        .bind(owner)
        .bind(cipher.seal(pair.access_token.expose(), &format!("{member_id}/access")))
        .bind(cipher.seal(pair.refresh_token.expose(), &format!("{member_id}/refresh")))
        .bind(now + pair.expires_in)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(stored.rows_affected() == 1)
    }

    /// Gives a lease back without a new pair (the refresh failed).
    pub async fn release_refresh_lease(&self, id: PortalId, owner: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE portals SET refresh_owner = NULL, refresh_lease_until = NULL
             WHERE id = $1 AND refresh_owner = $2",
        )
        .bind(id.0)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Puts a portal in trouble (or back to active) unless its chain has been replaced since
    /// `version`, so a late failure cannot undo a reinstall.
    pub async fn set_portal_status(
        &self,
        id: PortalId,
        version: i64,
        status: PortalStatus,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE portals SET status = $3, status_reason = $4, refresh_owner = NULL,
                 refresh_lease_until = NULL, updated_at = $5
             WHERE id = $1 AND chain_version = $2 AND status <> 'removed'",
        )
        .bind(id.0)
        .bind(version)
        .bind(status.as_str())
        .bind(reason)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The portal answered from a new address.
    pub async fn move_portal(
        &self,
        id: PortalId,
        domain: &str,
        client_endpoint: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE portals SET domain = $2, client_endpoint = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id.0)
        .bind(domain)
        .bind(client_endpoint)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Notes REST traffic, at most once a minute per portal to spare writes.
    pub async fn note_rest_traffic(&self, id: PortalId) -> anyhow::Result<()> {
        let now = now();
        sqlx::query(
            "UPDATE portals SET last_rest_at = $2
             WHERE id = $1 AND (last_rest_at IS NULL OR last_rest_at < $3)",
        )
        .bind(id.0)
        .bind(now)
        .bind(now - 60)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Active portals whose chain has seen neither a call nor a refresh since `cutoff`.
    pub async fn idle_portals(&self, cutoff: i64) -> anyhow::Result<Vec<PortalId>> {
        let rows = sqlx::query(
            "SELECT id FROM portals
             WHERE status = 'active' AND refresh_token IS NOT NULL
               AND COALESCE(last_rest_at, 0) < $1 AND COALESCE(last_refresh_at, 0) < $1
               AND COALESCE(installed_at, 0) < $1",
        )
        .bind(cutoff)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok(PortalId(row.try_get("id")?)))
            .collect()
    }

    /// Re-seals every stored token under `new` (the key change command).
    pub async fn reseal_tokens(&self, new: &TokenCipher) -> anyhow::Result<usize> {
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(
            "SELECT id, member_id, application_token, access_token, refresh_token FROM portals",
        )
        .fetch_all(&mut *tx)
        .await?;

        for row in &rows {
            let member_id: String = row.try_get("member_id")?;
            let mut sealed = Vec::new();
            for (column, name) in [
                ("application_token", "application"),
                ("access_token", "access"),
                ("refresh_token", "refresh"),
            ] {
                let context = format!("{member_id}/{name}");
                let value = row
                    .try_get::<Option<Vec<u8>>, _>(column)?
                    .map(|s| self.cipher().open(&s, &context))
                    .transpose()?
                    .map(|plain| new.seal(plain.expose(), &context));
                sealed.push(value);
            }
            let [application, access, refresh] =
                <[Option<Vec<u8>>; 3]>::try_from(sealed).expect("three columns");
            sqlx::query(
                "UPDATE portals SET application_token = $2, access_token = $3, refresh_token = $4 WHERE id = $1",
            )
            .bind(row.try_get::<i64, _>("id")?)
            .bind(application)
            .bind(access)
            .bind(refresh)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}
