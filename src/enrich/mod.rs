//! Enrichment: turning stored events ("item 24 of type 1220 changed") into activity entries
//! that say what the item is, who changed it and which fields went from what to what.
//!
//! A background worker leases due events, groups them by portal, fetches each changed item
//! once per round with `batch` (up to 50 `crm.item.get` per request) inside the portal's rate
//! budget, compares it with the last snapshot and writes one entry per event. Failures are
//! retried with backoff and jitter; every waiting event carries the reason it waits.

pub mod diff;
mod entries;
pub mod names;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::app::{AppState, stopped};
use crate::platform::portal::{CallError, batch_command};
use crate::store::{LeasedEvent, PortalId, PortalStatus, Snapshot, now_ms};
use entries::{Fetched, drop_repeats_within, entries_for_item, wanted_names};

/// Events leased per round, across portals.
const ROUND_SIZE: i64 = 1000;
/// After a wake-up, wait this long so a burst arrives and each item is fetched once for it;
/// while events keep coming, wait again, up to `MAX_LINGER`.
const LINGER: Duration = Duration::from_millis(250);
const MAX_LINGER: Duration = Duration::from_secs(2);
/// Without a wake-up, look for due events (retries, other instances' intake) this often.
const POLL: Duration = Duration::from_millis(1000);
/// Tries before an event is given up and shown as failed.
const MAX_ATTEMPTS: i64 = 12;
/// A portal that cannot be called (needs reinstall, payment) is looked at again after this.
const PARKED_MS: i64 = 10 * 60 * 1000;

/// Wakes the worker when intake has stored something, and counts how often it did.
#[derive(Clone, Default)]
pub struct Wake(Arc<(Notify, AtomicU64)>);

impl Wake {
    pub fn notify(&self) {
        self.0.1.fetch_add(1, Ordering::Relaxed);
        self.0.0.notify_one();
    }

    fn count(&self) -> u64 {
        self.0.1.load(Ordering::Relaxed)
    }

    /// Waits while events keep arriving, at most `MAX_LINGER`: a burst then costs one fetch
    /// per item instead of one per event.
    async fn linger(&self) {
        let start = tokio::time::Instant::now();
        loop {
            let before = self.count();
            tokio::time::sleep(LINGER).await;
            if self.count() == before || start.elapsed() >= MAX_LINGER {
                return;
            }
        }
    }
}

/// Runs rounds until `stop` flips to true.
pub async fn run_worker(state: AppState, mut stop: watch::Receiver<bool>) {
    let owner = format!("enrich-{}", crate::crypto::TokenKey::generate().to_hex());
    loop {
        let worked = match run_round(&state, &owner).await {
            Ok(n) => n,
            Err(err) => {
                tracing::warn!("enrichment round failed: {err:#}");
                0
            }
        };
        let stopping = *stop.borrow();
        if stopping {
            return;
        }
        if worked == 0 {
            tokio::select! {
                _ = state.wake.0.0.notified() => {}
                _ = tokio::time::sleep(POLL) => continue,
                _ = stopped(&mut stop) => return,
            }
        }
        state.wake.linger().await;
    }
}

