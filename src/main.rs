//! The `b24-activity` command: `serve`, `migrate` or `demo`.

use std::process::ExitCode;

use b24_activity::app::{self, AppState};
use b24_activity::config::{self, Settings};
use b24_activity::crypto::{TokenCipher, TokenKey};
use b24_activity::store::Store;
use b24_activity::{demo, telemetry};

const USAGE: &str = "usage: b24-activity <serve|migrate|demo|rekey>

  serve    run the app (settings from the environment or .env; see README)
  migrate  apply database migrations and exit
  demo     run the app against a simulated portal on this machine
  rekey    re-seal every stored token under a new key (see README)";

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; a malformed one is worth knowing about.
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("error: .env: {err}");
        return ExitCode::FAILURE;
    }
    telemetry::init();

    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "serve" => serve().await,
        "migrate" => migrate().await,
        "demo" => demo::run().await,
        "rekey" => rekey().await,
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let listener = tokio::net::TcpListener::bind(settings.listen_addr)
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "setting LISTEN_ADDR: cannot listen on {}: {err}",
                settings.listen_addr
            )
        })?;
    let state = AppState::build(settings).await?;

    tracing::info!(addr = %listener.local_addr()?, "serving");
    app::serve(listener, state.clone(), app::shutdown_signal()).await?;
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate() -> anyhow::Result<()> {
    let url = config::database_url_from_env();
    // Migrations touch no token, so any key will do for the connection.
    let store = Store::connect(&url, TokenCipher::new(&TokenKey::generate())).await?;
    let applied = store.migrate().await?;
    println!("migrations applied: {applied}");
    store.close().await;
    Ok(())
}

/// Re-seals every token under a new key: `NEW_TOKEN_KEY` when the key comes from `TOKEN_KEY`,
/// or a fresh key written to the key file when it comes from there.
async fn rekey() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let old = app::load_token_key(&settings)?;
    let from_env = settings.token_key.is_some();
    let new = match std::env::var("NEW_TOKEN_KEY")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(text) => {
            TokenKey::parse(&text).map_err(|e| anyhow::anyhow!("setting NEW_TOKEN_KEY: {e}"))?
        }
        None if from_env => {
            anyhow::bail!("setting NEW_TOKEN_KEY: required to change a key given in TOKEN_KEY")
        }
        None => TokenKey::generate(),
    };

    // The new key file is written first, so that no moment exists where the database is
    // sealed under a key that is nowhere on disk.
    let pending = settings.token_key_file.with_extension("key.new");
    if !from_env {
        std::fs::write(&pending, format!("{}\n", new.to_hex()))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", pending.display()))?;
    }
    let store = Store::connect(&settings.database_url, TokenCipher::new(&old)).await?;
    let portals = store.reseal_tokens(&TokenCipher::new(&new)).await?;
    store.close().await;

    if from_env {
        println!(
            "re-sealed the tokens of {portals} portals; now set TOKEN_KEY to the new key on every instance"
        );
    } else {
        std::fs::rename(&pending, &settings.token_key_file)?;
        println!(
            "re-sealed the tokens of {portals} portals; the new key is in {}: back it up",
            settings.token_key_file.display()
        );
    }
    Ok(())
}
