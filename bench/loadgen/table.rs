//! The results as a table: one row per figure, one column per server, and the relay's ratios
//! to each reference measured in the same run.

use serde_json::Value;

/// (label, scenario, field, lower is better)
const ROWS: &[(&str, &str, &str, bool)] = &[
    ("idle: bytes per connection (RSS slope)", "idle", "bytes_per_connection", true),
    ("idle: connections accepted per second", "idle", "accepts_per_sec", false),
    ("fan-out: deliveries per second", "fanout", "deliveries_per_sec", false),
    ("fan-out: CPU seconds per million deliveries", "fanout", "cpu_secs_per_million", true),
    ("fan-out: events missing", "fanout", "silently_missing", true),
    ("fan-out: latency p50 (ms)", "fanout", "latency_p50_ms", true),
    ("fan-out: latency p99 (ms)", "fanout", "latency_p99_ms", true),
    ("fan-out: latency max (ms)", "fanout", "latency_max_ms", true),
    ("fan-out, envelope from the log: CPU s/million", "fanout_envelope", "cpu_secs_per_million", true),
    ("fan-out, envelope from the log: events missing", "fanout_envelope", "silently_missing", true),
    ("fan-out, envelope from the log: p50 (ms)", "fanout_envelope", "latency_p50_ms", true),
    ("fan-out, envelope from the log: p99 (ms)", "fanout_envelope", "latency_p99_ms", true),
    ("overload: deliveries per second", "overload", "deliveries_per_sec", false),
    ("overload: publisher rate achieved (msg/s)", "overload", "rate_achieved", false),
    ("overload: clients complete", "overload", "complete", false),
    ("overload: clients disconnected (counted)", "overload", "disconnected", true),
    ("overload: events missing on open streams", "overload", "silently_missing", true),
    ("overload: CPU seconds per million deliveries", "overload", "cpu_secs_per_million", true),
    ("light: latency p50 (ms)", "latency_light", "latency_p50_ms", true),
    ("light: latency p99 (ms)", "latency_light", "latency_p99_ms", true),
    ("light: latency max (ms)", "latency_light", "latency_max_ms", true),
    ("storm: all reconnected (ms)", "storm", "all_open_ms", true),
    ("storm: all caught up with Last-Event-ID (ms)", "storm", "all_caught_up_ms", true),
    ("channels: CPU seconds per million deliveries", "channels", "cpu_secs_per_million", true),
    ("channels: keepalives written meanwhile", "channels", "keepalives", true),
    ("channels: CPU s/million writes (+keepalives)", "channels", "cpu_secs_per_million_writes", true),
    ("channels: events missing", "channels", "silently_missing", true),
    ("channels: latency p50 (ms)", "channels", "latency_p50_ms", true),
    ("channels: latency p99 (ms)", "channels", "latency_p99_ms", true),
    ("ten channels: CPU s/million deliveries", "channels_few", "cpu_secs_per_million", true),
    ("shared subscription: CPU s/million deliveries", "channels_shared", "cpu_secs_per_million", true),
    ("shared subscription: latency p99 (ms)", "channels_shared", "latency_p99_ms", true),
    ("hostile wildcards: CPU µs per message", "wildcards", "cpu_us_per_message", true),
    ("hostile wildcards: normal stream missing", "wildcards", "normal_missing", true),
    ("hostile wildcards: normal stream p99 (ms)", "wildcards", "normal_latency_p99_ms", true),
    ("storm at scale: all reconnected (ms)", "storm_scale", "all_open_ms", true),
    ("storm at scale: all caught up (ms)", "storm_scale", "all_caught_up_ms", true),
    ("storm at scale: clients complete", "storm_scale", "complete", false),
    ("storm at scale: Redis commands meanwhile", "storm_scale", "redis_commands", true),
    (
        "storm at scale: Redis reads per 100 resumes",
        "storm_scale",
        "redis_resume_reads_per_100_clients",
        true,
    ),
    ("slow burst: RSS before (bytes)", "slow_burst", "rss_before_bytes", true),
    ("slow burst: RSS at the peak (bytes)", "slow_burst", "rss_peak_bytes", true),
    ("slow burst: RSS a while after (bytes)", "slow_burst", "rss_after_bytes", true),
    ("outbox to log: one Redis (events/s)", "scale_out", "standalone_events_per_sec", false),
    ("outbox to log: cluster, 1 partition (events/s)", "scale_out", "cluster_1_events_per_sec", false),
    ("outbox to log: cluster, 8 partitions (ev/s)", "scale_out", "cluster_8_events_per_sec", false),
    ("outbox to log: 8 partitions, how many written", "scale_out", "cluster_8_partitions_written", false),
    (
        "relay on one Redis: CPU s/million deliveries",
        "scale_out",
        "standalone_relay_cpu_secs_per_million",
        true,
    ),
    ("relay on one Redis: latency p99 (ms)", "scale_out", "standalone_relay_latency_p99_ms", true),
    (
        "relay on a cluster: CPU s/million deliveries",
        "scale_out",
        "cluster_1_relay_cpu_secs_per_million",
        true,
    ),
    ("relay on a cluster: latency p99 (ms)", "scale_out", "cluster_1_relay_latency_p99_ms", true),
    (
        "relay, 8 partitions: CPU s/million deliveries",
        "scale_out",
        "cluster_8_relay_cpu_secs_per_million",
        true,
    ),
    ("relay, 8 partitions: latency p99 (ms)", "scale_out", "cluster_8_relay_latency_p99_ms", true),
];

