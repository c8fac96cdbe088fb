//! A smoke run of the benchmark harness (a few hundred streams, a few seconds per scenario),
//! so that `make bench` does not rot. It checks what the harness reports, never how fast.

use std::process::Command;

#[test]
fn the_benchmark_suite_runs_every_scenario_against_every_server() {
    let dir = tempfile::tempdir().expect("output dir");
    let out = dir.path().join("results.json");
    let output = Command::new(env!("CARGO_BIN_EXE_sse-bench"))
        .args(["suite", "--smoke", "--runs", "1", "--servers", "relay,nchan,floor", "--out"])
        .arg(&out)
        .output()
        .expect(
            "run sse-bench (needs redis-server, taskset and nchan: scripts/ensure-deps.sh redis nchan bench)",
        );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "suite failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    println!("{stdout}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for server in ["relay", "nchan", "floor"] {
        let figures = &results["servers"][server];
        for scenario in ["idle", "fanout", "overload", "latency_light", "storm"] {
            assert!(figures[scenario].is_object(), "{server} has no {scenario} figures: {figures}");
        }
        assert_eq!(figures["idle"]["open_at_high"], 300, "{server}: every idle stream open");
        assert!(figures["fanout"]["deliveries"].as_u64().unwrap() > 0, "{server}: events delivered");
    }
    for server in ["relay", "nchan"] {
        let figures = &results["servers"][server];
        assert_eq!(figures["channels"]["channels"], 200, "{server}: a channel per stream");
        assert!(figures["channels"]["deliveries"].as_u64().unwrap() > 0, "{server}: events delivered");
        assert!(figures["storm_scale"]["all_open_ms"].as_u64().is_some(), "{server}: {figures}");
    }
    let relay = &results["servers"]["relay"];
    assert_eq!(relay["fanout"]["silently_missing"], 0, "the relay loses nothing at a light load");
    assert_eq!(relay["channels"]["silently_missing"], 0, "each spread event reaches its stream");
    assert!(relay["channels"]["keepalives"].is_u64(), "keepalives written are counted: {relay}");
    assert_eq!(relay["channels"]["deliveries"], relay["channels"]["published"]);
    assert_eq!(relay["channels_shared"]["deliveries"], 5 * 200);
    assert_eq!(relay["channels_few"]["silently_missing"], 0);
    assert_eq!(relay["wildcards"]["normal_missing"], 0, "hostile selections starve nobody: {relay}");
    assert_eq!(relay["wildcards"]["hostile_open"], 20);
    assert_eq!(relay["storm_scale"]["complete"], 300);
    assert_eq!(relay["storm_scale"]["redis_resume_reads"], 0, "every resume served from memory: {relay}");
    assert_eq!(relay["slow_burst"]["clients"], 100, "{relay}");
    assert!(relay["slow_burst"]["rss_peak_bytes"].as_u64().unwrap() > 0);
    assert!(relay["slow_burst"]["rss_after_bytes"].as_u64().unwrap() > 0);
    assert_eq!(relay["channels"]["excess"], 0, "spread events are counted once: {relay}");
    assert_eq!(relay["fanout"]["out_of_order"], 0);
    assert_eq!(relay["storm"]["complete"], 100, "every resumed stream got the events it missed");
    for setup in ["standalone", "cluster_1", "cluster_8"] {
        let in_log = &relay["scale_out"][format!("{setup}_in_log")];
        assert_eq!(in_log, 150, "{setup}: the backlog reached the log, each event once: {relay}");
    }
    assert!(relay["scale_out"]["cluster_8_partitions_written"].as_u64().unwrap() > 1, "{relay}");
    for setup in ["standalone", "cluster_1", "cluster_8"] {
        let deliveries = &relay["scale_out"][format!("{setup}_relay_deliveries")];
        assert_eq!(deliveries.as_f64(), Some(150.0 * 100.0), "{setup}: every event to every stream: {relay}");
    }
    assert!(stdout.contains("relay/floor"), "the table has the ratios:\n{stdout}");
}
