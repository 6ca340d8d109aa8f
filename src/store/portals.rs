//! Portals: who installed the app, where their REST lives, their state and sealed tokens.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, now};
use crate::secret::Secret;

/// Database id of a portal; everything a portal owns refers to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortalId(pub i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortalStatus {
    /// Set up by the installer; waiting for ONAPPINSTALL to bring the application token.
    Installing,
    Active,
    /// The platform refused the token chain; an admin must reinstall.
    NeedsReinstall,
    /// The paid or trial period is over.
    PaymentRequired,
    Removed,
}

impl PortalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PortalStatus::Installing => "installing",
            PortalStatus::Active => "active",
            PortalStatus::NeedsReinstall => "needs_reinstall",
            PortalStatus::PaymentRequired => "payment_required",
            PortalStatus::Removed => "removed",
        }
    }

    pub(super) fn parse(text: &str) -> PortalStatus {
        match text {
            "installing" => PortalStatus::Installing,
            "active" => PortalStatus::Active,
            "needs_reinstall" => PortalStatus::NeedsReinstall,
            "payment_required" => PortalStatus::PaymentRequired,
            _ => PortalStatus::Removed,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Portal {
    pub id: PortalId,
    pub member_id: String,
    pub domain: String,
    pub client_endpoint: String,
    pub server_endpoint: String,
    pub status: PortalStatus,
    pub status_reason: Option<String>,
    pub lang: String,
    sealed_application_token: Option<Vec<u8>>,
}

/// What an install (the installer frame or ONAPPINSTALL) writes about a portal.
#[derive(Debug)]
pub struct Installation {
    pub member_id: String,
    pub domain: String,
    pub client_endpoint: String,
    pub server_endpoint: String,
    pub lang: String,
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_in: i64,
    /// Left as stored when `None`.
    pub application_token: Option<Secret>,
}

const PORTAL_COLUMNS: &str = "id, member_id, domain, client_endpoint, server_endpoint, status, \
                              status_reason, lang, application_token";

impl Store {
    pub async fn find_portal(&self, member_id: &str) -> anyhow::Result<Option<Portal>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PORTAL_COLUMNS} FROM portals WHERE member_id = $1"
        )))
        .bind(member_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| portal_from_row(&row)).transpose()
    }

    pub async fn portal(&self, id: PortalId) -> anyhow::Result<Option<Portal>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PORTAL_COLUMNS} FROM portals WHERE id = $1"
        )))
        .bind(id.0)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| portal_from_row(&row)).transpose()
    }

    /// Writes an install: the portal becomes `active` once an application token is known,
    /// `installing` before. A reinstall replaces the token chain and keeps the history.
    pub async fn record_installation(&self, install: &Installation) -> anyhow::Result<Portal> {
        let cipher = self.cipher();
        let member = &install.member_id;
        let access = cipher.seal(install.access_token.expose(), &format!("{member}/access"));
        let refresh = install
            .refresh_token
            .as_ref()
            .map(|t| cipher.seal(t.expose(), &format!("{member}/refresh")));
        let application = install
            .application_token
            .as_ref()
            .map(|t| cipher.seal(t.expose(), &format!("{member}/application")));
        let now = now();

        sqlx::query(
            "INSERT INTO portals (member_id, domain, client_endpoint, server_endpoint, status, lang,
                 application_token, access_token, refresh_token, access_expires_at,
                 installed_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, CASE WHEN $5 IS NULL THEN 'installing' ELSE 'active' END,
                 $6, $5, $7, $8, $9, $10, $10, $10)
             ON CONFLICT (member_id) DO UPDATE SET
                 domain = excluded.domain,
                 client_endpoint = excluded.client_endpoint,
                 server_endpoint = excluded.server_endpoint,
                 lang = excluded.lang,
                 application_token = COALESCE(excluded.application_token, portals.application_token),
                 status = CASE WHEN COALESCE(excluded.application_token, portals.application_token)
                     IS NULL THEN 'installing' ELSE 'active' END,
                 status_reason = NULL,
                 access_token = excluded.access_token,
                 refresh_token = COALESCE(excluded.refresh_token, portals.refresh_token),
                 access_expires_at = excluded.access_expires_at,
                 chain_version = portals.chain_version + 1,
                 refresh_owner = NULL,
                 refresh_lease_until = NULL,
                 installed_at = excluded.installed_at,
                 removed_at = NULL,
                 updated_at = excluded.updated_at",
        )
        .bind(member)
        .bind(&install.domain)
        .bind(&install.client_endpoint)
        .bind(&install.server_endpoint)
        .bind(application)
        .bind(&install.lang)
        .bind(access)
        .bind(refresh)
        .bind(now + install.expires_in.max(0))
        .bind(now)
        .execute(self.pool())
        .await?;

        self.find_portal(member)
            .await?
            .ok_or_else(|| anyhow::anyhow!("portal vanished while being installed"))
    }

    /// Uninstall without clean-up: every token goes, the history stays.
    pub async fn mark_removed(&self, id: PortalId) -> anyhow::Result<()> {
        let now = now();
        sqlx::query(
            "UPDATE portals SET status = 'removed', status_reason = NULL, application_token = NULL,
                 access_token = NULL, refresh_token = NULL, access_expires_at = NULL,
                 chain_version = chain_version + 1, refresh_owner = NULL,
                 refresh_lease_until = NULL, removed_at = $2, updated_at = $2
             WHERE id = $1",
        )
        .bind(id.0)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Uninstall with clean-up: the portal and everything it owns are deleted.
    pub async fn purge_portal(&self, id: PortalId) -> anyhow::Result<()> {
        let mut tx = self.pool().begin().await?;
        for sql in [
            "DELETE FROM events WHERE portal_id = $1",
            "DELETE FROM portals WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id.0).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Deletes everything of portals removed before `cutoff` (uninstalled without "delete
    /// data" and not reinstalled since). Returns how many went.
    pub async fn purge_removed_portals(&self, cutoff: i64) -> anyhow::Result<usize> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM portals WHERE status = 'removed' AND removed_at < $1",
        )
        .bind(cutoff)
        .fetch_all(self.pool())
        .await?;
        for id in &ids {
            self.purge_portal(PortalId(*id)).await?;
        }
        Ok(ids.len())
    }
}

