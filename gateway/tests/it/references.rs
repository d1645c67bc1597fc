//! Generated references and deployment material, checked without network or Docker engine.
//!
//! - `docs/configuration.md` and `docs/metrics.md` are regenerated from the code
//!   (`Settings::reference_markdown`, `Metrics::catalogue_markdown`) and must match the
//!   committed files; `UPDATE_REFERENCES=1` rewrites them.
//! - Everything under `deploy/`: YAML parses (python3 + PyYAML), XML parses, the Grafana
//!   dashboard queries only catalogued metrics, the Helm chart's `.Values` references exist,
//!   every shipped `callgate.toml` passes `callgate check-config`, compose files pass
//!   `docker compose config` (when a compose client is installed), Kamailio's
//!   configuration passes `kamailio -c` (when installed), the systemd unit passes
//!   `systemd-analyze verify` (when installed), and the Dockerfile's health check runs
//!   against a real callgate.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use gateway::config::Settings;
use gateway::media::{EngineConfig, MediaEngine, WorkerSnapshot};
use gateway::metrics::Metrics;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Compares a generated reference with the committed file, or rewrites it.
fn check_generated(rel: &str, generated: &str) {
    let path = root().join(rel);
    if std::env::var_os("UPDATE_REFERENCES").is_some() {
        std::fs::write(&path, generated).unwrap_or_else(|e| panic!("cannot write {rel}: {e}"));
        eprintln!("rewrote {rel}");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "{rel} is stale: it differs from what the code generates (first at line {}).\n\
             committed: {:?}\ngenerated: {:?}\n\
             Run with UPDATE_REFERENCES=1 to rewrite it:\n  \
             UPDATE_REFERENCES=1 cargo test -p gateway --test it references",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            generated.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

/// The counters of a real (idle) media worker: the `kind` label values come from the
/// engine's own table, not from a copy here.
fn idle_media_snapshot() -> Vec<WorkerSnapshot> {
    let engine = MediaEngine::start(EngineConfig::one_loopback_worker())
        .expect("a media worker on loopback");
    engine.snapshots()
}

#[test]
fn configuration_reference_is_current() {
    check_generated("docs/configuration.md", &Settings::reference_markdown());
}

#[test]
fn metrics_reference_is_current() {
    check_generated(
        "docs/metrics.md",
        &Metrics::catalogue_markdown(idle_media_snapshot()),
    );
}

#[test]
fn every_setting_has_a_flag_and_an_environment_variable() {
    let settings = Settings::reference();
    assert!(settings.len() > 10, "too few settings found: {settings:?}");
    for s in &settings {
        let id = format!("{}_{}", s.section, s.key);
        assert_eq!(
            s.flag.as_deref(),
            Some(format!("--{}", id.replace('_', "-")).as_str()),
            "{}.{} has no flag --{} in config::Overrides",
            s.section,
            s.key,
            id.replace('_', "-")
        );
        assert_eq!(
            s.env.as_deref(),
            Some(format!("CALLGATE_{}", id.to_uppercase()).as_str()),
            "{}.{} has no CALLGATE_{} variable",
            s.section,
            s.key,
            id.to_uppercase()
        );
        assert!(
            !s.help.is_empty(),
            "{}.{} has no help text",
            s.section,
            s.key
        );
    }
    let keys: BTreeSet<String> = settings
        .iter()
        .map(|s| format!("{}_{}", s.section, s.key))
        .collect();
    for id in Settings::override_ids() {
        assert!(
            keys.contains(&id),
            "the flag --{} names no setting of the file",
            id.replace('_', "-")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Deployment material (deploy/).
// ---------------------------------------------------------------------------------------

/// Every file under `deploy/` (relative to the root) whose name ends with one of `suffixes`.
fn deploy_files(suffixes: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("deploy")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable deploy dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
                let rel = path.strip_prefix(root()).expect("under root");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Whether a program answers `--version` (or `version`).
/// Reports a tool this check needs and cannot find: fails under CI (where `.ci/test`
/// installs it, so its absence is a broken set-up), else says so on stderr and skips.
fn missing_tool(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is required in CI (.ci/test installs it)"
    );
    eprintln!("SKIPPED {what}");
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a python3 script (PyYAML is on every machine of this project's kind); its stdout.
fn python(script: &str, args: &[String]) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(root())
        .output()
        .expect("python3 runs (the deploy checks parse YAML and XML with python3 + PyYAML)");
    assert!(
        output.status.success(),
        "python3 failed (is PyYAML installed? apt-get install python3-yaml):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Parses YAML files with PyYAML: relative path → list of documents, or the parse error.
fn load_yaml(files: &[String]) -> BTreeMap<String, Result<Vec<Value>, String>> {
    const SCRIPT: &str = r#"
import json, sys, yaml
out = {}
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            out[path] = {"ok": list(yaml.safe_load_all(f))}
    except Exception as e:
        out[path] = {"error": str(e)}
print(json.dumps(out))
"#;
    let parsed: BTreeMap<String, Value> =
        serde_json::from_str(&python(SCRIPT, files)).expect("json from python");
    parsed
        .into_iter()
        .map(|(path, v)| {
            let result = match v.get("ok") {
                Some(Value::Array(docs)) => Ok(docs.clone()),
                _ => Err(v["error"].as_str().unwrap_or("?").to_string()),
            };
            (path, result)
        })
        .collect()
}

fn yaml_doc(rel: &str) -> Value {
    let mut files = load_yaml(&[rel.to_string()]);
    match files.remove(rel) {
        Some(Ok(mut docs)) if !docs.is_empty() => docs.remove(0),
        other => panic!("{rel} does not parse as YAML: {other:?}"),
    }
}

fn is_helm_template(rel: &str) -> bool {
    rel.contains("/templates/")
}

#[test]
fn deploy_yaml_files_parse() {
    let files: Vec<String> = deploy_files(&[".yml", ".yaml"])
        .into_iter()
        .filter(|f| !is_helm_template(f))
        .collect();
    assert!(
        files.len() >= 7,
        "expected the compose, Prometheus, Grafana and Helm YAML files, found {files:?}"
    );
    let bad: Vec<String> = load_yaml(&files)
        .into_iter()
        .filter_map(|(path, r)| r.err().map(|e| format!("{path}: {e}")))
        .collect();
    assert!(
        bad.is_empty(),
        "YAML that does not parse:\n{}",
        bad.join("\n")
    );
}

#[test]
fn deploy_xml_files_parse() {
    let files = deploy_files(&[".xml"]);
    assert!(
        files.len() >= 10,
        "FreeSWITCH configuration missing: {files:?}"
    );
    let out = python(
        r#"
import sys, xml.etree.ElementTree as ET
for path in sys.argv[1:]:
    try:
        ET.parse(path)
    except Exception as e:
        print(f"{path}: {e}")
"#,
        &files,
    );
    assert!(out.trim().is_empty(), "XML that does not parse:\n{out}");
}

/// Every metric name a PromQL expression mentions (identifiers of callgate's or the process
/// collector's families).
fn metric_names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            in_string = !in_string;
            current.clear();
            continue;
        }
        if in_string {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
        } else {
            if current.starts_with("callgate_") || current.starts_with("process_") {
                names.push(current.clone());
            }
            current.clear();
        }
    }
    names
}

/// `(expr, panel title)` of every query of every panel, rows included.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dashboard.clone()];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let (Some(Value::String(title)), Some(Value::Array(targets))) =
                    (map.get("title"), map.get("targets"))
                {
                    for t in targets {
                        let expr = t.get("expr").and_then(Value::as_str);
                        out.push((expr.unwrap_or_default().to_string(), title.clone()));
                    }
                }
                stack.extend(map.into_iter().map(|(_, v)| v));
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

#[test]
fn grafana_dashboard_queries_only_catalogued_metrics() {
    let text = read("deploy/grafana/callgate-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "callgate");
    let catalogue: BTreeSet<String> = Metrics::catalogue_sample_names(idle_media_snapshot())
        .into_iter()
        .collect();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 10, "too few queries: {exprs:?}");
    let mut used = BTreeSet::new();
    for (expr, title) in &exprs {
        let names = metric_names_in(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?} queries no callgate metric: {expr}"
        );
        for name in names {
            assert!(
                catalogue.contains(&name),
                "panel {title:?} queries {name}, which callgate does not export \
                 (docs/metrics.md); known: {catalogue:?}"
            );
            used.insert(name);
        }
    }
    for required in [
        "callgate_calls_active",
        "callgate_call_setup_seconds_bucket",
        "callgate_calls_total",
        "callgate_sip_responses_total",
        "callgate_rtp_packets_total",
        "callgate_media_errors_total",
        "callgate_ws_connections",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(required), "no panel shows {required}");
    }
    for quantile in ["0.50", "0.95", "0.99"] {
        assert!(
            exprs.iter().any(|(e, _)| e.contains(&format!(
                "histogram_quantile({quantile}, sum by (le) (rate(callgate_call_setup_seconds_bucket"
            ))),
            "no setup-latency p{quantile} panel"
        );
    }
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].to_string()),
            "duplicate panel id {}",
            panel["id"]
        );
        assert!(
            panel["gridPos"].is_object(),
            "panel {} has no gridPos",
            panel["id"]
        );
    }
    // The compose stacks provision it with a Prometheus datasource.
    let datasources = yaml_doc("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(datasources["datasources"][0]["type"], "prometheus");
    let providers = yaml_doc("deploy/grafana/provisioning/dashboards/callgate.yml");
    assert_eq!(
        providers["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names_in(
            r#"sum by (le) (rate(callgate_call_setup_seconds_bucket{job=~"callgate_x"}[5m])) / process_open_fds"#
        ),
        ["callgate_call_setup_seconds_bucket", "process_open_fds"]
    );
}

