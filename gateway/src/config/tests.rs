use super::*;

#[test]
fn defaults_are_valid_and_serve_loopback() {
    let s = Settings::default();
    s.validate().expect("defaults validate");
    assert_eq!(s.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.sip.listen.to_string(), "127.0.0.1:5060");
}

#[test]
fn file_values_are_read_and_flags_win() {
    let text = r#"
        [sip]
        proxy = "10.0.0.5:5060"
        transport = "tcp"
        header_prefixes = ["X-", "P-Crm-"]
        [rtp]
        port_min = 40000
        port_max = 40100
        inactivity_timeout = 10
        [log]
        format = "json"
    "#;
    let mut s = Settings::from_toml(text).expect("parses");
    assert_eq!(s.sip.transport, SipTransport::Tcp);
    assert_eq!(s.rtp.inactivity_timeout, Duration::from_secs(10));
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.sip_domain(), "10.0.0.5");
    s.apply(&Overrides {
        rtp_port_min: Some(41000),
        rtp_port_max: Some(41010),
        sip_domain: Some("pbx.example".into()),
        ..Default::default()
    });
    assert_eq!(s.rtp.port_min, 41000);
    assert_eq!(s.sip_domain(), "pbx.example");
    s.validate().expect("still valid");
}

#[test]
fn typos_and_bad_values_are_named() {
    let err = Settings::from_toml("[sip]\nproxxy = \"1.2.3.4:5060\"\n").expect_err("unknown key");
    assert!(err.contains("proxxy"), "{err}");
    let err = Settings::from_toml("[rtp]\nport_min = \"low\"\n").expect_err("bad type");
    assert!(err.contains("port_min"), "{err}");
}

#[test]
fn a_secondary_proxy_must_differ_from_the_primary_and_needs_the_keepalive() {
    let mut s = Settings::default();
    s.sip.secondary_proxy = Some(s.sip.proxy);
    s.sip.keepalive_interval = Duration::ZERO;
    let ConfigError::Invalid(problems) = s.validate().expect_err("invalid") else {
        panic!("expected Invalid");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    let mut s = Settings::default();
    s.sip.secondary_proxy = Some("127.0.0.2:5060".parse().expect("addr"));
    s.validate().expect("a distinct secondary is valid");
    let from_file = Settings::from_toml("[sip]\nsecondary_proxy = \"10.0.0.6:5060\"\n")
        .expect("read from a file");
    assert_eq!(
        from_file.sip.secondary_proxy,
        Some("10.0.0.6:5060".parse().expect("addr"))
    );
}

/// Over TLS the OPTIONS keepalive is what keeps callgate's connection, the PBX's only way to
/// its agents, from being closed as idle: off or too slow is refused, with the reason.
#[test]
fn sip_over_tls_needs_a_keepalive_faster_than_the_idle_close() {
    for (secs, valid) in [(0, false), (1, true), (30, true), (150, true), (151, false)] {
        let mut s = Settings::default();
        s.sip.transport = SipTransport::Tls;
        s.sip.keepalive_interval = Duration::from_secs(secs);
        match s.validate() {
            Ok(_) => assert!(valid, "{secs} s accepted"),
            Err(ConfigError::Invalid(problems)) => {
                assert!(!valid, "{secs} s refused: {problems:?}");
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert!(
                    problems[0].contains("sip.keepalive_interval between 1 and 150 s")
                        && problems[0].contains("closed after 300 s"),
                    "{problems:?}"
                );
            }
            Err(other) => panic!("{secs} s: {other:?}"),
        }
    }
    // Over UDP and TCP the PBX can always reach callgate's listener: the keepalive may be off.
    for transport in [SipTransport::Udp, SipTransport::Tcp] {
        let mut s = Settings::default();
        s.sip.transport = transport;
        s.sip.keepalive_interval = Duration::ZERO;
        s.validate().expect("no keepalive is fine without TLS");
    }
}

#[test]
fn validation_lists_every_problem() {
    let mut s = Settings::default();
    s.rtp.port_min = 5000;
    s.rtp.port_max = 4000;
    s.calls.max_per_agent = 0;
    s.log.level = "gateway=loud".into();
    let ConfigError::Invalid(problems) = s.validate().expect_err("invalid") else {
        panic!("expected Invalid");
    };
    assert_eq!(problems.len(), 4, "{problems:?}");
}

#[test]
fn shared_rtp_sockets_need_a_pair_per_worker_and_per_call_sockets_do_not() {
    let mut s = Settings::default();
    s.rtp.port_min = 40001;
    s.rtp.port_max = 40006;
    s.webrtc.workers = 3;
    assert_eq!(s.rtp_pairs(), 2, "40002/40003 and 40004/40005");
    let ConfigError::Invalid(problems) = s.validate().expect_err("2 pairs for 3 workers") else {
        panic!("expected Invalid");
    };
    assert_eq!(
        problems,
        vec![
            "rtp.sockets = \"shared\" needs one RTP/RTCP pair per media worker: the range holds \
             2 pairs for 3 workers"
                .to_string()
        ]
    );
    s.webrtc.workers = 2;
    s.validate().expect("a pair per worker");
    assert_eq!(
        s.shared_rtp_base(),
        Some("127.0.0.1:40002".parse().expect("addr")),
        "the first even port"
    );
    s.webrtc.workers = 3;
    s.rtp.sockets = RtpSockets::PerCall;
    s.validate()
        .expect("per-call pairs are leased as calls come");
    assert_eq!(s.shared_rtp_base(), None);
    let from_file = Settings::from_toml("[rtp]\nsockets = \"per_call\"\n").expect("per_call");
    assert_eq!(from_file.rtp.sockets, RtpSockets::PerCall);
    let err = Settings::from_toml("[rtp]\nsockets = \"pooled\"\n").expect_err("unknown mode");
    assert!(err.to_string().contains("shared"), "{err}");
}

#[test]
fn the_shipped_example_configuration_is_valid() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/callgate.example.toml");
    let settings = Settings::load(Some(&path), &Overrides::default()).expect("example validates");
    assert_eq!(settings.sip_domain(), "pbx.example.com");
    assert_eq!(settings.log.format, LogFormat::Json);
}

