use testkit::service_process::run_to_exit;
use testkit::workspace_binary;

fn assert_refused(env: &[(&str, &str)], key: &str, words: &str) {
    let (code, output) = run_to_exit(&workspace_binary("forecast-api"), &[], env);
    assert_eq!(code, 2, "exit status for {key}; output:\n{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{output}");
    assert!(lines[0].starts_with("forecast-api: invalid configuration: "), "{output}");
    assert!(lines[0].contains(key) && lines[0].contains(words), "names {key} and says {words:?}: {output}");
}

#[test]
fn bad_configuration_exits_2_with_one_line_naming_the_key() {
    assert_refused(&[("FORECAST_API__DATABASE__URL", "mysql://x")], "database.url", "sqlite://");
    assert_refused(&[("FORECAST_API__REDIS__URL", "redis://:bad:port")], "redis.url", "not a valid");
    assert_refused(&[("FORECAST_API__AUTH__ADMIN_KEY", "short")], "auth.admin_key", "at least 16");
    assert_refused(
        &[("FORECAST_API__AUTH__RELAY_JWT_SECRET", "weak")],
        "auth.relay_jwt_secret",
        "at least 32",
    );
    assert_refused(&[("FORECAST_API__HTTP__MAX_BODY_BYTES", "0")], "http.max_body_bytes", "at least 1");
    assert_refused(&[("FORECAST_API__OUTBOX__BATCH", "5")], "batch", "unknown field");
    assert_refused(
        &[("FORECAST_API__EVENTS__HANDLER_TIMEOUT_MS", "0")],
        "events.handler_timeout_ms",
        "at least 1",
    );
}

#[test]
fn contradictory_redis_modes_and_partitions_without_a_cluster_are_refused() {
    assert_refused(
        &[
            ("FORECAST_API__REDIS__CLUSTER__NODES", "127.0.0.1:7000,127.0.0.1:7001"),
            ("FORECAST_API__REDIS__SENTINEL__MASTER_NAME", "main"),
            ("FORECAST_API__REDIS__SENTINEL__ADDRESSES", "127.0.0.1:26379"),
        ],
        "redis.cluster.nodes",
        "one Redis mode at a time",
    );
    assert_refused(&[("FORECAST_API__REDIS__LOG_PARTITIONS", "8")], "redis.log_partitions", "Redis Cluster");
    assert_refused(
        &[
            ("FORECAST_API__REDIS__CLUSTER__NODES", "127.0.0.1:7000"),
            ("FORECAST_API__REDIS__LOG_PARTITIONS", "65"),
        ],
        "redis.log_partitions",
        "from 1 to 64",
    );
    assert_refused(
        &[("FORECAST_API__REDIS__CLUSTER__NODES", "nohost")],
        "redis.cluster.nodes[0]",
        "host:port",
    );
    assert_refused(
        &[
            ("FORECAST_API__REDIS__CLUSTER__NODES", "127.0.0.1:7000"),
            ("FORECAST_API__REDIS__URL", "redis://127.0.0.1:7000/3"),
        ],
        "redis.url",
        "only database 0",
    );
    assert_refused(
        &[("FORECAST_API__REDIS__RESTRICTED", "true"), ("FORECAST_API__REDIS__MIN_REPLICAS", "1")],
        "redis.min_replicas",
        "needs WAIT",
    );
}

#[test]
fn a_configuration_with_several_errors_reports_each_on_its_own_line() {
    let env = [
        ("FORECAST_API__AUTH__ADMIN_KEY", "short"),
        ("FORECAST_API__HTTP__MAX_BODY_BYTES", "0"),
        ("FORECAST_API__RELAY__PUBLIC_URL", "relay.example"),
    ];
    let (code, output) = run_to_exit(&workspace_binary("forecast-api"), &[], &env);
    assert_eq!(code, 2, "{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "one line per error:\n{output}");
    for (line, key) in lines.iter().zip(["auth.admin_key", "relay.public_url", "http.max_body_bytes"]) {
        assert!(line.starts_with("forecast-api: invalid configuration: ") && line.contains(key), "{output}");
    }
}

#[test]
fn help_and_version_work() {
    let (code, output) = run_to_exit(&workspace_binary("forecast-api"), &["--help"], &[]);
    assert_eq!(code, 0);
    assert!(output.contains("FORECAST_API__"), "{output}");
    let (code, output) = run_to_exit(&workspace_binary("forecast-api"), &["--version"], &[]);
    assert_eq!(code, 0);
    assert!(output.contains(env!("CARGO_PKG_VERSION")), "{output}");
}
