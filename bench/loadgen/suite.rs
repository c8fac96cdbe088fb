//! The benchmark suite: every scenario against the relay and the two references (nchan, the
//! floor) in one run, servers pinned to one core and load (clients, publisher, Redis) to the
//! other; a table on standard output and every figure in a JSON file.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::histogram::quantile;
use crate::publish::{self, PublishArgs};
use crate::servers::{self, Process};

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// A few hundred connections for a few seconds: checks that the harness works.
    #[arg(long)]
    pub smoke: bool,
    /// Servers to measure, of relay, nchan, floor.
    #[arg(long, value_delimiter = ',', default_value = "relay,nchan,floor")]
    pub servers: Vec<String>,
    #[arg(long, default_value = "target/bench/results.json")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub server_core: usize,
    #[arg(long, default_value_t = 1)]
    pub load_core: usize,
    /// Streams per load-generator process (a process here holds at most 20,000 files).
    #[arg(long, default_value_t = 8_000)]
    pub per_worker: usize,
    /// Runs per server, each against a fresh server; every figure is the median of the runs.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The relay binary to measure (to compare builds); by default the one beside this one.
    #[arg(long)]
    pub relay_binary: Option<PathBuf>,
    /// Only these scenarios (e.g. `channels,slow_burst`); by default every one.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

impl SuiteArgs {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|only| only == scenario)
    }
}

/// Sizes of every scenario.
struct Plan {
    idle_low: usize,
    idle_high: usize,
    fanout_clients: usize,
    fanout_rate: u64,
    fanout_secs: u64,
    overload_rate: u64,
    overload_secs: u64,
    latency_clients: usize,
    latency_rate: u64,
    latency_secs: u64,
    storm_clients: usize,
    storm_missed: u64,
    channels_streams: usize,
    channels_rate: u64,
    channels_secs: u64,
    shared_rate: u64,
    scale_clients: usize,
    scale_missed: u64,
    hostile_streams: usize,
    hostile_rate: u64,
    hostile_secs: u64,
    slow_clients: usize,
    /// Forecasts created, updated and deleted for the scale-out backlog (three events each).
    scale_out_forecasts: usize,
    /// How long after the slow clients were cut the relay's memory is looked at again.
    slow_release_wait: Duration,
    settle: Duration,
}

impl Plan {
    fn new(smoke: bool) -> Self {
        if smoke {
            return Self {
                idle_low: 100,
                idle_high: 300,
                fanout_clients: 100,
                fanout_rate: 100,
                fanout_secs: 1,
                overload_rate: 500,
                overload_secs: 1,
                latency_clients: 50,
                latency_rate: 50,
                latency_secs: 1,
                storm_clients: 100,
                storm_missed: 5,
                channels_streams: 200,
                channels_rate: 200,
                channels_secs: 1,
                shared_rate: 5,
                scale_clients: 300,
                scale_missed: 20,
                hostile_streams: 20,
                hostile_rate: 200,
                hostile_secs: 1,
                slow_clients: 100,
                scale_out_forecasts: 50,
                slow_release_wait: Duration::from_secs(2),
                settle: Duration::from_millis(300),
            };
        }
        Self {
            idle_low: 5_000,
            idle_high: 15_000,
            fanout_clients: 1_000,
            fanout_rate: 100,
            fanout_secs: 10,
            overload_rate: 1_000,
            overload_secs: 5,
            latency_clients: 100,
            latency_rate: 50,
            latency_secs: 10,
            storm_clients: 5_000,
            storm_missed: 10,
            channels_streams: 10_000,
            channels_rate: 2_000,
            channels_secs: 10,
            shared_rate: 2,
            scale_clients: 15_000,
            scale_missed: 100,
            hostile_streams: 400,
            hostile_rate: 1_000,
            hostile_secs: 5,
            slow_clients: 5_000,
            scale_out_forecasts: 5_000,
            slow_release_wait: Duration::from_secs(30),
            settle: Duration::from_secs(2),
        }
    }
}