#[test]
fn per_agent_dial_plans_come_from_one_flag() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        overrides: Overrides,
    }
    let cli = Cli::try_parse_from([
        "callgate",
        "--dialplan-agents",
        "1001=1[0-9]{3};1001=\\+84[0-9]{9,10};1002=9.*",
    ])
    .expect("parses");
    let mut s = Settings::default();
    s.apply(&cli.overrides);
    assert_eq!(
        s.dialplan.agents.get("1001").expect("1001 has a plan"),
        &vec!["1[0-9]{3}".to_string(), "\\+84[0-9]{9,10}".to_string()]
    );
    assert_eq!(
        s.dialplan.agents.get("1002").expect("1002 has a plan"),
        &vec!["9.*".to_string()]
    );
    assert!(s.validate().is_ok());

    let bad = Cli::try_parse_from(["callgate", "--dialplan-agents", "no-equals-sign"]);
    assert!(bad.is_err(), "an item without = is refused");
}

#[test]
fn auth_settings_are_checked_together() {
    let text = r#"
        [auth]
        password_mode = false
        token_secret = "short"
        credentials_file = "/etc/callgate/creds.toml"
        credentials_url = "ftp://crm/creds"
        credentials_timeout_ms = 60000
        [webhooks]
        url = "https://crm.example.com/hooks"
    "#;
    let s = Settings::from_toml(text).expect("parses");
    let Err(ConfigError::Invalid(problems)) = s.validate() else {
        panic!("invalid auth settings accepted");
    };
    let all = problems.join("\n");
    for expected in [
        "auth.token_secret must be at least 32 bytes",
        "not both",
        "auth.credentials_url",
        "auth.credentials_timeout_ms",
    ] {
        assert!(all.contains(expected), "{expected} missing in:\n{all}");
    }
    assert!(
        !all.contains("webhooks.url"),
        "https webhooks are fine:\n{all}"
    );

    let mut s = Settings::default();
    s.auth.token_secret = Some("x".repeat(32));
    let Err(ConfigError::Invalid(problems)) = s.validate() else {
        panic!("token mode without a credentials source accepted");
    };
    assert!(
        problems
            .join("\n")
            .contains("credentials_file or auth.credentials_url")
    );
    s.apply(&Overrides {
        auth_credentials_url: Some("https://crm.example.com/sip/{extension}".into()),
        auth_password_mode: Some(false),
        ..Overrides::default()
    });
    s.validate().expect("token mode with a lookup URL");
    assert!(s.auth.token_mode() && !s.auth.password_mode);

    let mut nobody = Settings::default();
    nobody.auth.password_mode = false;
    assert!(nobody.validate().is_err(), "no login mode left");
}