/// A compose file, as the documents PyYAML reads.
struct Compose {
    rel: String,
    dir: PathBuf,
    doc: Value,
}

fn compose_files() -> Vec<Compose> {
    let files: Vec<String> = deploy_files(&["docker-compose.yml"]);
    assert_eq!(
        files.len(),
        2,
        "expected deploy/compose/{{freeswitch,kamailio}}/docker-compose.yml: {files:?}"
    );
    files
        .into_iter()
        .map(|rel| Compose {
            dir: root().join(&rel).parent().expect("dir").to_path_buf(),
            doc: yaml_doc(&rel),
            rel,
        })
        .collect()
}

/// `host:container[/proto]` or ranges → (protocol, container ports).
fn published_ports(service: &Value) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for port in service["ports"].as_array().into_iter().flatten() {
        let spec = port.as_str().expect("short port syntax");
        let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let container = ports.rsplit(':').next().expect("container part");
        let (lo, hi) = container.split_once('-').unwrap_or((container, container));
        let (lo, hi): (u16, u16) = (lo.parse().expect("port"), hi.parse().expect("port"));
        out.extend((lo..=hi).map(|p| (proto.to_string(), p)));
    }
    out
}

fn static_ip(service: &Value) -> String {
    service["networks"]
        .as_object()
        .and_then(|nets| nets.values().find_map(|n| n["ipv4_address"].as_str()))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn compose_stacks_are_consistent() {
    for compose in compose_files() {
        let rel = &compose.rel;
        let services = compose.doc["services"].as_object().expect("services");
        for name in ["callgate", "prometheus", "grafana"] {
            assert!(services.contains_key(name), "{rel}: no {name} service");
        }
        // Every bind mount names a file or folder of the repository.
        for (name, service) in services {
            for volume in service["volumes"].as_array().into_iter().flatten() {
                let spec = volume.as_str().expect("short volume syntax");
                let source = spec.split(':').next().expect("source");
                if source.starts_with('.') {
                    assert!(
                        compose.dir.join(source).exists(),
                        "{rel}: {name} mounts {source}, which does not exist"
                    );
                }
            }
        }
        // callgate's file agrees with the network and the published ports.
        let callgate = &services["callgate"];
        assert_eq!(
            callgate["build"]["dockerfile"], "deploy/Dockerfile",
            "{rel}"
        );
        assert!(
            compose
                .dir
                .join(callgate["build"]["context"].as_str().expect("context"))
                .join("deploy/Dockerfile")
                .exists(),
            "{rel}: the build context is not the repository root"
        );
        let settings =
            Settings::from_file(&compose.dir.join("callgate.toml")).expect("callgate.toml parses");
        let ip = static_ip(callgate);
        assert_eq!(
            settings.sip.listen.ip().to_string(),
            ip,
            "{rel}: sip.listen"
        );
        assert_eq!(settings.rtp.ip.to_string(), ip, "{rel}: rtp.ip");
        let published = published_ports(callgate);
        assert!(
            published.contains(&("tcp".into(), settings.http.listen.port())),
            "{rel}: http.listen's port is not published"
        );
        assert!(
            settings.webrtc.workers > 0,
            "{rel}: set webrtc.workers to publish its ports"
        );
        for i in 0..settings.webrtc.workers {
            let port = settings.webrtc.bind.port() + i as u16;
            assert!(
                published.contains(&("udp".into(), port)),
                "{rel}: WebRTC port {port}/udp (worker {i}) is not published"
            );
        }
        assert_eq!(
            callgate["environment"]["CALLGATE_WEBRTC_PUBLIC_IP"],
            "${CALLGATE_PUBLIC_IP:-127.0.0.1}",
            "{rel}: the public IP comes from the operator"
        );
        // sip.proxy is the PBX or proxy service of the stack.
        let proxy = services
            .iter()
            .find(|(_, s)| static_ip(s) == settings.sip.proxy.ip().to_string())
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| panic!("{rel}: sip.proxy {} is no service", settings.sip.proxy));
        assert!(
            ["freeswitch", "kamailio"].contains(&proxy.as_str()),
            "{rel}: {proxy}"
        );
        // Prometheus scrapes callgate's HTTP port.
        let prometheus = yaml_doc("deploy/prometheus/prometheus.yml");
        let job = &prometheus["scrape_configs"][0];
        assert_eq!(job["metrics_path"], "/metrics");
        assert_eq!(
            job["static_configs"][0]["targets"][0],
            format!("callgate:{}", settings.http.listen.port()),
            "deploy/prometheus/prometheus.yml scrapes the wrong address for {rel}"
        );
        match proxy.as_str() {
            "freeswitch" => {
                check_freeswitch(&compose.dir, &ip, &static_ip(&services["freeswitch"]))
            }
            _ => check_kamailio(&compose.dir, &static_ip(&services["kamailio"])),
        }
    }
}

