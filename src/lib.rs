//! b24-activity: an activity log of smart-process item changes for Bitrix24 portals.
//!
//! `main.rs` only wires things together; the library holds the application so that tests, the
//! `serve` command and the demo build exactly the same app.

pub mod app;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod enrich;
pub mod error;
pub mod install;
pub mod intake;
pub mod live;
pub mod platform;
pub mod secret;
pub mod simulator;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod verify;
