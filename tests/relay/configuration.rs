use testkit::service_process::run_to_exit;
use testkit::workspace_binary;

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_string_lossy().into_owned())
}

/// Runs the relay with a bad configuration: it must exit 2 with one line naming `key`.
fn assert_refused(config: Option<&str>, env: &[(&str, &str)], key: &str, words: &str) {
    let file = config.map(write_config);
    let mut args = Vec::new();
    if let Some((_, path)) = &file {
        args.extend(["--config", path.as_str()]);
    }
    let (code, output) = run_to_exit(&workspace_binary("sse-relay"), &args, env);
    assert_eq!(code, 2, "exit status for {key}; output:\n{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{output}");
    assert!(lines[0].starts_with("sse-relay: invalid configuration: "), "{output}");
    assert!(lines[0].contains(key), "names {key}: {output}");
    assert!(lines[0].contains(words), "says {words:?}: {output}");
}

#[test]
fn an_unparsable_redis_url_exits_2_naming_the_key() {
    assert_refused(None, &[("SSE_RELAY__REDIS__URL", "http://localhost")], "redis.url", "not a redis://");
    assert_refused(None, &[("SSE_RELAY__REDIS__URL", "redis://host:notaport")], "redis.url", "not a valid");
}

#[test]
fn a_malformed_glob_exits_2_naming_the_rule() {
    let config = "[[channels]]\npattern = \"weather[forecast\"\n";
    assert_refused(Some(config), &[], "channels[0].pattern", "unterminated '['");
}

#[test]
fn an_unknown_key_exits_2_naming_it() {
    assert_refused(Some("[limits]\nmax_conections = 5\n"), &[], "max_conections", "unknown field");
    assert_refused(
        Some("[redis]\nrestricted = true\n\n[[channels]]\npattern = \"alerts.*\"\nformat = \"raw\"\n"),
        &[],
        "channels[0].pattern",
        "has no PSUBSCRIBE",
    );
    assert_refused(
        None,
        &[("SSE_RELAY__REDIS__LOG_PARTITIONS", "4")],
        "redis.log_partitions",
        "partitions spread the log over a Redis Cluster",
    );
    assert_refused(
        None,
        &[("SSE_RELAY__REDIS__CLUSTER__NODES", "127.0.0.1:7000"), ("SSE_RELAY__REDIS__LOG_PARTITIONS", "65")],
        "redis.log_partitions",
        "from 1 to 64",
    );
    assert_refused(None, &[("SSE_RELAY__SSE__KEEPALIVE", "5")], "keepalive", "unknown field");
}

#[test]
fn a_sharded_rule_must_be_raw_exact_and_on_a_cluster() {
    let cluster = [("SSE_RELAY__REDIS__CLUSTER__NODES", "127.0.0.1:7000")];
    let rule = |pattern: &str, format: &str| {
        format!("[[channels]]\npattern = \"{pattern}\"\nformat = \"{format}\"\nsharded = true\n")
    };
    assert_refused(
        Some(&rule("orders.eu.1337", "envelope")),
        &cluster,
        "channels[0].sharded",
        "raw channels",
    );
    assert_refused(Some(&rule("orders.eu.*", "raw")), &cluster, "channels[0].sharded", "no patterns");
    assert_refused(Some(&rule("orders.eu.1337", "raw")), &[], "channels[0].sharded", "redis.cluster.nodes");
}

#[test]
fn zero_or_negative_limits_exit_2_naming_the_key() {
    assert_refused(
        None,
        &[("SSE_RELAY__LIMITS__MAX_CONNECTIONS", "0")],
        "limits.max_connections",
        "at least 1",
    );
    assert_refused(Some("[limits]\nclient_queue = -5\n"), &[], "limits.client_queue", "-5");
    assert_refused(None, &[("SSE_RELAY__SSE__KEEPALIVE_SECS", "soon")], "sse.keepalive_secs", "soon");
}

#[test]
fn unsupported_or_invalid_values_exit_2_naming_the_key() {
    assert_refused(Some("[[channels]]\npattern = \"a.*\"\nformat = \"xml\"\n"), &[], "format", "xml");
    assert_refused(None, &[("SSE_RELAY__LISTEN", "everywhere")], "listen", "not an address");
    assert_refused(
        None,
        &[("SSE_RELAY__LISTEN", "127.0.0.1:8080"), ("SSE_RELAY__METRICS_LISTEN", "127.0.0.1:8080")],
        "metrics_listen",
        "must differ from listen",
    );
    assert_refused(
        None,
        &[("SSE_RELAY__CORS__ALLOWED_ORIGINS", "https://ok.example,not-an-origin")],
        "cors.allowed_origins[1]",
        "not an origin",
    );
    let (code, output) =
        run_to_exit(&workspace_binary("sse-relay"), &["--config", "/nonexistent/relay.toml"], &[]);
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("/nonexistent/relay.toml"), "{output}");
}

#[test]
fn a_configuration_with_several_errors_reports_each_on_its_own_line() {
    let config = "[[channels]]\npattern = \"weather[forecast\"\n\n[[channels]]\npattern = \"admin.*\"\naccess = \"token\"\n";
    let (_dir, path) = write_config(config);
    let env = [("SSE_RELAY__REDIS__URL", "http://localhost"), ("SSE_RELAY__LIMITS__MAX_CONNECTIONS", "0")];
    let (code, output) = run_to_exit(&workspace_binary("sse-relay"), &["--config", &path], &env);
    assert_eq!(code, 2, "{output}");
    let lines: Vec<&str> = output.lines().collect();
    for key in ["redis.url", "channels[0].pattern", "channels[1].access", "limits.max_connections"] {
        let line = lines
            .iter()
            .find(|line| line.contains(key))
            .unwrap_or_else(|| panic!("no line names {key}:\n{output}"));
        assert!(line.starts_with("sse-relay: invalid configuration: "), "{line}");
    }
    assert_eq!(lines.len(), 4, "one line per error:\n{output}");
}

#[test]
fn durations_whose_sum_overflows_are_refused_not_wrapped() {
    // drain_delay_ms + drain_window_ms overflows u64: it must not wrap to a small sum that
    // passes, nor panic.
    let max = u64::MAX.to_string();
    let env = [
        ("SSE_RELAY__SHUTDOWN__DRAIN_DELAY_MS", max.as_str()),
        ("SSE_RELAY__SHUTDOWN__DRAIN_WINDOW_MS", "2"),
        ("SSE_RELAY__SHUTDOWN__GRACE_PERIOD_MS", "30000"),
    ];
    assert_refused(None, &env, "shutdown.grace_period_ms", "longer than");
}

#[test]
fn help_and_version_work() {
    let (code, output) = run_to_exit(&workspace_binary("sse-relay"), &["--help"], &[]);
    assert_eq!(code, 0);
    assert!(output.contains("--config"), "{output}");
    assert!(output.contains("SSE_RELAY__"), "{output}");
    let (code, output) = run_to_exit(&workspace_binary("sse-relay"), &["--version"], &[]);
    assert_eq!(code, 0);
    assert!(output.contains(env!("CARGO_PKG_VERSION")), "{output}");
}
