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

/// The figures of each set-up (`<set-up>_<figure>`) for a backlog of `forecasts` × 3 events.
pub fn run(
    api_binary: &std::path::Path,
    server_core: usize,
    load_core: usize,
    forecasts: usize,
) -> anyhow::Result<Value> {
    let mut figures = json!({});
    for (name, primaries, partitions) in SETUPS {
        eprintln!("-- scale-out: {name}");
        let drained = drain_rate(api_binary, server_core, load_core, forecasts, primaries, partitions)
            .with_context(|| format!("scale-out, {name}"))?;
        for (field, value) in drained.as_object().into_iter().flatten() {
            figures[format!("{name}_{field}")] = value.clone();
        }
    }
    Ok(figures)
}

fn drain_rate(
    api_binary: &std::path::Path,
    server_core: usize,
    load_core: usize,
    forecasts: usize,
    primaries: usize,
    partitions: u32,
) -> anyhow::Result<Value> {
    let cluster = primaries > 0;
    let ports = servers::cluster_ports(primaries.max(1))?;
    // Redis (or the cluster, formed) runs from the start, but forecast-api's password file
    // holds a wrong password until the backlog is written: the dispatcher's attempts are
    // refused until then, and the drain measured is not a cluster still forming.
    let nodes = if cluster {
        servers::redis_cluster(load_core, &ports, REDIS_PASSWORD)?
    } else {
        vec![servers::redis_with_password(load_core, ports[0], REDIS_PASSWORD)?]
    };
    let password_file = tempfile::NamedTempFile::new()?;
    std::fs::write(password_file.path(), "not-yet")?;
    let mut config = format!(
        "[auth]\nadmin_key = \"{ADMIN_KEY}\"\n\n[outbox]\nbackoff_max_ms = 200\n\n\
         [redis]\nlog_partitions = {partitions}\npassword_file = \"{}\"\n",
        password_file.path().display()
    );
    if cluster {
        let nodes: Vec<String> = ports.iter().map(|port| format!("\"127.0.0.1:{port}\"")).collect();
        config.push_str(&format!("\n[redis.cluster]\nnodes = [{}]\n", nodes.join(", ")));
    } else {
        config.push_str(&format!("url = \"redis://127.0.0.1:{}\"\n", ports[0]));
    }
    let api = servers::forecast_api(server_core, api_binary, &config)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let written = Instant::now();
    let events = runtime.block_on(write_backlog(&api, forecasts))?;
    let write_secs = written.elapsed().as_secs_f64();

    // The password is read at every connect: the dispatcher, backing off at most 200 ms, gets
    // in and drains the whole backlog.
    std::fs::write(password_file.path(), REDIS_PASSWORD)?;
    let partitions = Partitions::new(partitions, cluster);
    let keys: Vec<String> = (0..partitions.count()).map(|p| partitions.log_key("sse:log", p)).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let in_log: u64 = read_logs(&nodes, &keys, false).iter().map(|log| log.length).sum();
        if in_log >= events {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{in_log} of {events} events reached the log in 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = read_logs(&nodes, &keys, true);
    let mut stamps: Vec<u64> = logs.iter().flat_map(|log| log.stamps.iter().copied()).collect();
    stamps.sort_unstable();
    let (first, last) = (*stamps.first().context("an empty log")?, *stamps.last().context("an empty log")?);
    let span_secs = (last - first).max(1) as f64 / 1000.0;
    let longest_pause_ms = stamps.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or(0);
    Ok(json!({
        "events": events,
        "in_log": logs.iter().map(|log| log.length).sum::<u64>(),
        "partitions_written": logs.iter().filter(|log| log.length > 0).count(),
        "backlog_written_per_sec": events as f64 / write_secs,
        "events_per_sec": events.saturating_sub(1) as f64 / span_secs,
        "longest_pause_ms": longest_pause_ms,
        "forecast_api_cpu_secs": api.cpu_secs(),
    }))
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
