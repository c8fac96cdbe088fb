//! Scale-out of the publishing side: how fast forecast-api's dispatcher moves a backlog from its
//! outbox into the log, on one Redis and on a 3-primary Redis Cluster with 1 and with 8 log
//! partitions, in the same run.
//!
//! forecast-api starts while Redis refuses it (a wrong password in its password file), takes a
//! backlog of changes over HTTP (each forecast created, updated and deleted, on eight
//! connections, so that the outbox holds the three channels interleaved), and only then gets
//! the right password: the dispatcher drains the whole backlog at full speed. The rate comes from the log itself: the events in it over the
//! time between its first and last entry ids (Redis's own clock, in ms), and the longest pause
//! between two entries tells a steady drain from one that stalled.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::servers::{self, Process};
use protocol::log_id::StreamId;
use protocol::partition::Partitions;

const ADMIN_KEY: &str = "bench-admin-key-0123456789";
const REDIS_PASSWORD: &str = "bench-redis-password";
/// Connections writing the backlog.
const WRITERS: usize = 8;

/// The three set-ups, each as (name, primaries, log partitions): 0 primaries is one Redis.
pub const SETUPS: [(&str, usize, u32); 3] = [("standalone", 0, 1), ("cluster_1", 3, 1), ("cluster_8", 3, 8)];

/// Streams open on the relay while it delivers the drained backlog.
const STREAMS: usize = 100;

/// The figures of each set-up (`<set-up>_<figure>`) for a backlog of `forecasts` × 3 events:
/// the drain alone, then the same drain again with a relay delivering it to [`STREAMS`]
/// streams (`<set-up>_relay_<figure>`), so that the relay's share of the cores does not colour
/// the drain's figures.
pub fn run(
    api_binary: &Path,
    relay_binary: &Path,
    (server_core, load_core): (usize, usize),
    forecasts: usize,
) -> anyhow::Result<Value> {
    let mut figures = json!({});
    for (name, primaries, partitions) in SETUPS {
        let setup = Setup { api_binary, server_core, load_core, forecasts, primaries, partitions };
        eprintln!("-- scale-out: {name}");
        let drained = setup.drain(None).with_context(|| format!("scale-out, {name}"))?;
        for (field, value) in drained.as_object().into_iter().flatten() {
            figures[format!("{name}_{field}")] = value.clone();
        }
        eprintln!("-- scale-out: {name}, delivered by a relay");
        let delivered =
            setup.drain(Some(relay_binary)).with_context(|| format!("scale-out, {name}, relay"))?;
        for (field, value) in delivered.as_object().into_iter().flatten() {
            if field.starts_with("relay_") {
                figures[format!("{name}_{field}")] = value.clone();
            }
        }
    }
    Ok(figures)
}

struct Setup<'a> {
    api_binary: &'a Path,
    server_core: usize,
    load_core: usize,
    forecasts: usize,
    primaries: usize,
    partitions: u32,
}