impl Portal {
    /// Whether events from this portal are accepted.
    pub fn accepts_events(&self) -> bool {
        !matches!(self.status, PortalStatus::Removed)
    }

    /// The origin of the portal's pages, for `frame-ancestors`.
    pub fn origin(&self) -> Option<String> {
        let url = url::Url::parse(&self.client_endpoint).ok()?;
        Some(url.origin().ascii_serialization())
    }

    /// Compares a presented application token with the stored one in constant time.
    pub fn application_token_matches(&self, store: &Store, presented: &str) -> bool {
        let Some(sealed) = &self.sealed_application_token else {
            return false;
        };
        match store
            .cipher()
            .open(sealed, &format!("{}/application", self.member_id))
        {
            Ok(stored) => crate::crypto::secrets_match(stored.expose(), presented),
            Err(err) => {
                tracing::error!(portal = %self.member_id, "stored application token does not open: {err}");
                false
            }
        }
    }

    pub fn has_application_token(&self) -> bool {
        self.sealed_application_token.is_some()
    }
}

fn portal_from_row(row: &AnyRow) -> anyhow::Result<Portal> {
    Ok(Portal {
        id: PortalId(row.try_get("id")?),
        member_id: row.try_get("member_id")?,
        domain: row.try_get("domain")?,
        client_endpoint: row.try_get("client_endpoint")?,
        server_endpoint: row.try_get("server_endpoint")?,
        status: PortalStatus::parse(&row.try_get::<String, _>("status")?),
        status_reason: row.try_get("status_reason")?,
        lang: row.try_get("lang")?,
        sealed_application_token: row.try_get("application_token")?,
    })
}
