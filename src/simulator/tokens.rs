//! OAuth tokens of the simulated app: issuing, checking, single-use refresh, and the ways the
//! platform makes tokens stop working.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::wire::{random_hex, unix};

/// Why an access token was refused; each maps to the platform's 401 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Invalid,
    Expired,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Invalid => "invalid_token",
            TokenError::Expired => "expired_token",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            TokenError::Invalid => "The access token provided is invalid.",
            TokenError::Expired => "The access token provided has expired.",
        }
    }
}

/// Whose token it is: a portal (by index) and a user on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub portal: usize,
    pub user_id: u64,
}

struct AccessToken {
    holder: Holder,
    expires_at: SystemTime,
    dead: bool,
}

struct RefreshToken {
    holder: Holder,
    /// The access token issued beside it: it dies when this one is used.
    access: String,
    dead: bool,
}

/// A freshly issued access token, with the expiry fields the platform sends beside it.
pub(crate) struct Issued {
    pub access_token: String,
    pub expires: u64,
    pub expires_in: u64,
}

/// A freshly issued pair.
pub(crate) struct Pair {
    pub access: Issued,
    pub refresh_token: String,
}

/// What happened to a refresh token that could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RefreshRefusal {
    Unknown,
    Dead(Holder),
}

#[derive(Default)]
pub(crate) struct Tokens {
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
}

impl Tokens {
    pub fn issue_access(&mut self, holder: Holder, ttl: Duration) -> Issued {
        // 35 random bytes give the 70 hex characters of current platform tokens.
        let token = random_hex(35);
        let expires_at = SystemTime::now() + ttl;
        self.access.insert(
            token.clone(),
            AccessToken {
                holder,
                expires_at,
                dead: false,
            },
        );
        Issued {
            access_token: token,
            expires: unix(expires_at),
            expires_in: ttl.as_secs(),
        }
    }

    pub fn issue_pair(&mut self, holder: Holder, ttl: Duration) -> Pair {
        let access = self.issue_access(holder, ttl);
        let refresh_token = random_hex(35);
        self.refresh.insert(
            refresh_token.clone(),
            RefreshToken {
                holder,
                access: access.access_token.clone(),
                dead: false,
            },
        );
        Pair {
            access,
            refresh_token,
        }
    }

    /// Checks an access token; the expiry is compared on every call, like the platform.
    pub fn check(&self, token: &str) -> Result<Holder, TokenError> {
        let found = self.access.get(token).ok_or(TokenError::Invalid)?;
        if found.dead {
            return Err(TokenError::Invalid);
        }
        if SystemTime::now() >= found.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(found.holder)
    }

    /// Whose refresh token it is, and whether it still works.
    pub fn refresh_holder(&self, token: &str) -> Option<(Holder, bool)> {
        self.refresh.get(token).map(|r| (r.holder, !r.dead))
    }

    /// Uses up a refresh token: it and the access token issued beside it die at once.
    pub fn redeem(&mut self, token: &str) -> Result<Holder, RefreshRefusal> {
        let found = self.refresh.get_mut(token).ok_or(RefreshRefusal::Unknown)?;
        if found.dead {
            return Err(RefreshRefusal::Dead(found.holder));
        }
        found.dead = true;
        let (holder, access) = (found.holder, found.access.clone());

        if let Some(old) = self.access.get_mut(&access) {
            old.dead = true;
        }
        Ok(holder)
    }

    /// Every access token of the portal issued so far answers `expired_token` from now on.
    pub fn expire_access(&mut self, portal: usize) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for token in self.access.values_mut() {
            if token.holder.portal == portal {
                token.expires_at = token.expires_at.min(past);
            }
        }
    }

    pub fn revoke_refresh(&mut self, portal: usize) {
        for token in self.refresh.values_mut() {
            if token.holder.portal == portal {
                token.dead = true;
            }
        }
    }

    /// What uninstalling does: every token of the app on the portal stops working.
    pub fn kill_portal(&mut self, portal: usize) {
        self.revoke_refresh(portal);
        for token in self.access.values_mut() {
            if token.holder.portal == portal {
                token.dead = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const ALICE: Holder = Holder {
        portal: 0,
        user_id: 1,
    };

    #[test]
    fn a_refresh_token_works_once_and_takes_its_access_token_along() {
        let mut tokens = Tokens::default();
        let pair = tokens.issue_pair(ALICE, HOUR);
        assert_eq!(tokens.check(&pair.access.access_token), Ok(ALICE));

        assert_eq!(tokens.redeem(&pair.refresh_token), Ok(ALICE));
        assert_eq!(
            tokens.redeem(&pair.refresh_token),
            Err(RefreshRefusal::Dead(ALICE))
        );
        assert_eq!(
            tokens.check(&pair.access.access_token),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn expiring_touches_only_that_portal_and_only_tokens_issued_so_far() {
        let mut tokens = Tokens::default();
        let other = Holder {
            portal: 1,
            user_id: 1,
        };
        let old = tokens.issue_access(ALICE, HOUR);
        let elsewhere = tokens.issue_access(other, HOUR);

        tokens.expire_access(0);
        let new = tokens.issue_access(ALICE, HOUR);

        assert_eq!(tokens.check(&old.access_token), Err(TokenError::Expired));
        assert_eq!(tokens.check(&elsewhere.access_token), Ok(other));
        assert_eq!(tokens.check(&new.access_token), Ok(ALICE));
        assert_eq!(tokens.check("nope"), Err(TokenError::Invalid));
    }

    #[test]
    fn a_zero_ttl_token_is_expired_at_once() {
        let mut tokens = Tokens::default();
        let t = tokens.issue_access(ALICE, Duration::ZERO);
        assert_eq!(tokens.check(&t.access_token), Err(TokenError::Expired));
    }
}