impl Setup<'_> {
    /// A fresh Redis (or cluster) and forecast-api, the backlog written, then drained; with
    /// `relay`, a relay tailing the log delivers it to [`STREAMS`] streams meanwhile.
    fn drain(&self, relay: Option<&Path>) -> anyhow::Result<Value> {
        let cluster = self.primaries > 0;
        let ports = servers::cluster_ports(self.primaries.max(1))?;
        // Redis (or the cluster, formed) runs from the start, but forecast-api's password file
        // holds a wrong password until the backlog is written: the dispatcher's attempts are
        // refused until then, and the drain measured is not a cluster still forming.
        let nodes = if cluster {
            servers::redis_cluster(self.load_core, &ports, REDIS_PASSWORD)?
        } else {
            vec![servers::redis_with_password(self.load_core, ports[0], REDIS_PASSWORD)?]
        };
        let api_password = tempfile::NamedTempFile::new()?;
        std::fs::write(api_password.path(), "not-yet")?;
        let redis_config = |password_file: &Path| {
            let mut config = format!(
                "[redis]\nlog_partitions = {}\npassword_file = \"{}\"\n",
                self.partitions,
                password_file.display()
            );
            if cluster {
                let nodes: Vec<String> = ports.iter().map(|port| format!("\"127.0.0.1:{port}\"")).collect();
                config.push_str(&format!("\n[redis.cluster]\nnodes = [{}]\n", nodes.join(", ")));
            } else {
                config.push_str(&format!("url = \"redis://127.0.0.1:{}\"\n", ports[0]));
            }
            config
        };
        let api = servers::forecast_api(
            self.server_core,
            self.api_binary,
            &format!(
                "[auth]\nadmin_key = \"{ADMIN_KEY}\"\n\n[outbox]\nbackoff_max_ms = 200\n\n{}",
                redis_config(api_password.path())
            ),
        )?;
        // One worker thread: the streams keep reading while this thread polls.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let written = Instant::now();
        let events = runtime.block_on(write_backlog(&api, self.forecasts))?;
        let write_secs = written.elapsed().as_secs_f64();

        // The relay (the right password from the start) tails the log's end, its streams open.
        let relay_password = tempfile::NamedTempFile::new()?;
        std::fs::write(relay_password.path(), REDIS_PASSWORD)?;
        let relay = relay
            .map(|binary| {
                let config = format!(
                    "{}\n[[channels]]\npattern = \"weatherforecast.*\"\nformat = \"envelope\"\n\n\
                     [limits]\nmax_connections = 1000000\n",
                    redis_config(relay_password.path())
                );
                servers::relay_configured(self.server_core, binary, &config)
            })
            .transpose()?;
        let mut streams = Vec::new();
        if let Some(relay) = &relay {
            let ready = Instant::now() + Duration::from_secs(30);
            while !runtime.block_on(get(relay.addr, "/readyz")).is_ok_and(|(status, _)| status == 200) {
                anyhow::ensure!(Instant::now() < ready, "the relay was not ready within 30 s");
                std::thread::sleep(Duration::from_millis(50));
            }
            for _ in 0..STREAMS {
                streams.push(runtime.spawn(read_stream(relay.addr)));
            }
            let open = Instant::now() + Duration::from_secs(30);
            while relay_metric(&runtime, relay, "sse_relay_connections")? < STREAMS as f64 {
                anyhow::ensure!(Instant::now() < open, "the relay's streams did not open within 30 s");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let relay_cpu_before = relay.as_ref().map_or(0.0, Process::cpu_secs);

        // The password is read at every connect: the dispatcher, backing off at most 200 ms,
        // gets in and drains the whole backlog.
        std::fs::write(api_password.path(), REDIS_PASSWORD)?;
        let partitions = Partitions::new(self.partitions, cluster);
        let keys: Vec<String> = (0..partitions.count()).map(|p| partitions.log_key("sse:log", p)).collect();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let in_log: u64 = read_logs(&nodes, &keys, false).iter().map(|log| log.length).sum();
            if in_log >= events {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{in_log} of {events} events reached the log in 300 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs = read_logs(&nodes, &keys, true);
        let mut stamps: Vec<u64> = logs.iter().flat_map(|log| log.stamps.iter().copied()).collect();
        stamps.sort_unstable();
        let (first, last) =
            (*stamps.first().context("an empty log")?, *stamps.last().context("an empty log")?);
        let span_secs = (last - first).max(1) as f64 / 1000.0;
        let longest_pause_ms = stamps.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or(0);
        let mut figures = json!({
            "events": events,
            "in_log": logs.iter().map(|log| log.length).sum::<u64>(),
            "partitions_written": logs.iter().filter(|log| log.length > 0).count(),
            "backlog_written_per_sec": events as f64 / write_secs,
            "events_per_sec": events.saturating_sub(1) as f64 / span_secs,
            "longest_pause_ms": longest_pause_ms,
            "forecast_api_cpu_secs": api.cpu_secs(),
        });
        if let Some(relay) = &relay {
            let delivered = Instant::now() + Duration::from_secs(60);
            while relay_metric(&runtime, relay, "sse_relay_events_received_total")? < events as f64 {
                anyhow::ensure!(Instant::now() < delivered, "the relay did not read every event within 60 s");
                std::thread::sleep(Duration::from_millis(50));
            }
            let cpu = relay.cpu_secs() - relay_cpu_before;
            let (_, exposition) = runtime.block_on(get(relay.addr, "/metrics"))?;
            let deliveries = metric(&exposition, "sse_relay_events_delivered_total");
            let buckets = latency_buckets(&exposition);
            figures["relay_events_read"] = json!(metric(&exposition, "sse_relay_events_received_total"));
            figures["relay_deliveries"] = json!(deliveries);
            figures["relay_slow_client_cuts"] =
                json!(metric(&exposition, "sse_relay_slow_client_disconnects_total"));
            figures["relay_cpu_secs_per_million"] = json!(cpu / deliveries.max(1.0) * 1e6);
            figures["relay_latency_p50_ms"] = json!(bucket_quantile(&buckets, 0.5) * 1e3);
            figures["relay_latency_p99_ms"] = json!(bucket_quantile(&buckets, 0.99) * 1e3);
        }
        for stream in streams {
            stream.abort();
        }
        Ok(figures)
    }
}

/// A value of the relay's `/metrics`.
fn relay_metric(runtime: &tokio::runtime::Runtime, relay: &Process, name: &str) -> anyhow::Result<f64> {
    let (_, exposition) = runtime.block_on(get(relay.addr, "/metrics"))?;
    Ok(metric(&exposition, name))
}

/// An unlabelled sample of a Prometheus exposition (0 when absent).
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The delivery latency histogram's cumulative buckets, as (upper bound, count).
fn latency_buckets(exposition: &str) -> Vec<(f64, f64)> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("sse_relay_delivery_latency_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` (as Prometheus would place it, without
/// interpolation).
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |(_, count)| *count);
    buckets.iter().find(|(_, count)| *count >= q * total).map_or(f64::NAN, |(bound, _)| *bound)
}

/// An event stream read and discarded until the task is aborted.
async fn read_stream(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(b"GET /events?channel=weatherforecast.* HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await?;
    let mut buffer = vec![0; 64 * 1024];
    while stream.read(&mut buffer).await? > 0 {}
    Ok(())
}

/// A `GET` on a connection of its own: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .with_context(|| format!("GET {path}: no answer within 10 s"))??;
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).context("an HTTP status")?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    Ok((status, body))
}