#[test]
fn tls_settings_are_read_overridden_and_checked() {
    let text = r#"
        [http]
        tls_cert_file = "/etc/callgate/tls.crt"
        tls_key_file = "/etc/callgate/tls.key"
        tls_reload_interval = 0
        [sip]
        transport = "tls"
        proxy = "10.0.0.5:5061"
        tls_server_name = "pbx.example.com"
    "#;
    let mut s = Settings::from_toml(text).expect("parses");
    assert_eq!(s.sip.transport, SipTransport::Tls);
    assert_eq!(s.http.tls_reload_interval, Duration::ZERO);
    s.validate().expect("valid");
    s.apply(&Overrides {
        sip_tls_ca_file: Some("/etc/callgate/pbx-ca.pem".into()),
        http_tls_reload_interval: Some(10),
        ..Default::default()
    });
    assert_eq!(
        s.sip.tls_ca_file.as_deref(),
        Some(Path::new("/etc/callgate/pbx-ca.pem"))
    );
    assert_eq!(s.http.tls_reload_interval, Duration::from_secs(10));

    s.http.tls_key_file = None;
    s.sip.tls_server_name = Some("not a name".into());
    let Err(ConfigError::Invalid(problems)) = s.validate() else {
        panic!("a certificate without its key and a bad server name must be refused");
    };
    assert!(
        problems.iter().any(|p| p.contains("tls_cert_file")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("tls_server_name")),
        "{problems:?}"
    );
}

#[test]
fn realtime_priority_is_off_by_default_and_bounded_to_sched_fifo_priorities() {
    assert_eq!(Settings::default().webrtc.realtime_priority, 0);
    let s = Settings::from_toml("[webrtc]\nrealtime_priority = 10\n").expect("parses");
    assert_eq!(s.webrtc.realtime_priority, 10);
    s.validate().expect("1-99 is valid");
    let s = Settings::from_toml("[webrtc]\nrealtime_priority = 100\n").expect("parses");
    let ConfigError::Invalid(problems) = s.validate().expect_err("100 is no SCHED_FIFO priority")
    else {
        panic!("expected Invalid");
    };
    assert_eq!(
        problems,
        vec!["webrtc.realtime_priority must be 0 (off) or 1-99 (SCHED_FIFO)".to_string()]
    );
    let err = Settings::from_toml("[webrtc]\nrealtime_priority = -1\n").expect_err("negative");
    assert!(err.to_string().contains("realtime_priority"), "{err}");
}

#[test]
fn direct_srtp_is_on_by_default_and_must_be_a_boolean() {
    assert!(Settings::default().webrtc.direct_srtp);
    let s = Settings::from_toml("[webrtc]\ndirect_srtp = false\n").expect("parses");
    assert!(!s.webrtc.direct_srtp);
    s.validate().expect("either value is valid");
    let err = Settings::from_toml("[webrtc]\ndirect_srtp = \"yes\"\n").expect_err("a string");
    assert!(err.to_string().contains("direct_srtp"), "{err}");
}

#[test]
fn busy_polling_is_off_by_default_and_bounded() {
    assert_eq!(Settings::default().webrtc.busy_poll_us, 0);
    let s = Settings::from_toml("[webrtc]\nbusy_poll_us = 500\n").expect("parses");
    assert_eq!(s.webrtc.busy_poll_us, 500);
    s.validate().expect("500 µs is valid");
    let s = Settings::from_toml("[webrtc]\nbusy_poll_us = 10001\n").expect("parses");
    let ConfigError::Invalid(problems) = s.validate().expect_err("over 10 ms") else {
        panic!("expected Invalid");
    };
    assert_eq!(
        problems,
        vec!["webrtc.busy_poll_us must be 0 (off) to 10000 (10 ms)".to_string()]
    );
    let err = Settings::from_toml("[webrtc]\nbusy_poll_us = -1\n").expect_err("negative");
    assert!(err.to_string().contains("busy_poll_us"), "{err}");
}

#[test]
fn the_drain_interval_is_350_us_by_default_bounded_and_yields_to_busy_polling() {
    let default = Settings::default();
    assert_eq!(default.webrtc.drain_interval_us, 350);
    assert_eq!(default.drain_interval(), Duration::from_micros(350));
    let s = Settings::from_toml("[webrtc]\ndrain_interval_us = 0\n").expect("parses");
    s.validate().expect("0 (off) is valid");
    assert_eq!(s.drain_interval(), Duration::ZERO);
    for out_of_range in [49, 5001] {
        let s = Settings::from_toml(&format!("[webrtc]\ndrain_interval_us = {out_of_range}\n"))
            .expect("parses");
        let ConfigError::Invalid(problems) = s.validate().expect_err("out of range") else {
            panic!("expected Invalid");
        };
        assert_eq!(
            problems,
            vec!["webrtc.drain_interval_us must be 0 (off) or 50 to 5000 µs".to_string()]
        );
    }
    // A worker that spins between datagrams has nothing to sleep for.
    let s = Settings::from_toml("[webrtc]\ndrain_interval_us = 1000\nbusy_poll_us = 500\n")
        .expect("parses");
    s.validate().expect("both may be set");
    assert_eq!(s.drain_interval(), Duration::ZERO);
}