/// Load-generator processes holding `count` streams together, driven line by line.
struct Clients {
    workers: Vec<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Clients {
    fn open(
        args: &SuiteArgs,
        target: std::net::SocketAddr,
        path: &str,
        count: usize,
        first: usize,
    ) -> anyhow::Result<Self> {
        Self::open_with(args, target, path, count, first, false)
    }

    /// As [`Self::open`]; `stall`: clients that stop reading after the response head.
    fn open_with(
        args: &SuiteArgs,
        target: std::net::SocketAddr,
        path: &str,
        count: usize,
        first: usize,
        stall: bool,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut workers = Vec::new();
        let mut offset = 0;
        while offset < count {
            let n = args.per_worker.min(count - offset);
            let mut child = Command::new("taskset")
                .arg("-c")
                .arg(args.load_core.to_string())
                .arg(&exe)
                .args(["clients", "--target", &target.to_string(), "--path", path])
                .args(["--count", &n.to_string(), "--first", &(first + offset).to_string()])
                .args(stall.then_some("--stall"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("start a load-generator process")?;
            let stdin = child.stdin.take().context("stdin")?;
            let stdout = BufReader::new(child.stdout.take().context("stdout")?);
            workers.push((child, stdin, stdout));
            offset += n;
        }
        Ok(Self { workers })
    }

    /// Sends `command` to every worker; their answers.
    fn ask(&mut self, command: &str) -> anyhow::Result<Vec<Value>> {
        for (_, stdin, _) in &mut self.workers {
            writeln!(stdin, "{command}")?;
            stdin.flush()?;
        }
        let mut answers = Vec::new();
        for (_, _, stdout) in &mut self.workers {
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            answers.push(serde_json::from_str(&line).with_context(|| format!("worker answered {line:?}"))?);
        }
        Ok(answers)
    }

    /// The sum of a numeric field over the workers' answers.
    fn sum(answers: &[Value], field: &str) -> u64 {
        answers.iter().map(|a| a[field].as_u64().unwrap_or(0)).sum()
    }

    fn status(&mut self, field: &str) -> anyhow::Result<u64> {
        Ok(Self::sum(&self.ask("status")?, field))
    }

    fn wait_for(&mut self, field: &str, at_least: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let value = self.status(field)?;
            if value >= at_least {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "{field} reached {value} of {at_least} in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `events` stop growing for `quiet` (or reach `all`); when the last one arrived.
    fn wait_quiet(&mut self, all: u64, quiet: Duration) -> anyhow::Result<Instant> {
        let mut last = (self.status("events")?, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let events = self.status("events")?;
            if events != last.0 {
                last = (events, Instant::now());
            }
            if events >= all || last.1.elapsed() >= quiet {
                return Ok(last.1);
            }
        }
    }

    fn report(&mut self, expected: u64) -> anyhow::Result<Value> {
        let answers = self.ask(&format!("report {expected}"))?;
        let mut merged = json!({});
        for field in [
            "open",
            "closed",
            "failed",
            "events",
            "complete",
            "disconnected",
            "disconnected_missing",
            "open_but_short",
            "silently_missing",
            "excess",
            "out_of_order",
        ] {
            merged[field] = json!(Self::sum(&answers, field));
        }
        let mut buckets: Vec<u64> = Vec::new();
        for answer in &answers {
            let counts: Vec<u64> =
                serde_json::from_value(answer["latency_buckets"].clone()).unwrap_or_default();
            buckets.resize(buckets.len().max(counts.len()), 0);
            for (total, count) in buckets.iter_mut().zip(counts) {
                *total += count;
            }
        }
        merged["latency_p50_ms"] = json!(quantile(&buckets, 0.5) as f64 / 1000.0);
        merged["latency_p99_ms"] = json!(quantile(&buckets, 0.99) as f64 / 1000.0);
        merged["latency_max_ms"] = json!(
            answers.iter().map(|a| a["latency_max_us"].as_u64().unwrap_or(0)).max().unwrap_or(0) as f64
                / 1000.0
        );
        Ok(merged)
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for (child, stdin, _) in &mut self.workers {
            let _ = writeln!(stdin, "quit");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Target<'a> {
    name: &'static str,
    server: &'a Process,
    /// Stream path for a channel.
    path: fn(&str) -> String,
    publish_via: PublishVia,
}

/// Where the publisher sends a server's events: Redis, or nchan's HTTP publisher location.
enum PublishVia {
    Redis(String),
    Nchan(std::net::SocketAddr),
}

/// Publishes `count` events at `rate` on `channel` (or spread over `spread` channels named
/// `<channel><n>`).
fn publish(
    target: &Target,
    channel: &str,
    spread: u64,
    envelope: bool,
    rate: u64,
    count: u64,
    first_seq: u64,
) -> anyhow::Result<publish::Published> {
    let to = match &target.publish_via {
        PublishVia::Redis(url) => url.clone(),
        PublishVia::Nchan(addr) => format!("http://{addr}/pub?channel={{channel}}"),
    };
    let args =
        PublishArgs { to, channel: channel.to_owned(), spread, envelope, rate, count, size: 100, first_seq };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(publish::run(&args))
}

pub fn run(args: SuiteArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args.smoke);
    let exe_dir = std::env::current_exe()?.parent().context("binary directory")?.to_path_buf();
    let machine = machine_facts();
    // The suite itself publishes and polls: keep it off the server's core.
    pin_self(args.load_core);
    let redis = servers::redis(args.load_core)?;
    let redis_url = format!("redis://{}", redis.addr);
    let mut results = json!({ "machine": machine, "smoke": args.smoke, "servers": {}, "runs": {} });
    // Rounds of one run per server, rather than all runs of one server then the next: this
    // machine's noise comes and goes, and should fall on every server alike.
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); args.servers.len()];
    for run in 1..=args.runs.max(1) {
        for (name, runs) in args.servers.iter().zip(&mut runs) {
            let server = match name.as_str() {
                "relay" => {
                    let binary = args.relay_binary.clone().unwrap_or_else(|| exe_dir.join("sse-relay"));
                    servers::relay(args.server_core, &binary, &redis_url)?
                }
                "floor" => servers::floor(args.server_core, &exe_dir.join("sse-floor"), &redis_url)?,
                "nchan" => servers::nchan(args.server_core)?,
                other => anyhow::bail!("unknown server {other:?} (relay, nchan, floor)"),
            };
            let target = Target {
                name: server.name,
                server: &server,
                path: match name.as_str() {
                    "relay" => |channel| format!("/events?channel={channel}"),
                    "floor" => |_| "/events".to_owned(),
                    _ => |channel| format!("/sub?channel={channel}"),
                },
                publish_via: if name == "nchan" {
                    PublishVia::Nchan(server.addr)
                } else {
                    PublishVia::Redis(redis_url.clone())
                },
            };
            eprintln!("== {name}, run {run} of {}", args.runs.max(1));
            let figures = measure(&args, &plan, &target).with_context(|| format!("measuring {name}"))?;
            eprintln!("{}", serde_json::to_string(&figures)?);
            runs.push(figures);
        }
    }
    for (name, runs) in args.servers.iter().zip(runs) {
        results["servers"][name.as_str()] = median(&runs);
        results["runs"][name.as_str()] = Value::Array(runs);
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    print!("{}", crate::table::render(&results));
    println!("figures: {}", args.out.display());
    Ok(())
}

/// The figures of several runs, each number the median of its values (objects field by field;
/// anything else from the first run).
fn median(runs: &[Value]) -> Value {
    match &runs[0] {
        Value::Object(first) => Value::Object(
            first
                .keys()
                .map(|key| {
                    (key.clone(), median(&runs.iter().map(|run| run[key].clone()).collect::<Vec<_>>()))
                })
                .collect(),
        ),
        Value::Number(_) => {
            let mut integers: Vec<u64> = runs.iter().filter_map(Value::as_u64).collect();
            if integers.len() == runs.len() {
                integers.sort_unstable();
                return json!(integers[integers.len() / 2]);
            }
            let mut values: Vec<f64> = runs.iter().filter_map(Value::as_f64).collect();
            values.sort_by(f64::total_cmp);
            json!(values[values.len() / 2])
        }
        other => other.clone(),
    }
}

fn pin_self(core: usize) {
    let _ = Command::new("taskset")
        .args(["-p", "-c", &core.to_string(), &std::process::id().to_string()])
        .output();
}

fn measure(args: &SuiteArgs, plan: &Plan, target: &Target) -> anyhow::Result<Value> {
    let addr = target.server.addr;
    let mut figures = json!({});
    let connect_timeout = Duration::from_secs(120);
    let relay = target.name == "sse-relay";

    // Idle: memory per connection as the RSS slope between two counts, and accepts per second.
    if args.wants("idle") {
        let path = (target.path)("bench.idle");
        let mut low = Clients::open(args, addr, &path, plan.idle_low, 0)?;
        let took = low.wait_for("open", plan.idle_low as u64, connect_timeout)?;
        // Workers open their streams in parallel: the slowest one says when all were open.
        let slowest_worker_ms = low
            .ask("status")?
            .iter()
            .map(|a| a["all_open_after_ms"].as_u64().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let accept_ms = slowest_worker_ms.max(took.as_millis() as u64);
        std::thread::sleep(plan.settle);
        let rss_low = target.server.rss_bytes();
        let mut high = Clients::open(args, addr, &path, plan.idle_high - plan.idle_low, plan.idle_low)?;
        high.wait_for("open", (plan.idle_high - plan.idle_low) as u64, connect_timeout)?;
        std::thread::sleep(plan.settle);
        let rss_high = target.server.rss_bytes();
        let open = low.status("open")? + high.status("open")?;
        figures["idle"] = json!({
            "connections_low": plan.idle_low,
            "connections_high": plan.idle_high,
            "open_at_high": open,
            "rss_low_bytes": rss_low,
            "rss_high_bytes": rss_high,
            "bytes_per_connection": (rss_high.saturating_sub(rss_low)) as f64 / (plan.idle_high - plan.idle_low) as f64,
            "accepts_per_sec": plan.idle_low as f64 / (accept_ms.max(1) as f64 / 1000.0),
        });
        std::thread::sleep(plan.settle);
    }

    // Fan-out (and the latency at that load), then overload, then latency at a light load.
    let loads = [
        ("fanout", plan.fanout_clients, plan.fanout_rate, plan.fanout_secs),
        ("overload", plan.fanout_clients, plan.overload_rate, plan.overload_secs),
        ("latency_light", plan.latency_clients, plan.latency_rate, plan.latency_secs),
    ];
    for (scenario, clients, rate, secs) in loads.into_iter().filter(|load| args.wants(load.0)) {
        let channel = format!("bench.{scenario}");
        figures[scenario] = fanout(args, plan, target, &Load::shared(target, &channel, clients, rate, secs))?;
        std::thread::sleep(plan.settle);
    }
    // The relay's envelope path: the same fan-out, published through the log script and
    // delivered from the log (the references have no log).
    if relay && args.wants("fanout_envelope") {
        let load = Load {
            envelope: true,
            ..Load::shared(target, "benchlog.fanout", plan.fanout_clients, plan.fanout_rate, plan.fanout_secs)
        };
        figures["fanout_envelope"] = fanout(args, plan, target, &load)?;
        std::thread::sleep(plan.settle);
    }
    // One channel per stream, events spread at random over them (the floor has no channels);
    // then, for the relay, the same streams sharing one subscription.
    if target.name != "floor" && args.wants("channels") {
        let load = Load {
            path: (target.path)("bench.ch.{i}"),
            channel: "bench.ch.".into(),
            spread: plan.channels_streams as u64,
            ..Load::shared(target, "", plan.channels_streams, plan.channels_rate, plan.channels_secs)
        };
        figures["channels"] = fanout(args, plan, target, &load)?;
        std::thread::sleep(plan.settle);
    }
    if relay && args.wants("channels_shared") {
        let load =
            Load::shared(target, "bench.shared", plan.channels_streams, plan.shared_rate, plan.channels_secs);
        figures["channels_shared"] = fanout(args, plan, target, &load)?;
        std::thread::sleep(plan.settle);
    }
    // The same events over ten channels, a stream each: what a message costs with few distinct
    // subscriptions.
    if relay && args.wants("channels_few") {
        let load = Load {
            path: (target.path)("bench.few.{i}"),
            channel: "bench.few.".into(),
            spread: 10,
            ..Load::shared(target, "", 10, plan.channels_rate, plan.channels_secs)
        };
        figures["channels_few"] = fanout(args, plan, target, &load)?;
        std::thread::sleep(plan.settle);
    }
    if relay && args.wants("wildcards") {
        figures["wildcards"] = wildcards(args, plan, target)?;
        std::thread::sleep(plan.settle);
    }
    if args.wants("storm") {
        figures["storm"] = storm(args, plan, target, "storm", plan.storm_clients, plan.storm_missed)?;
        std::thread::sleep(plan.settle);
    }
    if target.name != "floor" && args.wants("storm_scale") {
        figures["storm_scale"] = storm(args, plan, target, "scale", plan.scale_clients, plan.scale_missed)?;
        std::thread::sleep(plan.settle);
    }
    if relay && args.wants("slow_burst") {
        figures["slow_burst"] = slow_burst(args, plan, target)?;
    }
    // The publishing side, once per run beside the relay's figures: it has no counterpart in
    // the references.
    if relay && args.wants("scale_out") {
        let api = std::env::current_exe()?.with_file_name("forecast-api");
        anyhow::ensure!(
            api.is_file(),
            "{} is missing: build it (cargo build --release -p forecast-api)",
            api.display()
        );
        let relay = args.relay_binary.clone().unwrap_or_else(|| api.with_file_name("sse-relay"));
        let cores = (args.server_core, args.load_core);
        figures["scale_out"] = crate::scale_out::run(&api, &relay, cores, plan.scale_out_forecasts)?;
    }
    Ok(figures)
}

/// Clients that stop reading, all at once, until the relay cuts every one of them: the relay's
/// memory before, at its peak, and a while after (does it come back?).
fn slow_burst(args: &SuiteArgs, plan: &Plan, target: &Target) -> anyhow::Result<Value> {
    let slow = plan.slow_clients;
    let rss_before = target.server.rss_bytes();
    let mut stalled =
        Clients::open_with(args, target.server.addr, "/events?channel=bench.slow", slow, 0, true)?;
    stalled.wait_for("open", slow as u64, Duration::from_secs(120))?;
    let cut_before = relay_metric(target.server.addr, "sse_relay_slow_client_disconnects_total")?;
    let mut rss_peak = target.server.rss_bytes();
    let mut published = 0;
    let started = Instant::now();
    // Bursts of events until every client was cut (a queue of 1,024 events each, behind a few
    // dozen KiB of socket buffers), each burst's memory looked at.
    while relay_metric(target.server.addr, "sse_relay_slow_client_disconnects_total")? - cut_before
        < slow as f64
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the relay did not cut every slow client"
        );
        publish(target, "bench.slow", 0, false, 2_000, 500, published)?;
        published += 500;
        rss_peak = rss_peak.max(target.server.rss_bytes());
    }
    let cut_after = started.elapsed();
    // The clients keep their sockets meanwhile.
    std::thread::sleep(plan.slow_release_wait);
    let rss_after = target.server.rss_bytes();
    stalled.ask("drop")?;
    Ok(json!({
        "clients": slow,
        "published": published,
        "all_cut_ms": cut_after.as_millis() as u64,
        "rss_before_bytes": rss_before,
        "rss_peak_bytes": rss_peak,
        "rss_after_bytes": rss_after,
        "after_secs": plan.slow_release_wait.as_secs(),
    }))
}

/// A sample of the relay's `/metrics`, by its exact name and labels.
fn relay_metric(addr: std::net::SocketAddr, sample: &str) -> anyhow::Result<f64> {
    use std::io::Read;
    let mut socket = std::net::TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(socket, "GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer)?;
    answer
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("{sample} not in the relay's metrics"))
}

/// Streams on `path`, and events at `rate` for `secs` on `channel` (or spread over `spread`
/// channels `<channel><n>`, one per stream).
struct Load {
    path: String,
    clients: usize,
    channel: String,
    spread: u64,
    rate: u64,
    secs: u64,
    envelope: bool,
}

impl Load {
    /// Every stream on `channel`.
    fn shared(target: &Target, channel: &str, clients: usize, rate: u64, secs: u64) -> Self {
        Self {
            path: (target.path)(channel),
            clients,
            channel: channel.to_owned(),
            spread: 0,
            rate,
            secs,
            envelope: false,
        }
    }

    /// Deliveries the load should make: each event to every stream, or to one.
    fn deliveries(&self, count: u64) -> u64 {
        if self.spread > 0 { count } else { count * self.clients as u64 }
    }
}

fn fanout(args: &SuiteArgs, plan: &Plan, target: &Target, load: &Load) -> anyhow::Result<Value> {
    let clients = load.clients;
    let mut streams = Clients::open(args, target.server.addr, &load.path, clients, 0)?;
    streams.wait_for("open", clients as u64, Duration::from_secs(120))?;
    std::thread::sleep(plan.settle / 2);
    streams.ask("reset")?;
    let count = load.rate * load.secs;
    let cpu_before = target.server.cpu_secs();
    let started = Instant::now();
    let published = publish(target, &load.channel, load.spread, load.envelope, load.rate, count, 0)?;
    let expected = load.deliveries(count);
    let last_event = streams.wait_quiet(expected, Duration::from_secs(2))?;
    let cpu = target.server.cpu_secs() - cpu_before;
    // Spread events reach one stream each: count what is missing overall.
    let mut report = streams.report(if load.spread > 0 { 0 } else { count })?;
    let deliveries = report["events"].as_u64().unwrap_or(0);
    if load.spread > 0 {
        report["silently_missing"] = json!(expected.saturating_sub(deliveries));
        report["excess"] = json!(deliveries.saturating_sub(expected));
    }
    let elapsed =
        last_event.saturating_duration_since(started).as_secs_f64().max(published.elapsed.as_secs_f64());
    report["clients"] = json!(clients);
    report["channels"] = json!(if load.spread > 0 { load.spread } else { 1 });
    report["rate_requested"] = json!(load.rate);
    report["published"] = json!(published.count);
    report["publish_secs"] = json!(published.elapsed.as_secs_f64());
    report["rate_achieved"] = json!(published.count as f64 / published.elapsed.as_secs_f64());
    report["deliveries"] = json!(deliveries);
    report["deliveries_per_sec"] = json!(deliveries as f64 / elapsed);
    report["cpu_secs"] = json!(cpu);
    report["cpu_secs_per_million"] = json!(if deliveries > 0 { cpu / deliveries as f64 * 1e6 } else { 0.0 });
    // Keepalives the server wrote meanwhile (to streams quiet for its interval) cost it a
    // write each as an event does, without being a delivery.
    let keepalives = report["comments"].as_u64().unwrap_or(0);
    report["keepalives"] = json!(keepalives);
    let writes = deliveries + keepalives;
    report["cpu_secs_per_million_writes"] = json!(if writes > 0 { cpu / writes as f64 * 1e6 } else { 0.0 });
    Ok(report)
}

/// Hostile selections beside a normal stream: streams asking for 16 distinct 247-byte patterns
/// of 120 wildcards each (which no index finds), and one stream on `bench.wild.*`, while events
/// are published on ten channels long enough to make every pattern work. What the normal stream
/// receives, and what a message costs the relay.
fn wildcards(args: &SuiteArgs, plan: &Plan, target: &Target) -> anyhow::Result<Value> {
    let hostile_query: Vec<String> =
        (0..16).map(|j| format!("channel={}{{i}}x{j:02}*b", "*a".repeat(120))).collect();
    let hostile_path = format!("/events?{}", hostile_query.join("&"));
    let streams = plan.hostile_streams;
    let mut hostile = Clients::open(args, target.server.addr, &hostile_path, streams, 0)?;
    let mut normal = Clients::open(args, target.server.addr, "/events?channel=bench.wild.*", 1, streams)?;
    hostile.wait_for("open", streams as u64, Duration::from_secs(60))?;
    normal.wait_for("open", 1, Duration::from_secs(60))?;
    std::thread::sleep(plan.settle / 2);
    normal.ask("reset")?;
    let count = plan.hostile_rate * plan.hostile_secs;
    let channel = format!("bench.wild.{}.", "a".repeat(40));
    let cpu_before = target.server.cpu_secs();
    let published = publish(target, &channel, 10, false, plan.hostile_rate, count, 0)?;
    normal.wait_quiet(count, Duration::from_secs(2))?;
    let cpu = target.server.cpu_secs() - cpu_before;
    let report = normal.report(count)?;
    Ok(json!({
        "hostile_streams": streams,
        "hostile_patterns": streams * 16,
        "published": published.count,
        "rate_achieved": published.count as f64 / published.elapsed.as_secs_f64(),
        "normal_received": report["events"],
        "normal_missing": count.saturating_sub(report["events"].as_u64().unwrap_or(0)),
        "normal_latency_p50_ms": report["latency_p50_ms"],
        "normal_latency_p99_ms": report["latency_p99_ms"],
        "hostile_open": hostile.status("open")?,
        "cpu_secs": cpu,
        "cpu_us_per_message": cpu / count as f64 * 1e6,
    }))
}

/// Every client drops its stream at once and comes back with `Last-Event-ID`, having missed
/// `missed` events: how long until all are open again, until all have the missed events, and
/// (for the relay) what it asked Redis meanwhile.
fn storm(
    args: &SuiteArgs,
    plan: &Plan,
    target: &Target,
    name: &str,
    clients: usize,
    missed: u64,
) -> anyhow::Result<Value> {
    // The relay replays envelope channels only; the others replay what they buffer, or nothing.
    let is_relay = target.name == "sse-relay";
    let (channel, envelope) =
        if is_relay { (format!("benchlog.{name}"), true) } else { (format!("bench.{name}"), false) };
    let count = clients as u64;
    let mut streams = Clients::open(args, target.server.addr, &(target.path)(&channel), clients, 0)?;
    streams.wait_for("open", count, Duration::from_secs(120))?;
    std::thread::sleep(plan.settle / 2);
    publish(target, &channel, 0, envelope, 100, 1, 0)?;
    streams.wait_for("events", count, Duration::from_secs(30))?;
    streams.ask("drop")?;
    let drop_started = Instant::now();
    while streams.status("open")? > 0 {
        anyhow::ensure!(drop_started.elapsed() < Duration::from_secs(30), "streams did not close");
        std::thread::sleep(Duration::from_millis(20));
    }
    publish(target, &channel, 0, envelope, 1000, missed, 1)?;
    streams.ask("reset")?;
    let redis_before = if is_relay { redis_calls(&target.publish_via)? } else { Default::default() };
    let started = Instant::now();
    streams.ask("storm")?;
    let all_open = streams.wait_for("open", count, Duration::from_secs(120))?;
    let replays = target.name != "floor";
    let caught_up = if replays {
        streams.wait_for("events", count * missed, Duration::from_secs(60)).ok().map(|_| started.elapsed())
    } else {
        None
    };
    let report = streams.report(missed)?;
    let mut figures = json!({
        "clients": count,
        "missed_while_away": missed,
        "all_open_ms": all_open.as_millis() as u64,
        "all_caught_up_ms": caught_up.map(|d| d.as_millis() as u64),
        "replays": replays,
        "complete": report["complete"],
        "failed": report["failed"],
    });
    if is_relay {
        // Nothing else runs against this Redis meanwhile but the relay's own tail and probes.
        let after = redis_calls(&target.publish_via)?;
        let delta = |command: &str| {
            after.get(command).copied().unwrap_or(0) - redis_before.get(command).copied().unwrap_or(0)
        };
        // INFO is the suite's own.
        let relays = || after.keys().filter(|command| *command != "info");
        let commands: u64 = relays().map(|command| delta(command)).sum();
        // What a resume reads: XRANGE (a page of the log), XINFO (where the log starts).
        let resume_reads = delta("xrange") + delta("xinfo");
        figures["redis_commands"] = json!(commands);
        figures["redis_resume_reads"] = json!(resume_reads);
        figures["redis_resume_reads_per_100_clients"] = json!(resume_reads as f64 * 100.0 / count as f64);
        figures["redis_commands_by_name"] = json!(
            relays()
                .filter(|c| delta(c) > 0)
                .map(|c| (c.clone(), json!(delta(c))))
                .collect::<serde_json::Map<_, _>>()
        );
    }
    Ok(figures)
}

/// Calls per command so far (`INFO commandstats`), by lower-case command name.
fn redis_calls(via: &PublishVia) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let PublishVia::Redis(url) = via else { return Ok(Default::default()) };
    let mut connection = redis::Client::open(url.as_str())?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut connection)?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .collect())
}

fn machine_facts() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let version = |program: &str, flag: &str| {
        Command::new(program)
            .arg(flag)
            .output()
            .map(|o| {
                let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                String::from_utf8_lossy(&text).lines().next().unwrap_or("").to_owned()
            })
            .unwrap_or_default()
    };
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel,
        "redis": version("redis-server", "--version"),
        "nginx": version("nginx", "-v"),
        "relay": env!("CARGO_PKG_VERSION"),
    })
}