/// One partition's stream as it stands: its length and, once it is complete, the time of
/// each entry (ms, from its id).
struct Log {
    length: u64,
    stamps: Vec<u64>,
}

/// Each partition's stream, asked of every node (the one that holds it answers); the entries'
/// times once `complete` (every event is in).
fn read_logs(nodes: &[Process], keys: &[String], complete: bool) -> Vec<Log> {
    keys.iter()
        .map(|key| {
            nodes
                .iter()
                .find_map(|node| {
                    let mut connection =
                        redis::Client::open(format!("redis://:{REDIS_PASSWORD}@{}", node.addr))
                            .ok()?
                            .get_connection()
                            .ok()?;
                    // A node that does not hold the key answers MOVED.
                    let length: u64 = redis::cmd("XLEN").arg(key).query(&mut connection).ok()?;
                    let mut stamps = Vec::new();
                    let mut after = "-".to_owned();
                    while complete && (stamps.len() as u64) < length {
                        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                            .arg(key)
                            .arg(&after)
                            .arg("+")
                            .arg("COUNT")
                            .arg(5_000)
                            .query(&mut connection)
                            .ok()?;
                        let Some((last, _)) = page.last() else { break };
                        after = format!("({last}");
                        stamps.extend(
                            page.iter().filter_map(|(id, _)| id.parse::<StreamId>().ok()).map(|id| id.ms),
                        );
                    }
                    Some(Log { length, stamps })
                })
                .unwrap_or(Log { length: 0, stamps: Vec::new() })
        })
        .collect()
}

/// Creates, updates and deletes `forecasts` forecasts over [`WRITERS`] connections; the
/// events that makes.
async fn write_backlog(api: &Process, forecasts: usize) -> anyhow::Result<u64> {
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let count = forecasts / WRITERS + usize::from(writer < forecasts % WRITERS);
        let addr = api.addr;
        writers.push(tokio::spawn(async move {
            let mut http = BufReader::new(TcpStream::connect(addr).await?);
            for i in 0..count {
                let body = format!(r#"{{"date":"2026-12-05","temperatureC":{},"summary":"Mild"}}"#, i % 40);
                let created = request(&mut http, "POST", "/api/weatherforecast", Some(&body)).await?;
                let id: Value = serde_json::from_str(&created)?;
                let path = format!("/api/weatherforecast/{}", id["id"].as_str().context("a forecast id")?);
                request(&mut http, "PUT", &path, Some(&body.replace("Mild", "Warm"))).await?;
                request(&mut http, "DELETE", &path, None).await?;
            }
            anyhow::Ok(count as u64 * 3)
        }));
    }
    let mut events = 0;
    for writer in writers {
        events += writer.await??;
    }
    Ok(events)
}

/// One request on a kept-alive connection; the body of its 2xx answer.
async fn request(
    http: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<String> {
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    http.get_mut().write_all(format!("{head}{body}").as_bytes()).await?;
    let mut status = String::new();
    http.read_line(&mut status).await?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        anyhow::ensure!(http.read_line(&mut line).await? > 0, "forecast-api closed the connection");
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut answer = vec![0; length];
    http.read_exact(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    anyhow::ensure!(
        status.split(' ').nth(1).is_some_and(|code| code.starts_with('2')),
        "{method} {path}: {status} {answer}"
    );
    Ok(answer)
}
