//! The per-portal REST budget: a leaky bucket like the platform's own, so that the app waits
//! before it would be refused. One instance (SQLite) keeps the buckets in memory; several
//! instances on PostgreSQL share them through the database, as the platform counts their
//! requests together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{PortalId, Store};

#[derive(Clone)]
pub struct RateBudget {
    per_second: f64,
    burst: f64,
    buckets: Arc<Mutex<HashMap<PortalId, Bucket>>>,
    /// Where the buckets live when instances share them.
    shared: Option<Store>,
}

struct Bucket {
    level: f64,
    at: Instant,
}

impl RateBudget {
    pub fn new(per_second: f64, burst: f64) -> RateBudget {
        RateBudget {
            per_second,
            burst: burst.max(1.0),
            buckets: Arc::default(),
            shared: None,
        }
    }

    /// A budget kept in `store`, shared with every instance on the same database.
    pub fn shared(store: Store, per_second: f64, burst: f64) -> RateBudget {
        RateBudget {
            shared: Some(store),
            ..RateBudget::new(per_second, burst)
        }
    }

    /// Waits until the portal may take one more request, and takes it.
    pub async fn acquire(&self, portal: PortalId) {
        if let Some(store) = &self.shared {
            loop {
                match store.take_budget(portal, self.per_second, self.burst).await {
                    Ok(None) => return,
                    Ok(Some(wait)) => tokio::time::sleep(wait).await,
                    Err(err) => {
                        // Better this instance's own bucket than no budget at all.
                        tracing::warn!("shared REST budget unavailable: {err:#}");
                        break;
                    }
                }
            }
        }
        while let Some(wait) = self.try_take(portal) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a request if the bucket has room, else says how long until it has.
    fn try_take(&self, portal: PortalId) -> Option<Duration> {
        let mut buckets = self.buckets.lock().expect("budget lock");
        let now = Instant::now();
        let bucket = buckets.entry(portal).or_insert(Bucket {
            level: 0.0,
            at: now,
        });
        let drained = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.level = (bucket.level - drained).max(0.0);
        bucket.at = now;
        if bucket.level + 1.0 <= self.burst {
            bucket.level += 1.0;
            None
        } else {
            Some(Duration::from_secs_f64(
                (bucket.level + 1.0 - self.burst) / self.per_second,
            ))
        }
    }

    /// After the platform refused for load, treat the bucket as full.
    pub async fn fill(&self, portal: PortalId) {
        if let Some(store) = &self.shared
            && let Err(err) = store.fill_budget(portal, self.burst).await
        {
            tracing::warn!("shared REST budget unavailable: {err:#}");
        }
        let mut buckets = self.buckets.lock().expect("budget lock");
        buckets.insert(
            portal,
            Bucket {
                level: self.burst,
                at: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_passes_then_requests_wait_for_the_drain() {
        let budget = RateBudget::new(2.0, 3.0);
        let portal = PortalId(1);

        for _ in 0..3 {
            assert_eq!(budget.try_take(portal), None);
        }
        let wait = budget.try_take(portal).expect("over the burst");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(
            budget.try_take(PortalId(2)),
            None,
            "portals have their own buckets"
        );
    }

    #[tokio::test]
    async fn a_refusal_fills_the_bucket() {
        let budget = RateBudget::new(2.0, 50.0);
        budget.fill(PortalId(1)).await;
        assert!(budget.try_take(PortalId(1)).is_some());
    }
}
