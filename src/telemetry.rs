//! Logging: one structured line per request, spans carrying the request id and the portal.
//!
//! What never goes into a log line: tokens, secrets, URLs with `auth=`, request bodies.

use tracing_subscriber::EnvFilter;

/// Quiet defaults for libraries; `RUST_LOG` overrides them.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,hyper=warn,reqwest=warn,tower_http=warn";

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
