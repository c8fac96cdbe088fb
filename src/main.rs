//! sse-relay: streams Redis channels to browsers as Server-Sent Events.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use service::{config, telemetry};
use sse_relay::Relay;
use sse_relay::settings::{ENV_PREFIX, LIST_KEYS, RelaySettings};

/// jemalloc rather than glibc's malloc: a relay's memory comes in bursts (slow clients'
/// queues, reconnect storms), and glibc keeps what a burst freed in its arenas — after 5,000
/// slow clients were cut it still held 50 MB of a 54 MB peak 30 s later. jemalloc, with its
/// background thread, gives pages freed for 10 s back to the system, whether or not the relay
/// allocates meanwhile (docs/performance.md, "Memory after a burst").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Streams Redis pub/sub channels to browsers as Server-Sent Events.
///
/// Configuration: compiled-in defaults, then the TOML file given with --config, then
/// environment variables SSE_RELAY__SECTION__KEY (e.g. SSE_RELAY__REDIS__URL).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Off by default in jemalloc; without it, freed memory is returned only as the relay
    // allocates again.
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!(
            "sse-relay: jemalloc's background thread did not start ({error}); freed memory returns more slowly"
        );
    }
    let args = Args::parse();
    telemetry::init_logging();
    let settings: RelaySettings = match config::load(ENV_PREFIX, args.config.as_deref(), LIST_KEYS) {
        Ok(settings) => settings,
        Err(errors) => {
            for error in errors.iter() {
                eprintln!("sse-relay: invalid configuration: {error}");
            }
            return ExitCode::from(2);
        }
    };
    let relay = match Relay::build(settings).await {
        Ok(relay) => relay,
        Err(error) => {
            eprintln!("sse-relay: cannot start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %relay.local_addr(), version = env!("CARGO_PKG_VERSION"), "listening");
    if let Some(addr) = relay.metrics_addr() {
        tracing::info!(addr = %addr, "serving /metrics");
    }
    match relay.run_until_stopped(telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "relay failed");
            ExitCode::FAILURE
        }
    }
}