pub fn render(results: &Value) -> String {
    let servers = ["relay", "nchan", "floor"];
    let present: Vec<&str> =
        servers.iter().copied().filter(|s| results["servers"].get(*s).is_some()).collect();
    let mut out = String::new();
    let facts = &results["machine"];
    out.push_str(&format!(
        "machine: {} ({} cores), kernel {}; {}; {}\n",
        facts["cpu"].as_str().unwrap_or("?"),
        facts["cores"],
        facts["kernel"].as_str().unwrap_or("?"),
        facts["redis"].as_str().unwrap_or("?"),
        facts["nginx"].as_str().unwrap_or("?")
    ));
    let heading = format!(
        "| {:<46} |{}{}{}",
        "figure",
        present.iter().map(|s| format!(" {s:>10} |")).collect::<String>(),
        if present.contains(&"nchan") && present.contains(&"relay") { " relay/nchan |" } else { "" },
        if present.contains(&"floor") && present.contains(&"relay") { " relay/floor |" } else { "" },
    );
    out.push_str(&heading);
    out.push('\n');
    out.push_str(&heading.chars().map(|c| if c == '|' { '|' } else { '-' }).collect::<String>());
    out.push('\n');
    for (label, scenario, field, _) in ROWS {
        let value = |server: &str| results["servers"][server][scenario][field].as_f64();
        let mut line = format!("| {label:<46} |");
        for server in &present {
            line.push_str(&format!(
                " {:>10} |",
                value(server).map(format_number).unwrap_or_else(|| "—".into())
            ));
        }
        for reference in ["nchan", "floor"] {
            if present.contains(&reference) && present.contains(&"relay") {
                let ratio = match (value("relay"), value(reference)) {
                    (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
                    _ => "—".into(),
                };
                line.push_str(&format!(" {ratio:>11} |"));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    // The envelope path against the raw one, both the relay's, in the same run.
    let relay = &results["servers"]["relay"];
    if let (Some(envelope), Some(raw)) = (
        relay["fanout_envelope"]["cpu_secs_per_million"].as_f64(),
        relay["fanout"]["cpu_secs_per_million"].as_f64(),
    ) && raw > 0.0
    {
        out.push_str(&format!(
            "relay CPU per million deliveries, envelope (from the log) / raw (subscription): {:.2}×\n",
            envelope / raw
        ));
    }
    if let (Some(channels), Some(shared)) = (
        relay["channels"]["cpu_secs_per_million"].as_f64(),
        relay["channels_shared"]["cpu_secs_per_million"].as_f64(),
    ) && shared > 0.0
    {
        out.push_str(&format!(
            "relay CPU per million deliveries, one channel per stream / one shared subscription: {:.2}×\n",
            channels / shared
        ));
    }
    if let (Some(channels), Some(few)) = (
        relay["channels"]["cpu_secs_per_million"].as_f64(),
        relay["channels_few"]["cpu_secs_per_million"].as_f64(),
    ) && few > 0.0
    {
        out.push_str(&format!(
            "relay CPU per message, {} channels / ten channels: {:.2}×\n",
            relay["channels"]["channels"],
            channels / few
        ));
    }
    out
}

fn format_number(value: f64) -> String {
    if value.abs() >= 100.0 { format!("{value:.0}") } else { format!("{value:.2}") }
}