/// One round: lease what is due and work through it portal by portal, portals side by side.
/// Returns how many events were leased.
pub async fn run_round(state: &AppState, owner: &str) -> anyhow::Result<usize> {
    // A worker that dies keeps its events for the lease; then another takes them.
    let lease_ms = state.settings.enrich_lease.as_millis() as i64;
    let events = state
        .store
        .lease_events(owner, ROUND_SIZE, lease_ms)
        .await?;
    let leased = events.len();
    let mut by_portal: BTreeMap<PortalId, Vec<LeasedEvent>> = BTreeMap::new();
    for event in events {
        by_portal.entry(event.portal_id).or_default().push(event);
    }

    let mut tasks = tokio::task::JoinSet::new();
    for (portal, events) in by_portal {
        let (state, owner) = (state.clone(), owner.to_owned());
        tasks.spawn(async move {
            if let Err(err) = enrich_portal(&state, &owner, portal, events).await {
                tracing::warn!(portal = portal.0, "enrichment failed: {err:#}");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(leased)
}

async fn enrich_portal(
    state: &AppState,
    owner: &str,
    portal: PortalId,
    events: Vec<LeasedEvent>,
) -> anyhow::Result<()> {
    let mut items: BTreeMap<(i64, i64), Vec<LeasedEvent>> = BTreeMap::new();
    for event in events {
        items
            .entry((event.entity_type_id, event.item_id))
            .or_default()
            .push(event);
    }

    // Items whose last event is a delete need no fetch: the platform would say NOT_FOUND.
    let to_fetch: Vec<(i64, i64)> = items
        .iter()
        .filter(|(_, evs)| evs.last().is_some_and(|e| e.action != "delete"))
        .map(|(key, _)| *key)
        .collect();
    let mut fetched: HashMap<(i64, i64), Fetched> = HashMap::new();
    for chunk in to_fetch.chunks(50) {
        let commands: Vec<(String, String)> = chunk
            .iter()
            .enumerate()
            .map(|(n, (type_id, id))| {
                let params = [
                    ("entityTypeId", type_id.to_string()),
                    ("id", id.to_string()),
                ];
                (format!("i{n}"), batch_command("crm.item.get", &params))
            })
            .collect();
        match state.portals.batch(portal, &commands).await {
            Ok(answer) => {
                for (n, key) in chunk.iter().enumerate() {
                    let name = format!("i{n}");
                    let outcome = match (answer.results.get(&name), answer.errors.get(&name)) {
                        (Some(result), _) => match result["item"].as_object() {
                            Some(item) => Fetched::Item(item.clone()),
                            None => Fetched::Retry("the portal answered without the item".into()),
                        },
                        (None, Some((code, _))) if code == "NOT_FOUND" => Fetched::Gone,
                        (None, Some((code, _)))
                            if code == "ACCESS_DENIED" || code == "insufficient_scope" =>
                        {
                            Fetched::Inaccessible
                        }
                        (None, Some((code, _))) => {
                            Fetched::Retry(format!("the portal answered {code}"))
                        }
                        (None, None) => {
                            Fetched::Retry("the portal answered nothing for the item".into())
                        }
                    };
                    fetched.insert(*key, outcome);
                }
            }
            Err(err) => {
                let ids: Vec<i64> = chunk
                    .iter()
                    .flat_map(|key| items[key].iter().map(|e| e.id))
                    .collect();
                let attempts = chunk
                    .iter()
                    .flat_map(|key| items[key].iter().map(|e| e.attempts))
                    .max()
                    .unwrap_or(1);
                postpone(state, owner, &ids, attempts, &err).await?;
                for key in chunk {
                    items.remove(key);
                }
            }
        }
    }

    // Retry what the batch could not answer for; name what is left and write it.
    for (key, outcome) in &fetched {
        if let Fetched::Retry(reason) = outcome
            && let Some(events) = items.remove(key)
        {
            let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            let attempts = events.iter().map(|e| e.attempts).max().unwrap_or(1);
            retry_later(state, owner, &ids, attempts, reason).await?;
        }
    }
    if items.is_empty() {
        return Ok(());
    }

    let mut previous = HashMap::new();
    for key in items.keys() {
        if let Some(Value::Object(snapshot)) = state.store.snapshot(portal, key.0, key.1).await? {
            previous.insert(*key, snapshot);
        }
    }
    let wanted = wanted_names(&items, &fetched, &previous);
    let names = names::resolve(&state.store, &state.portals, portal, &wanted).await?;

    // A repeated delivery: within this round the same key twice, or a key already recorded
    // that changed nothing this time. A real second change in the same second still differs.
    let keys: Vec<&str> = items
        .values()
        .flatten()
        .map(|e| e.dedup_key.as_str())
        .collect();
    let recorded = state.store.recorded_keys(portal, &keys).await?;
    let mut entries = Vec::new();
    let mut repeats = Vec::new();
    let mut snapshots = Vec::new();
    for (key, events) in &items {
        let (unique, repeated) = drop_repeats_within(events);
        repeats.extend(repeated);
        let built = entries_for_item(portal, &unique, previous.get(key), fetched.get(key), &names);
        for (event, entry) in unique.iter().zip(built) {
            let empty = entry.changes.as_array().is_none_or(|c| c.is_empty());
            if empty && recorded.contains(&event.dedup_key) {
                repeats.push(event.id);
            } else {
                entries.push(entry);
            }
        }
        if let Some(Fetched::Item(item)) = fetched.get(key) {
            snapshots.push((key, Value::Object(item.clone())));
        }
    }
    let snapshot_rows: Vec<Snapshot> = snapshots
        .iter()
        .map(|((type_id, id), fields)| Snapshot {
            portal_id: portal,
            entity_type_id: *type_id,
            item_id: *id,
            fields,
        })
        .collect();
    let written = state
        .store
        .record_activity(owner, &entries, &repeats, &snapshot_rows)
        .await?;
    tracing::debug!(portal = portal.0, written, "activity recorded");
    state.live.publish(portal);
    Ok(())
}

/// A whole request failed: wait for the reason the error gives.
async fn postpone(
    state: &AppState,
    owner: &str,
    ids: &[i64],
    attempts: i64,
    err: &CallError,
) -> anyhow::Result<()> {
    match err {
        CallError::PortalUnavailable(status) => {
            let reason = match status {
                PortalStatus::PaymentRequired => "waiting: the app's paid period is over",
                PortalStatus::Removed => "the app was removed from the portal",
                _ => "waiting: the app must be reinstalled on the portal",
            };
            state
                .store
                .retry_events(ids, owner, now_ms() + PARKED_MS, reason)
                .await
        }
        err if err.is_transient() => {
            retry_later(state, owner, ids, attempts, &format!("retrying: {err}")).await
        }
        err => {
            tracing::warn!(events = ids.len(), "enrichment call refused: {err}");
            retry_later(state, owner, ids, attempts, &format!("retrying: {err}")).await
        }
    }
}

async fn retry_later(
    state: &AppState,
    owner: &str,
    ids: &[i64],
    attempts: i64,
    reason: &str,
) -> anyhow::Result<()> {
    if attempts >= MAX_ATTEMPTS {
        tracing::warn!(events = ids.len(), "giving up on events: {reason}");
        return state
            .store
            .fail_events(ids, owner, &format!("gave up: {reason}"))
            .await;
    }
    let at = now_ms() + backoff(state.settings.retry_base, attempts).as_millis() as i64;
    state.store.retry_events(ids, owner, at, reason).await
}

/// Doubling waits from `base`, at most five minutes, spread by a random ±25 %.
fn backoff(base: Duration, attempts: i64) -> Duration {
    let exponent = attempts.clamp(1, 16) as u32 - 1;
    let wait = base
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(Duration::from_secs(300));
    let jitter = rand::rng().random_range(0.75..1.25);
    wait.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_stops_at_five_minutes() {
        let base = Duration::from_millis(1000);
        for (attempts, expected) in [(1, 1000.0), (2, 2000.0), (4, 8000.0)] {
            let got = backoff(base, attempts).as_millis() as f64;
            assert!(
                (expected * 0.75..=expected * 1.25).contains(&got),
                "{attempts}: {got}"
            );
        }
        assert!(backoff(base, 40) <= Duration::from_secs(375));
    }
}
