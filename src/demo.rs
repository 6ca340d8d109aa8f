//! `b24-activity demo`: the app and a simulated portal on this machine, wired together the
//! way a real portal and a real deployment would be, with a few item changes already made.
//!
//! This is the only place besides the tests that knows the simulator: it starts it, then
//! configures the app with the simulator's addresses as it would be configured with real ones.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::net::TcpListener;

use crate::app::{self, AppState};
use crate::config::Settings;
use crate::simulator::{AppRegistration, Changer, SimPortal, Simulator, SimulatorConfig};

const DEMO_CLIENT_ID: &str = "local.b24activity.demo";

pub async fn run() -> anyhow::Result<()> {
    let secret = crate::crypto::TokenKey::generate().to_hex();
    let sim = Simulator::start(SimulatorConfig {
        client_id: DEMO_CLIENT_ID.to_owned(),
        client_secret: secret.clone(),
        ..SimulatorConfig::default()
    })
    .await
    .context("starting the portal simulator")?;

    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("setting LISTEN_ADDR: cannot listen on {listen}"))?;
    let public_url = format!("http://{}/", listener.local_addr()?);
    sim.register_app(AppRegistration {
        install_url: format!("{public_url}install"),
        app_url: format!("{public_url}app"),
    });

    let settings = demo_settings(&sim, &public_url, &secret)?;
    let state = AppState::build(settings).await?;
    let server = tokio::spawn(app::serve(listener, state.clone(), app::shutdown_signal()));

    let portal = populate(&sim).await?;
    println!();
    println!("b24-activity demo is running (Ctrl-C stops it).");
    println!("  simulated portal page: {}", portal.page_url());
    println!("  the app (for portals): {public_url}");
    println!();

    server.await.context("server task")??;
    sim.shutdown().await;
    state.store.close().await;
    println!("demo stopped");
    Ok(())
}

/// The app's settings for the demo: the simulator's addresses, plain http on loopback, and
/// whatever the environment says about the database and the key.
fn demo_settings(sim: &Simulator, public_url: &str, secret: &str) -> anyhow::Result<Settings> {
    let settings = Settings::from_lookup(|name| match name {
        "PUBLIC_URL" => Some(public_url.to_owned()),
        "B24_CLIENT_ID" => Some(DEMO_CLIENT_ID.to_owned()),
        "B24_CLIENT_SECRET" => Some(secret.to_owned()),
        "B24_OAUTH_SERVERS" => Some(sim.oauth_base()),
        "B24_ALLOW_HTTP" => Some("true".to_owned()),
        "BX24_SCRIPT_URL" => Some(sim.bx24_script_url()),
        "LISTEN_ADDR" => None,
        other => std::env::var(other).ok(),
    })?;
    Ok(settings)
}

/// Installs the app into a new simulated portal and makes a few changes there.
async fn populate(sim: &Simulator) -> anyhow::Result<SimPortal> {
    let portal = sim.add_portal().await?;
    portal.add_type(1220, "Orders");
    portal.add_type(1038, "Contracts");
    portal.add_user(1, "Ivan", "Petrov");
    portal.add_user(7, "Maria", "Sokolova");
    portal.add_stage(1220, 30, "DT1220_30:NEW", "New");
    portal.add_stage(1220, 30, "DT1220_30:WON", "Won");

    let installer = portal.open_installer(1).await?;
    anyhow::ensure!(
        installer.status == 200,
        "installer answered {}",
        installer.status
    );
    portal.finish_install().await?;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let order = json!({"title": "Invoice for ACME", "stageId": "DT1220_30:NEW", "categoryId": 30,
        "opportunity": 100, "currencyId": "USD", "assignedById": 1});
    let (order_id, _) = portal.create_item(1220, order, Changer::User(1)).await?;
    portal
        .update_item(
            1220,
            order_id,
            json!({"stageId": "DT1220_30:WON", "opportunity": 250}),
            Changer::User(7),
        )
        .await?;
    let contract =
        json!({"title": "Lease 2027", "categoryId": 0, "opportunity": 1200, "currencyId": "EUR"});
    let (contract_id, _) = portal.create_item(1038, contract, Changer::User(7)).await?;
    portal
        .update_item(
            1038,
            contract_id,
            json!({"title": "Lease 2027 (signed)"}),
            Changer::Robot,
        )
        .await?;
    Ok(portal)
}