/// FreeSWITCH's files agree with the compose network and with what callgate needs.
fn check_freeswitch(dir: &Path, callgate_ip: &str, pbx_ip: &str) {
    let fs = dir.join("freeswitch");
    let text = |rel: &str| std::fs::read_to_string(fs.join(rel)).expect(rel);
    let vars = text("vars.xml");
    for (var, value) in [
        ("pbx_ip", pbx_ip),
        ("callgate_ip", callgate_ip),
        ("codecs", "PCMU,PCMA"),
    ] {
        assert!(
            vars.contains(&format!("data=\"{var}={value}\"")),
            "freeswitch/vars.xml: {var} must be {value}"
        );
    }
    let acl = text("autoload_configs/acl.conf.xml");
    assert!(
        acl.contains("cidr=\"$${callgate_ip}/32\""),
        "the ACL must name callgate"
    );
    let profile = text("sip_profiles/callgate.xml");
    for needle in [
        "name=\"dtmf-type\" value=\"rfc2833\"",
        "name=\"inbound-codec-prefs\" value=\"$${codecs}\"",
        "name=\"outbound-codec-prefs\" value=\"$${codecs}\"",
        "name=\"auth-calls\" value=\"true\"",
        "name=\"sip-port\" value=\"5060\"",
    ] {
        assert!(
            profile.contains(needle),
            "sip_profiles/callgate.xml lacks {needle}"
        );
    }
    for forbidden in ["apply-inbound-acl", "apply-register-acl"] {
        assert!(
            !profile.contains(forbidden),
            "{forbidden} would let requests from callgate skip digest authentication"
        );
    }
    let directory = text("directory/callgate.xml");
    for ext in 1000..=1019 {
        assert!(
            directory.contains(&format!("<user id=\"{ext}\">")),
            "extension {ext} missing"
        );
    }
    assert_eq!(directory.matches("name=\"password\"").count(), 20);
    assert_eq!(
        directory
            .matches("name=\"auth-acl\" value=\"callgate\"")
            .count(),
        20
    );
    let dialplan = text("dialplan/callgate.xml");
    assert!(dialplan.contains("^(9196|echo)$") && dialplan.contains("application=\"echo\""));
}

