//! sse-bench: the benchmark harness. `sse-bench suite` runs every scenario against the relay,
//! nginx+nchan and the floor server (`make bench`); the other subcommands are its parts, usable
//! alone: `clients` (a load-generator process) and `publish`.

mod clients;
mod histogram;
mod payload;
mod publish;
mod scale_out;
mod servers;
mod suite;
mod table;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks sse-relay side by side with nginx+nchan and a floor server")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every scenario against every server; a table and a JSON file.
    Suite(suite::SuiteArgs),
    /// Opens streams and counts their events; driven by commands on standard input.
    Clients(clients::ClientArgs),
    /// Publishes benchmark events at a rate.
    Publish(publish::PublishArgs),
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Suite(args) => suite::run(args),
        Cmd::Clients(args) => {
            // One thread: the worker runs on the load core beside Redis and the publisher.
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(clients::run(args))
        }
        Cmd::Publish(args) => {
            let published = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(publish::run(&args))?;
            println!("published {} events in {:.3} s", published.count, published.elapsed.as_secs_f64());
            Ok(())
        }
    }
}
