//! Portals whose events intake accepted moments ago.
//!
//! A burst brings many events of one portal, and looking the portal up and opening its sealed
//! application token for each would cost more than storing the event. So an acceptance is
//! remembered for `FRESH`, by member id, with the token that passed. Only acceptances are
//! remembered: anything else (an unknown portal, another token, a removed app) is decided by
//! the database, as without this. An install or uninstall handled here forgets the portal at
//! once; one handled by another instance on the same database is seen within `FRESH`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::crypto::secrets_match;
use crate::secret::Secret;
use crate::store::PortalId;

/// How long an acceptance stands without asking the database again.
const FRESH: Duration = Duration::from_secs(2);
/// Portals remembered at most; past this, the stale ones go, and if none is stale, all.
const MOST: usize = 10_000;

#[derive(Clone, Default)]
pub struct RecentPortals {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    accepted: HashMap<String, Accepted>,
    /// Bumped by every `forget`, so that a lookup that began before it is not remembered.
    generation: u64,
}

struct Accepted {
    portal: PortalId,
    token: Secret,
    at: Instant,
}

/// When a database lookup began, for `remember`.
#[derive(Clone, Copy)]
pub struct Generation(u64);

impl RecentPortals {
    /// The portal, if an event of `member_id` with this very token was accepted moments ago.
    pub fn accepted(&self, member_id: &str, presented: &str) -> Option<PortalId> {
        let inner = self.lock();
        let entry = inner.accepted.get(member_id)?;
        let fresh = entry.at.elapsed() < FRESH;
        (fresh && secrets_match(entry.token.expose(), presented)).then_some(entry.portal)
    }

    /// Call before looking the portal up in the database.
    pub fn generation(&self) -> Generation {
        Generation(self.lock().generation)
    }

    /// Remembers that the database accepted `presented` for the portal, unless the portal was
    /// forgotten since the lookup began (`seen`): then the lookup may be out of date.
    pub fn remember(&self, seen: Generation, member_id: &str, portal: PortalId, presented: &str) {
        let mut inner = self.lock();
        if inner.generation != seen.0 {
            return;
        }
        if inner.accepted.len() >= MOST {
            inner.accepted.retain(|_, entry| entry.at.elapsed() < FRESH);
            if inner.accepted.len() >= MOST {
                inner.accepted.clear();
            }
        }
        inner.accepted.insert(
            member_id.to_owned(),
            Accepted {
                portal,
                token: Secret::new(presented.to_owned()),
                at: Instant::now(),
            },
        );
    }

    /// The portal was installed or uninstalled: ask the database next time.
    pub fn forget(&self, member_id: &str) {
        let mut inner = self.lock();
        inner.accepted.remove(member_id);
        inner.generation += 1;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing here can be left half-changed by a panic.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_that_passed_is_accepted_again() {
        let recent = RecentPortals::default();
        let seen = recent.generation();
        recent.remember(seen, "m1", PortalId(7), "token-a");

        assert_eq!(recent.accepted("m1", "token-a"), Some(PortalId(7)));
        assert_eq!(recent.accepted("m1", "token-b"), None);
        assert_eq!(recent.accepted("m2", "token-a"), None);
    }

    #[test]
    fn a_forgotten_portal_is_asked_for_again() {
        let recent = RecentPortals::default();
        recent.remember(recent.generation(), "m1", PortalId(7), "token-a");
        recent.forget("m1");
        assert_eq!(recent.accepted("m1", "token-a"), None);
    }

    #[test]
    fn a_lookup_that_began_before_an_uninstall_is_not_remembered() {
        let recent = RecentPortals::default();
        let seen = recent.generation();
        recent.forget("m1");
        recent.remember(seen, "m1", PortalId(7), "token-a");
        assert_eq!(recent.accepted("m1", "token-a"), None);
    }

    #[test]
    fn an_acceptance_goes_stale() {
        let recent = RecentPortals::default();
        recent.remember(recent.generation(), "m1", PortalId(7), "token-a");
        recent.lock().accepted.get_mut("m1").unwrap().at -= FRESH;
        assert_eq!(recent.accepted("m1", "token-a"), None);
    }
}
