//! Live updates: who is told that a portal's log has new entries.
//!
//! Inside one process a broadcast channel carries the news from the enrichment worker to every
//! open page of that portal.

use tokio::sync::broadcast;

use crate::store::PortalId;

#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<PortalId>,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            sender: broadcast::channel(1024).0,
        }
    }
}

impl Live {
    /// Tells every listener that `portal` has new entries.
    pub fn publish(&self, portal: PortalId) {
        // No listener is not an error: nobody has the page open.
        let _ = self.sender.send(portal);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PortalId> {
        self.sender.subscribe()
    }
}
