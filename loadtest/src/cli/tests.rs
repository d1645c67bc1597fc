use super::*;

fn parse(flags: &[&str]) -> Result<Options, clap::Error> {
    parse_args(std::iter::once("loadtest").chain(flags.iter().copied()))
}

/// The error of `flags`, checked to be a usage error (exit code 2), as text.
fn error_of(flags: &[&str]) -> String {
    match parse(flags) {
        Ok(options) => panic!("{flags:?} was accepted: {options:?}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{flags:?}: {e}");
            e.to_string()
        }
    }
}

#[test]
fn defaults_make_a_small_bounded_run_against_the_builtin_trunk() {
    let options = parse(&[]).expect("defaults are valid");
    let run = &options.run;
    assert_eq!(run.url.as_str(), "ws://127.0.0.1:8080/ws");
    assert_eq!((run.calls, run.concurrency.get()), (10, 10));
    assert_eq!(run.rate.per_second(), 10.0);
    assert_eq!(run.to, "echo");
    assert_eq!(run.extension_base, 2000);
    assert_eq!(run.duration_limit, Duration::from_secs(60));
    assert_eq!(options.trunk, TrunkMode::Builtin);
    assert_eq!(options.trunk_bind.to_string(), "127.0.0.1:5090");
    assert!(options.threads >= 1);
    assert!(options.notes.is_empty(), "{:?}", options.notes);
}

#[test]
fn every_flag_is_carried_into_the_options() {
    let pid = std::process::id().to_string();
    let options = parse(&[
        "--url",
        "ws://localhost:9000/ws",
        "--calls",
        "200",
        "--concurrency",
        "50",
        "--rate",
        "12.5",
        "--ramp",
        "4",
        "--hold",
        "2.5",
        "--duration-limit",
        "30",
        "--to",
        "+4930123",
        "--extension-base",
        "7000",
        "--password",
        "pw",
        "--report-json",
        "/tmp/r.json",
        "--gateway-pid",
        &pid,
        "--trunk",
        "builtin",
        "--trunk-bind",
        "127.0.0.1:5999",
        "--threads",
        "1",
        "--setup-timeout",
        "3",
    ])
    .expect("valid");
    let run = &options.run;
    assert_eq!(run.url.as_str(), "ws://localhost:9000/ws");
    assert_eq!((run.calls, run.concurrency.get()), (200, 50));
    assert_eq!(run.rate.per_second(), 12.5);
    assert_eq!(run.ramp, Duration::from_secs(4));
    assert_eq!(run.hold, Duration::from_millis(2500));
    assert_eq!(run.duration_limit, Duration::from_secs(30));
    assert_eq!(run.setup_timeout, Duration::from_secs(3));
    assert_eq!((run.to.as_str(), run.extension_base), ("+4930123", 7000));
    assert_eq!(run.password, "pw");
    assert_eq!(run.gateway_pid, Some(std::process::id()));
    assert_eq!(run.generator_threads, Some(1));
    assert_eq!(options.report_json, Some(PathBuf::from("/tmp/r.json")));
    assert_eq!(options.trunk_bind.to_string(), "127.0.0.1:5999");
    assert_eq!(options.threads, 1);
    assert!(options.notes.is_empty(), "{:?}", options.notes);
}

#[test]
fn bad_counts_and_rates_are_refused_with_the_reason() {
    let e = error_of(&["--concurrency", "0"]);
    assert!(
        e.contains("--concurrency") && e.contains("at least 1"),
        "{e}"
    );
    let e = error_of(&["--calls", "0"]);
    assert!(e.contains("--calls") && e.contains("at least 1"), "{e}");
    let e = error_of(&["--calls", "ten"]);
    assert!(e.contains("--calls") && e.contains("whole number"), "{e}");
    for rate in ["0", "-3", "NaN", "inf", "fast"] {
        let e = error_of(&["--rate", rate]);
        assert!(e.contains("--rate") && e.contains("above 0"), "{rate}: {e}");
    }
    let e = error_of(&["--rate", "1e9"]);
    assert!(e.contains("at most"), "{e}");
    let e = error_of(&["--concurrency", "1000000"]);
    assert!(e.contains("at most"), "{e}");
    let e = error_of(&["--threads", "0"]);
    assert!(e.contains("--threads must be at least 1"), "{e}");
}

