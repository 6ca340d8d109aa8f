//! The `b24-activity` command: `serve`, `migrate` or `demo`.

use std::process::ExitCode;

use b24_activity::app::{self, AppState};
use b24_activity::config::{self, Settings};
use b24_activity::crypto::TokenCipher;
use b24_activity::store::Store;
use b24_activity::{demo, telemetry};

const USAGE: &str = "usage: b24-activity <serve|migrate|demo>

  serve    run the app (settings from the environment or .env; see README)
  migrate  apply database migrations and exit
  demo     run the app against a simulated portal on this machine";

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
    app::serve(listener, state.clone(), demo::ctrl_c()).await?;
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate() -> anyhow::Result<()> {
    let url = config::database_url_from_env();
    // Migrations touch no token, so any key will do for the connection.
    let store = Store::connect(
        &url,
        TokenCipher::new(&b24_activity::crypto::TokenKey::generate()),
    )
    .await?;
    let applied = store.migrate().await?;
    println!("migrations applied: {applied}");
    store.close().await;
    Ok(())
}