/// Kamailio's files agree with the compose network.
fn check_kamailio(dir: &Path, kamailio_ip: &str) {
    let cfg = std::fs::read_to_string(dir.join("kamailio.cfg")).expect("kamailio.cfg");
    assert!(
        cfg.contains(&format!("#!substdef \"!LISTEN_IP!{kamailio_ip}!g\"")),
        "kamailio.cfg must listen on {kamailio_ip}"
    );
    let subscribers = std::fs::read_to_string(dir.join("db/subscriber")).expect("subscriber");
    for ext in 1000..=1019 {
        assert!(
            subscribers
                .lines()
                .any(|l| l.split(':').nth(1) == Some(&ext.to_string())),
            "db/subscriber lacks {ext}"
        );
    }
}

#[test]
fn compose_files_pass_docker_compose_config() {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let client: Option<Vec<&str>> = if plugin {
        Some(vec!["docker", "compose"])
    } else if have("docker-compose", "version") {
        Some(vec!["docker-compose"])
    } else {
        None
    };
    let Some(client) = client else {
        missing_tool(
            "compose validation: neither `docker compose` (the compose plugin) nor \
             `docker-compose` is installed (apt-get install --no-install-recommends \
             docker-compose provides the latter)",
        );
        return;
    };
    for compose in compose_files() {
        let output = Command::new(client[0])
            .args(&client[1..])
            .args(["-f", &compose.rel, "config", "-q"])
            .current_dir(root())
            .env("CALLGATE_PUBLIC_IP", "198.51.100.7")
            .output()
            .expect("compose client runs");
        assert!(
            output.status.success(),
            "{} config -q {}:\n{}",
            client.join(" "),
            compose.rel,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn kamailio_config_passes_kamailio_check() {
    let kamailio = ["/usr/sbin/kamailio", "kamailio"]
        .into_iter()
        .find(|k| have(k, "-v"));
    let Some(kamailio) = kamailio else {
        missing_tool("kamailio -c: kamailio is not installed");
        return;
    };
    let cfg = root().join("deploy/compose/kamailio/kamailio.cfg");
    for defines in [
        &[][..],
        &["-A", "WITH_PBX", "-A", "PBX_URI=\"sip:192.0.2.5:5060\""][..],
    ] {
        let output = Command::new(kamailio)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .args(defines)
            .output()
            .expect("kamailio runs");
        let log = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && log.contains("config file ok"),
            "kamailio -c {defines:?} rejects deploy/compose/kamailio/kamailio.cfg:\n{log}"
        );
    }
}

fn callgate_check_config(file: &Path, env: &[(String, String)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callgate"));
    command.arg("check-config").arg(file);
    for (name, _) in std::env::vars() {
        if name.starts_with("CALLGATE_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let output = command.output().expect("callgate runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn shipped_callgate_configs_pass_check_config() {
    let files = deploy_files(&[".toml"]);
    for expected in [
        "deploy/callgate.example.toml",
        "deploy/docker/callgate.toml",
        "deploy/compose/freeswitch/callgate.toml",
        "deploy/compose/kamailio/callgate.toml",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected} missing");
    }
    for rel in &files {
        let (ok, out) = callgate_check_config(&root().join(rel), &[]);
        assert!(ok, "callgate check-config {rel} fails:\n{out}");
    }
    // The Helm chart: its config value plus the variables the Deployment sets.
    let values = yaml_doc("deploy/helm/callgate/values.yaml");
    let dir = root().join("target/tmp/references");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let file = dir.join("helm-callgate.toml");
    std::fs::write(
        &file,
        values["config"].as_str().expect("config is TOML text"),
    )
    .expect("write");
    let env = helm_deployment_env(&values);
    for required in [
        "CALLGATE_HTTP_LISTEN",
        "CALLGATE_SIP_LISTEN",
        "CALLGATE_RTP_IP",
        "CALLGATE_WEBRTC_BIND",
        "CALLGATE_WEBRTC_WORKERS",
        "CALLGATE_WEBRTC_BUSY_POLL_US",
        "CALLGATE_WEBRTC_DRAIN_INTERVAL_US",
        "CALLGATE_WEBRTC_DIRECT_SRTP",
        "CALLGATE_RTP_PORT_MIN",
        "CALLGATE_RTP_PORT_MAX",
        "CALLGATE_RTP_SOCKETS",
    ] {
        assert!(
            env.iter().any(|(k, _)| k == required),
            "the Deployment does not set {required}: {env:?}"
        );
    }
    let mut env = env;
    env.push(("CALLGATE_WEBRTC_PUBLIC_IP".into(), "203.0.113.7".into()));
    let (ok, out) = callgate_check_config(&file, &env);
    assert!(
        ok,
        "the Helm chart's configuration fails check-config with {env:?}:\n{out}"
    );
    // The file must not set what the chart sets from values (the variables would win
    // silently).
    let chart_file = Settings::from_toml(values["config"].as_str().expect("text")).expect("TOML");
    let defaults = Settings::default();
    assert_eq!(
        chart_file.http, defaults.http,
        "set http.port in values, not config"
    );
    assert_eq!(
        chart_file.webrtc, defaults.webrtc,
        "set media.* in values, not config"
    );
    assert_eq!(
        chart_file.sip.listen, defaults.sip.listen,
        "set sip.port in values"
    );
}

/// Looks a dotted path up in the chart's values.
fn value_at<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(values, |v, key| v.get(key))
}

/// The plain `CALLGATE_*` variables of the Deployment template, with `{{ .Values.x | int }}`
/// substituted and the pod's addresses (`$(POD_IP)`, `$(HOST_IP)`) set to 192.0.2.10.
fn helm_deployment_env(values: &Value) -> Vec<(String, String)> {
    let template = read("deploy/helm/callgate/templates/deployment.yaml");
    let lines: Vec<&str> = template.lines().collect();
    let mut env = Vec::new();
    for pair in lines.windows(2) {
        let Some(name) = pair[0].trim().strip_prefix("- name: ") else {
            continue;
        };
        let Some(value) = pair[1].trim().strip_prefix("value: ") else {
            continue;
        };
        if !name.starts_with("CALLGATE_") || name == "CALLGATE_CONFIG" {
            continue;
        }
        let mut value = value.trim_matches('"').to_string();
        while let Some(start) = value.find("{{") {
            let end = value[start..].find("}}").expect("closed action") + start;
            let action = value[start + 2..end].trim();
            let path = action
                .split('|')
                .next()
                .and_then(|p| p.trim().strip_prefix(".Values."))
                .unwrap_or_else(|| panic!("unsupported action {action:?} in {name}"));
            let v = value_at(values, path).unwrap_or_else(|| panic!("no value {path}"));
            let text = match v {
                Value::Number(n) => n.as_f64().map(|f| (f as i64).to_string()).expect("number"),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            value.replace_range(start..end + 2, &text);
        }
        let value = value
            .replace("$(POD_IP)", "192.0.2.10")
            .replace("$(HOST_IP)", "192.0.2.10");
        env.push((name.to_string(), value));
    }
    env
}

/// The actions (`{{ … }}`) of a Go template, trimmed of `-` and spaces.
fn template_actions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            panic!("unclosed action in {rest:?}");
        };
        let action = &rest[start + 2..start + len];
        out.push(
            action
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim()
                .to_string(),
        );
        rest = &rest[start + len + 2..];
    }
    out
}

#[test]
fn helm_chart_is_consistent() {
    let chart_dir = root().join("deploy/helm/callgate");
    let chart = yaml_doc("deploy/helm/callgate/Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "callgate");
    for key in ["version", "appVersion", "description"] {
        assert!(chart[key].is_string(), "Chart.yaml lacks {key}");
    }
    let values = yaml_doc("deploy/helm/callgate/values.yaml");
    let templates_dir = chart_dir.join("templates");
    let mut defined = BTreeSet::new();
    let mut texts = BTreeMap::new();
    for entry in std::fs::read_dir(&templates_dir).expect("templates") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("template");
        for action in template_actions(&text) {
            if let Some(rest) = action.strip_prefix("define ") {
                defined.insert(rest.trim().trim_matches('"').to_string());
            }
        }
        texts.insert(name, text);
    }
    assert!(texts.len() >= 7, "templates missing: {:?}", texts.keys());
    let mut problems = Vec::new();
    for (name, text) in &texts {
        // Blocks are closed, includes name defined templates, values exist.
        let mut depth = 0i32;
        for action in template_actions(text) {
            if action.starts_with("/*") {
                continue;
            }
            let word = action.split_whitespace().next().unwrap_or_default();
            match word {
                "if" | "range" | "with" | "define" | "block" => depth += 1,
                "end" => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                problems.push(format!("{name}: `end` without a block"));
            }
            for keyword in ["include \"", "template \""] {
                for (i, _) in action.match_indices(keyword) {
                    let rest = &action[i + keyword.len()..];
                    let target = rest.split('"').next().unwrap_or_default();
                    if !defined.contains(target) {
                        problems.push(format!("{name}: includes undefined {target:?}"));
                    }
                }
            }
            for (i, _) in action.match_indices(".Values.") {
                let path: String = action[i + ".Values.".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                    .collect();
                let path = path.trim_end_matches('.');
                if value_at(&values, path).is_none() {
                    problems.push(format!("{name}: .Values.{path} is not in values.yaml"));
                }
            }
        }
        if depth != 0 {
            problems.push(format!("{name}: {depth} block(s) left open"));
        }
    }
    assert!(
        problems.is_empty(),
        "Helm chart problems:\n{}",
        problems.join("\n")
    );
    let deployment = &texts["deployment.yaml"];
    for needle in [
        "path: /readyz",
        "path: /healthz",
        "terminationGracePeriodSeconds: {{ add (.Values.drain.seconds | int) (.Values.drain.shutdownSeconds | int) }}",
        "command: [\"sleep\", \"{{ .Values.drain.seconds | int }}\"]",
        "hostNetwork: true",
        "fieldPath: status.podIP",
        "runAsNonRoot: true",
    ] {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks {needle:?}"
        );
    }
    assert!(texts["pdb.yaml"].contains("kind: PodDisruptionBudget"));
    assert!(texts["configmap.yaml"].contains(".Values.config"));
    assert!(texts["secret.yaml"].contains("kind: Secret"));
    // callgate's shutdown (HTTP close ≤ 5 s + 0.3 s for BYEs) fits the budget.
    assert!(values["drain"]["shutdownSeconds"].as_f64().expect("number") >= 10.0);
    // Non-template YAML in templates would be a mistake the checks above would miss.
    assert!(!chart_dir.join("templates/values.yaml").exists());
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = read("deploy/systemd/callgate.service");
    let directives: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |key: &str| -> Vec<&str> {
        directives
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(get("DynamicUser"), ["yes"]);
    assert_eq!(get("ProtectSystem"), ["strict"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert_eq!(get("NoNewPrivileges"), ["yes"]);
    assert_eq!(
        get("AmbientCapabilities"),
        [""],
        "no capability: every port is above 1023"
    );
    let nofile: u64 = get("LimitNOFILE")[0].parse().expect("a number");
    assert!(
        nofile >= 65536,
        "LimitNOFILE too low for two RTP sockets per call"
    );
    let exec = get("ExecStart")[0];
    assert!(exec.starts_with("/usr/local/bin/callgate --config /etc/callgate/callgate.toml"));
    if !have("systemd-analyze", "--version") {
        missing_tool("systemd-analyze verify: systemd-analyze is not installed");
        return;
    }
    // verify checks that the binary exists: point the copy at the test build.
    let dir = root().join("target/tmp/references");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let copy = dir.join("callgate.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/callgate", env!("CARGO_BIN_EXE_callgate")),
    )
    .expect("write");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success() && !log.contains("callgate.service:"),
        "systemd-analyze verify deploy/systemd/callgate.service:\n{log}"
    );
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((keyword.to_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// Whether `path` gets through deploy/Dockerfile.dockerignore (last matching pattern wins;
/// a pattern matching a parent folder matches its files, as Docker does).
fn passes_dockerignore(path: &str, patterns: &[String]) -> bool {
    let mut included = true;
    for pattern in patterns {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern.as_str()),
        };
        let matches = if pattern == "*" {
            true
        } else if let Some(name) = pattern.strip_prefix("**/") {
            path.split('/').any(|part| part == name)
        } else {
            path == pattern || path.starts_with(&format!("{pattern}/"))
        };
        if matches {
            included = negated;
        }
    }
    included
}

#[test]
fn dockerfile_builds_what_the_workspace_needs() {
    let instructions = dockerfile_instructions();
    let all = |keyword: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, a)| a.clone())
            .collect()
    };
    let froms = all("FROM");
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].starts_with("rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build"));
    assert!(froms[1].starts_with("debian:${DEBIAN_RELEASE}-slim"));
    let args = all("ARG");
    assert!(
        args.contains(&"DEBIAN_RELEASE=bookworm".to_string()),
        "{args:?}"
    );
    // The Rust image is at least the workspace's rust-version.
    let rust = args
        .iter()
        .find_map(|a| a.strip_prefix("RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let required = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("rust-version");
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().expect("n")).collect() };
    assert!(
        version(rust) >= version(required),
        "rust:{rust} is older than rust-version {required}"
    );
    let runs = all("RUN").join("\n");
    assert!(
        runs.contains("cargo build --release -p gateway --locked"),
        "{runs}"
    );
    // Non-root, the binary as entrypoint, the config path, the health check.
    let user = all("USER");
    assert_eq!(user, ["10001:10001"]);
    assert_eq!(all("ENTRYPOINT"), ["[\"callgate\"]"]);
    assert!(all("ENV").contains(&"CALLGATE_CONFIG=/etc/callgate/callgate.toml".to_string()));
    // EXPOSE agrees with the image's configuration.
    let image = Settings::from_file(&root().join("deploy/docker/callgate.toml")).expect("toml");
    let exposed = all("EXPOSE").join(" ");
    for needle in [
        format!("{}/tcp", image.http.listen.port()),
        format!("{}/udp", image.sip.listen.port()),
        format!("{}/tcp", image.sip.listen.port()),
        format!("{}-", image.webrtc.bind.port()),
        format!("{}-{}/udp", image.rtp.port_min, image.rtp.port_max),
    ] {
        assert!(
            exposed.contains(&needle),
            "EXPOSE lacks {needle}: {exposed}"
        );
    }
    // Every COPY source exists and passes the dockerignore; every workspace member and
    // every file the binary includes is in the context.
    let ignore: Vec<String> = read("deploy/Dockerfile.dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut copied = Vec::new();
    for copy in all("COPY") {
        if copy.starts_with("--from=") {
            continue;
        }
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(root().join(source).exists(), "COPY {source}: no such path");
            assert!(
                passes_dockerignore(source, &ignore),
                "COPY {source} is excluded by deploy/Dockerfile.dockerignore"
            );
            copied.push(source.to_string());
        }
    }
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("members");
    for member in members {
        let member = member.as_str().expect("member");
        assert!(
            copied
                .iter()
                .any(|c| c == member || member.starts_with(&format!("{c}/"))),
            "workspace member {member} is not copied"
        );
    }
    let http = read("gateway/src/http.rs");
    for (i, _) in http.match_indices("include_str!(\"../../") {
        let rest = &http[i + "include_str!(\"../../".len()..];
        let path = rest.split('"').next().expect("path");
        assert!(
            copied
                .iter()
                .any(|c| path.starts_with(&format!("{c}/")) || path == c),
            "the binary includes {path}, which the Dockerfile does not copy"
        );
    }
    assert!(!passes_dockerignore("target/release/callgate", &ignore));
    assert!(!passes_dockerignore("web-client/node_modules/x", &ignore));
    // `--locked` holds: Cargo.lock is in sync with the manifests.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "gateway",
            "-e",
            "normal,build",
        ])
        .current_dir(root())
        .stdout(Stdio::null())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "`cargo build --locked` would fail: Cargo.lock is not in sync:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn dockerfile_health_check_probes_a_running_callgate() {
    let healthcheck = dockerfile_instructions()
        .into_iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .map(|(_, a)| a)
        .expect("HEALTHCHECK");
    let json = &healthcheck[healthcheck.find("CMD [").expect("exec form") + 4..];
    let command: Vec<String> = serde_json::from_str(json).expect("CMD is a JSON array");
    assert!(command[2].contains("/healthz"), "{command:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let probe = || {
        Command::new(&command[0])
            .args(&command[1..])
            .env("CALLGATE_HTTP_LISTEN", &listen)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("bash runs")
            .success()
    };
    assert!(!probe(), "the health check passes with nothing listening");
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "run",
            "--http-listen",
            &listen,
            "--webrtc-bind",
            "127.0.0.1:0",
        ])
        .args([
            "--sip-listen",
            "127.0.0.1:0",
            "--rtp-port-min",
            "10400",
            "--rtp-port-max",
            "10419",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("callgate starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let healthy = probe();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        healthy,
        "the Dockerfile's health check fails against a running callgate ({line})"
    );
}

/// Every family metrics.rs registers appears in the generated docs/metrics.md (a labelled
/// family shows up only once `Metrics::for_catalogue` touches it).
#[test]
fn every_registered_metric_is_catalogued() {
    let source = read("gateway/src/metrics.rs");
    let catalogue = Metrics::catalogue_markdown(idle_media_snapshot());
    let mut names = Vec::new();
    for marker in ["registry.register(", "encode_descriptor("] {
        for (i, _) in source.match_indices(marker) {
            let rest = source[i + marker.len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"') {
                names.push(literal.split('"').next().unwrap_or_default().to_string());
            }
        }
    }
    assert!(names.len() >= 10, "too few registrations found: {names:?}");
    for name in names {
        assert!(
            catalogue.contains(&format!("`{name}`"))
                || catalogue.contains(&format!("`{name}_total`")),
            "{name} is registered in gateway/src/metrics.rs but not in docs/metrics.md \
             (touch it in Metrics::for_catalogue, then run with UPDATE_REFERENCES=1)"
        );
    }
}

/// deploy/callgate.example.toml names every setting (set, or commented out as `# key =`).
#[test]
fn the_example_configuration_names_every_setting() {
    let example = read("deploy/callgate.example.toml");
    let mut section = String::new();
    let mut named = BTreeSet::new();
    for line in example.lines() {
        let line = line.trim().trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, _)) = line.split_once(" = ") {
            named.insert(format!("{section}.{}", key.trim()));
        }
    }
    let missing: Vec<String> = Settings::reference()
        .into_iter()
        .map(|s| format!("{}.{}", s.section, s.key))
        .filter(|key| !named.contains(key))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/callgate.example.toml does not mention {missing:?} (docs/configuration.md)"
    );
}