#[test]
fn bad_times_are_refused() {
    let e = error_of(&["--hold", "-1"]);
    assert!(e.contains("--hold") && e.contains("0 or more"), "{e}");
    let e = error_of(&["--duration-limit", "0"]);
    assert!(
        e.contains("--duration-limit") && e.contains("more than 0"),
        "{e}"
    );
    let e = error_of(&["--ramp", "1e12"]);
    assert!(e.contains("--ramp") && e.contains("at most"), "{e}");
    let e = error_of(&["--setup-timeout", "soon"]);
    assert!(
        e.contains("--setup-timeout") && e.contains("seconds"),
        "{e}"
    );
}

#[test]
fn only_loopback_websocket_urls_are_accepted() {
    let e = error_of(&["--url", "http://127.0.0.1:8080/ws"]);
    assert!(e.contains("not a WebSocket URL"), "{e}");
    let e = error_of(&[
        "--url",
        "ws://127.0.0.1:8080/ws",
        "--ca-file",
        "/nonexistent",
    ]);
    assert!(e.contains("wss://"), "{e}");
    let e = error_of(&[
        "--url",
        "wss://127.0.0.1:8080/ws",
        "--ca-file",
        "/nonexistent",
    ]);
    assert!(e.contains("--ca-file /nonexistent"), "{e}");
    let e = error_of(&["--url", "ws://10.1.2.3:8080/ws"]);
    assert!(e.contains("not on loopback"), "{e}");
    let e = error_of(&["--url", "ws://example.com/ws"]);
    assert!(e.contains("not on loopback"), "{e}");
    let e = error_of(&["--url", "ws://127.0.0.1:8080"]);
    assert!(e.contains("no path"), "{e}");
    let e = error_of(&["--url", "ws://127.0.0.1:http/ws"]);
    assert!(e.contains("HOST[:PORT]"), "{e}");
    for ok in [
        "ws://[::1]:8080/ws",
        "ws://LOCALHOST/ws",
        "WS://127.0.0.2:1/x",
        "wss://localhost:8443/ws",
    ] {
        assert!(parse(&["--url", ok]).is_ok(), "{ok}");
    }
}

#[test]
fn trunk_flags_are_checked() {
    let e = error_of(&["--trunk", "sipp"]);
    assert!(e.contains("builtin") && e.contains("external"), "{e}");
    let e = error_of(&["--trunk-bind", "192.0.2.1:5090"]);
    assert!(e.contains("not a loopback address"), "{e}");
    let e = error_of(&["--trunk-bind", "localhost"]);
    assert!(e.contains("IP:PORT"), "{e}");
    let e = error_of(&["--trunk", "external", "--trunk-bind", "127.0.0.1:5090"]);
    assert!(e.contains("only applies to --trunk builtin"), "{e}");
    assert!(parse(&["--trunk", "external"]).is_ok());
}

#[test]
fn other_bad_values_are_refused() {
    let e = error_of(&["--to", "sip:echo@x"]);
    assert!(e.contains("--to") && e.contains("dialable"), "{e}");
    let e = error_of(&["--to", ""]);
    assert!(e.contains("--to"), "{e}");
    // Above pid_max (2^22): never a running process.
    let e = error_of(&["--gateway-pid", "4194305"]);
    assert!(
        e.contains("/proc/4194305") && e.contains("is callgate running"),
        "{e}"
    );
    let e = error_of(&[
        "--extension-base",
        "4294967290",
        "--concurrency",
        "10",
        "--calls",
        "10",
    ]);
    assert!(e.contains("no room"), "{e}");
    let e = error_of(&["--nonsense"]);
    assert!(e.contains("--nonsense"), "{e}");
}

