//! REST calls on behalf of a portal, with its stored token chain: refresh on `expired_token`
//! (one refresh per expiry, coordinated through the database), repeat after a domain change,
//! and the portal's state updated when the platform refuses the chain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use thiserror::Error;

use super::budget::RateBudget;
use super::oauth::{OAuthServers, RefreshError};
use super::rest::{self, RestError};
use crate::store::{NewPair, PortalId, PortalStatus, Store, TokenChain};

/// How long a refresher may hold a chain before others may take over.
const REFRESH_LEASE_SECS: i64 = 30;
/// How long a caller waits for another refresher's result.
const REFRESH_WAIT: Duration = Duration::from_secs(40);

#[derive(Debug, Error)]
pub enum CallError {
    #[error("portal is not available ({})", .0.as_str())]
    PortalUnavailable(PortalStatus),
    #[error("portal not found")]
    UnknownPortal,
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    #[error("store: {0:#}")]
    Store(#[from] anyhow::Error),
}

impl CallError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Rest(err) => {
                matches!(
                    err,
                    RestError::Transport { .. } | RestError::BadAnswer { .. }
                ) || err.status().is_some_and(|s| s == 429 || s >= 500)
            }
            CallError::Refresh(RefreshError::Unavailable(_)) | CallError::Store(_) => true,
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct PortalClient {
    store: Store,
    http: reqwest::Client,
    oauth: OAuthServers,
    budget: RateBudget,
    allow_http: bool,
    /// Names this process in refresh leases.
    owner: Arc<str>,
}

/// What a `batch` answered: results and errors by command key.
#[derive(Debug, Default)]
pub struct BatchAnswer {
    pub results: HashMap<String, Value>,
    pub errors: HashMap<String, (String, String)>,
}

/// One `batch` command: `method?query`.
pub fn batch_command(method: &str, params: &[(&str, String)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in params {
        query.append_pair(key, value);
    }
    format!("{method}?{}", query.finish())
}

impl PortalClient {
    pub fn new(
        store: Store,
        http: reqwest::Client,
        oauth: OAuthServers,
        budget: RateBudget,
        allow_http: bool,
    ) -> PortalClient {
        let owner = format!(
            "{}-{}",
            std::process::id(),
            crate::crypto::TokenKey::generate().to_hex()
        );
        PortalClient {
            store,
            http,
            oauth,
            budget,
            allow_http,
            owner: owner[..24].into(),
        }
    }

    /// Runs up to 50 commands in one request; a failing command fails alone.
    pub async fn batch(
        &self,
        portal: PortalId,
        commands: &[(String, String)],
    ) -> Result<BatchAnswer, CallError> {
        let cmd: Map<String, Value> = commands
            .iter()
            .map(|(key, c)| (key.clone(), Value::String(c.clone())))
            .collect();
        let answer = self
            .call(portal, "batch", json!({"halt": 0, "cmd": cmd}))
            .await?;

        let inner = &answer["result"];
        let mut out = BatchAnswer::default();
        // The platform sends an empty map as `[]`; only objects carry entries.
        if let Some(results) = inner["result"].as_object() {
            out.results = results
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        if let Some(errors) = inner["result_error"].as_object() {
            for (key, err) in errors {
                let code = match &err["error"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let description = err["error_description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                out.errors.insert(key.clone(), (code, description));
            }
        }
        Ok(out)
    }

    /// Calls `method` with the portal's stored chain.
    pub async fn call(
        &self,
        portal: PortalId,
        method: &str,
        params: Value,
    ) -> Result<Value, CallError> {
        let mut chain = self.active_chain(portal).await?;
        let (mut refreshed, mut moved) = (false, false);
        loop {
            let token = chain
                .access_token
                .as_ref()
                .ok_or(CallError::PortalUnavailable(chain.status))?;
            self.budget.acquire(portal).await;
            match rest::call(
                &self.http,
                &chain.client_endpoint,
                method,
                params.clone(),
                token,
            )
            .await
            {
                Ok(answer) => {
                    self.store.note_rest_traffic(portal).await?;
                    return Ok(answer);
                }
                Err(err) if is_stale_token(&err) && !refreshed => {
                    chain = self.refresh(portal, chain.version).await?;
                    refreshed = true;
                }
                Err(RestError::Moved { location, .. }) if !moved => {
                    chain = self.follow_move(&chain, &location).await?;
                    moved = true;
                }
                Err(err) => {
                    if err.code() == Some("QUERY_LIMIT_EXCEEDED") {
                        self.budget.fill(portal).await;
                    }
                    self.note_refusal(&chain, &err).await?;
                    return Err(err.into());
                }
            }
        }
    }

    async fn active_chain(&self, portal: PortalId) -> Result<TokenChain, CallError> {
        let chain = self
            .store
            .load_chain(portal)
            .await?
            .ok_or(CallError::UnknownPortal)?;
        match chain.status {
            PortalStatus::Active => Ok(chain),
            other => Err(CallError::PortalUnavailable(other)),
        }
    }

    /// Makes sure chain `seen` is replaced by a refreshed one, refreshing it here only if no
    /// other task or instance already did or is doing so. Returns the chain to use now.
    pub async fn refresh(&self, portal: PortalId, seen: i64) -> Result<TokenChain, CallError> {
        let deadline = Instant::now() + REFRESH_WAIT;
        loop {
            let chain = self
                .store
                .load_chain(portal)
                .await?
                .ok_or(CallError::UnknownPortal)?;
            if chain.version != seen {
                return match chain.status {
                    PortalStatus::Active => Ok(chain),
                    other => Err(CallError::PortalUnavailable(other)),
                };
            }
            if chain.status != PortalStatus::Active {
                return Err(CallError::PortalUnavailable(chain.status));
            }
            if self
                .store
                .take_refresh_lease(portal, seen, &self.owner, REFRESH_LEASE_SECS)
                .await?
            {
                return self.refresh_leased(chain).await;
            }
            if Instant::now() > deadline {
                return Err(
                    RefreshError::Unavailable("another refresh is still running".into()).into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn refresh_leased(&self, chain: TokenChain) -> Result<TokenChain, CallError> {
        let id = chain.portal_id;
        let result = match (
            self.oauth.trusted(&chain.server_endpoint),
            &chain.refresh_token,
        ) {
            (Some(server), Some(refresh)) => self.oauth.refresh(&self.http, server, refresh).await,
            (None, _) => Err(RefreshError::Unavailable(
                "the portal's OAuth server is no longer trusted".into(),
            )),
            (_, None) => Err(RefreshError::Refused("no refresh token".into())),
        };

        match result {
            Ok(grant) => {
                let pair = NewPair {
                    access_token: &grant.access_token,
                    refresh_token: &grant.refresh_token,
                    expires_in: grant.expires_in,
                };
                let stored = self
                    .store
                    .store_refreshed_pair(id, &chain.member_id, chain.version, &self.owner, pair)
                    .await?;
                tracing::info!(portal = %chain.member_id, stored, "token chain refreshed");
                self.active_chain(id).await
            }
            Err(RefreshError::Refused(code)) => {
                let status = refusal_status(&code).unwrap_or(PortalStatus::NeedsReinstall);
                let reason = format!("the platform refused the token chain ({code})");
                tracing::warn!(portal = %chain.member_id, %code, "token refresh refused; portal is {}", status.as_str());
                self.store
                    .set_portal_status(id, chain.version, status, Some(&reason))
                    .await?;
                Err(RefreshError::Refused(code).into())
            }
            Err(err) => {
                tracing::warn!(portal = %chain.member_id, "token refresh failed: {err}");
                self.store.release_refresh_lease(id, &self.owner).await?;
                Err(err.into())
            }
        }
    }

    /// The portal answered with a redirect: store its new address and go on there.
    async fn follow_move(
        &self,
        chain: &TokenChain,
        location: &str,
    ) -> Result<TokenChain, CallError> {
        let base = url::Url::parse(&chain.client_endpoint).ok();
        let target = base
            .as_ref()
            .and_then(|b| b.join(location).ok())
            .filter(|u| u.scheme() == "https" || (self.allow_http && u.scheme() == "http"));
        let Some(target) = target else {
            return Err(RestError::BadAnswer {
                method: "redirect".into(),
                status: 302,
            }
            .into());
        };
        let domain = match (target.host_str(), target.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => {
                return Err(RestError::BadAnswer {
                    method: "redirect".into(),
                    status: 302,
                }
                .into());
            }
        };
        let endpoint = format!("{}/rest/", target.origin().ascii_serialization());
        tracing::info!(portal = %chain.member_id, %domain, "portal moved to a new address");
        self.store
            .move_portal(chain.portal_id, &domain, &endpoint)
            .await?;
        self.active_chain(chain.portal_id).await
    }

    /// REST answers that say the portal itself is in trouble change its state.
    async fn note_refusal(&self, chain: &TokenChain, err: &RestError) -> Result<(), CallError> {
        if let Some(status) = err.code().and_then(refusal_status) {
            let reason = format!(
                "the portal refused a call ({})",
                err.code().unwrap_or_default()
            );
            self.store
                .set_portal_status(chain.portal_id, chain.version, status, Some(&reason))
                .await?;
        }
        Ok(())
    }

    /// Gives every active portal idle since `idle_for` one refresh, so that its chain never
    /// runs out. Returns how many were refreshed.
    pub async fn refresh_idle_portals(&self, idle_for: Duration) -> anyhow::Result<usize> {
        let cutoff = crate::store::now() - idle_for.as_secs() as i64;
        let mut refreshed = 0;
        for portal in self.store.idle_portals(cutoff).await? {
            let Some(chain) = self.store.load_chain(portal).await? else {
                continue;
            };
            match self.refresh(portal, chain.version).await {
                Ok(_) => refreshed += 1,
                Err(err) => tracing::warn!(portal = %chain.member_id, "idle refresh failed: {err}"),
            }
        }
        Ok(refreshed)
    }
}

/// An access token that may only be stale: expired, or spent by a refresh elsewhere.
fn is_stale_token(err: &RestError) -> bool {
    matches!(err.code(), Some("expired_token" | "invalid_token"))
}

/// The portal state that a refusal code means, if it means one.
fn refusal_status(code: &str) -> Option<PortalStatus> {
    match code {
        "invalid_grant" | "NOT_INSTALLED" | "invalid_client" | "no refresh token" => {
            Some(PortalStatus::NeedsReinstall)
        }
        "PAYMENT_REQUIRED" => Some(PortalStatus::PaymentRequired),
        _ => None,
    }
}
