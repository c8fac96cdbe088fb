//! forecast-api: weather forecasts over REST, published as events through sse-relay.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use forecast_api::ForecastApi;
use forecast_api::settings::{ENV_PREFIX, ForecastSettings, LIST_KEYS};
use service::{config, telemetry};

/// Weather forecasts over REST; every change is published to Redis for sse-relay.
///
/// Configuration: compiled-in defaults, then the TOML file given with --config, then
/// environment variables FORECAST_API__SECTION__KEY (e.g. FORECAST_API__DATABASE__URL).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init_logging();
    let settings: ForecastSettings = match config::load(ENV_PREFIX, args.config.as_deref(), LIST_KEYS) {
        Ok(settings) => settings,
        Err(errors) => {
            for error in errors.iter() {
                eprintln!("forecast-api: invalid configuration: {error}");
            }
            return ExitCode::from(2);
        }
    };
    let mut api = match ForecastApi::build(settings).await {
        Ok(api) => api,
        Err(error) => {
            eprintln!("forecast-api: cannot start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(key) = api.take_generated_admin_key() {
        // Shown once, on stdout, never in the logs: only its hash is stored.
        println!("forecast-api: generated the bootstrap admin API key (shown only this once): {key}");
    }
    tracing::info!(addr = %api.local_addr(), version = env!("CARGO_PKG_VERSION"), "listening");
    match api.run_until_stopped(telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "forecast-api failed");
            ExitCode::FAILURE
        }
    }
}