#[test]
fn help_and_version_exit_zero() {
    for flag in ["--help", "--version"] {
        let e = parse(&[flag]).expect_err("prints instead of running");
        assert_eq!(e.exit_code(), 0, "{flag}");
    }
    let help = parse(&["--help"]).expect_err("help").to_string();
    for flag in [
        "--calls",
        "--concurrency",
        "--rate",
        "--ramp",
        "--hold",
        "--duration-limit",
        "--gateway-pid",
        "--trunk",
        "--report-json",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn a_schedule_longer_than_the_limit_is_noted_not_refused() {
    let options = parse(&["--calls", "100", "--rate", "1", "--duration-limit", "10"])
        .expect("valid, if short");
    assert_eq!(options.notes.len(), 1, "{:?}", options.notes);
    assert!(
        options.notes[0].contains("cut short"),
        "{:?}",
        options.notes
    );
}

#[test]
fn soak_flags_default_to_ten_thousand_cycles_and_are_checked() {
    let options = parse(&["--soak", "--register", "--reconnect-every", "5"]).expect("valid");
    assert_eq!(options.run.calls, DEFAULT_SOAK_CALLS);
    assert!(options.run.register);
    assert_eq!(options.run.reconnect_every, Some(5));
    let soak = options.soak.expect("a soak");
    assert_eq!(soak.warmup_calls, 10, "--concurrency by default");
    assert_eq!(soak.settle, Duration::from_secs(15));
    let options = parse(&["--soak", "--calls", "200", "--soak-warmup", "3"]).expect("valid");
    assert_eq!(options.run.calls, 200);
    assert_eq!(options.soak.map(|s| s.warmup_calls), Some(3));
    assert!(parse(&[]).expect("defaults").soak.is_none());

    let e = error_of(&["--soak-warmup", "3"]);
    assert!(e.contains("--soak"), "{e}");
    let e = error_of(&["--reconnect-every", "0"]);
    assert!(
        e.contains("--reconnect-every") && e.contains("at least 1"),
        "{e}"
    );
    let e = error_of(&["--soak", "--soak-settle", "-1"]);
    assert!(e.contains("--soak-settle"), "{e}");
}

#[test]
fn idle_agents_take_the_run_flags_and_are_checked() {
    let options = parse(&["--idle-agents", "500", "--register", "--hold", "3"]).expect("valid");
    let idle = options.idle.expect("idle mode");
    assert_eq!((idle.agents, idle.register), (500, true));
    assert_eq!(idle.hold, Duration::from_secs(3));
    let e = error_of(&["--idle-agents", "0"]);
    assert!(
        e.contains("--idle-agents") && e.contains("at least 1"),
        "{e}"
    );
    let e = error_of(&["--idle-agents", "10", "--soak"]);
    assert!(e.contains("--soak") || e.contains("--idle-agents"), "{e}");
}

#[test]
fn the_chart_is_an_svg_file_in_an_existing_directory() {
    let options = parse(&["--chart", "/tmp/run.svg"]).expect("a chart path");
    assert_eq!(options.chart, Some(PathBuf::from("/tmp/run.svg")));
    assert_eq!(
        parse(&["--chart", "run.SVG"]).expect("relative").chart,
        Some(PathBuf::from("run.SVG"))
    );
    assert_eq!(parse(&[]).expect("defaults").chart, None);
    let e = error_of(&["--chart", "/tmp/run.png"]);
    assert!(e.contains("--chart") && e.contains("ending in .svg"), "{e}");
    let e = error_of(&["--chart", "/no/such/directory/run.svg"]);
    assert!(e.contains("/no/such/directory does not exist"), "{e}");
    let e = error_of(&["--chart", "/tmp/run.svg", "--idle-agents", "10"]);
    assert!(e.contains("--idle-agents"), "{e}");
}

#[test]
fn pacing_is_off_by_default_and_not_for_idle_agents() {
    assert!(!parse(&[]).expect("defaults").run.pace_frames);
    assert!(parse(&["--pace-frames"]).expect("valid").run.pace_frames);
    let e = error_of(&["--pace-frames", "--idle-agents", "10"]);
    assert!(
        e.contains("--pace-frames") && e.contains("--idle-agents"),
        "{e}"
    );
}
