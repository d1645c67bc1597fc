//! The cheap architectural invariants of ARCHITECTURE.md, enforced on the source tree.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("readable file");
                out.push((path, text));
            }
        }
    }
    assert!(!out.is_empty(), "no sources under {}", dir.display());
    out
}

fn assert_absent(dir: &str, needles: &[&str], why: &str) {
    for (path, text) in rust_files(&root().join(dir)) {
        for needle in needles {
            assert!(
                !text.contains(needle),
                "{} mentions `{needle}`: {why}",
                path.display()
            );
        }
    }
}

#[test]
fn the_call_machine_is_pure() {
    assert_absent(
        "gateway/src/call",
        &[
            "crate::session",
            "crate::sip",
            "crate::media",
            "crate::http",
            "crate::app",
            "tokio",
            "rsipstack",
            "str0m",
        ],
        "`call` never imports an edge module or does IO",
    );
}

#[test]
fn pure_modules_do_no_io() {
    for dir in [
        "gateway/src/sdp",
        "gateway/src/media/rtp",
        "gateway/src/media/srtp.rs",
        "gateway/src/session/input.rs",
    ] {
        let path = root().join(dir);
        let files = if path.is_dir() {
            rust_files(&path)
        } else {
            vec![(path.clone(), std::fs::read_to_string(&path).expect("file"))]
        };
        for (file, text) in files {
            for needle in ["tokio", "std::net::UdpSocket", "clock::now", "Instant::now"] {
                assert!(
                    !text.contains(needle),
                    "{} mentions `{needle}`: pure modules take time and data as arguments",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn media_never_imports_call() {
    assert_absent(
        "gateway/src/media",
        &["crate::call", "crate::session"],
        "`media` never imports `call`",
    );
}

#[test]
fn rsipstack_stays_behind_the_sip_module() {
    for (path, text) in rust_files(&root().join("gateway/src")) {
        let inside = path
            .components()
            .any(|c| c.as_os_str() == "sip" || c.as_os_str() == "demo");
        if !inside {
            assert!(
                !text.contains("rsipstack::"),
                "{} names rsipstack outside `sip`",
                path.display()
            );
        }
    }
}

#[test]
fn crate_boundaries_hold() {
    let signaling = std::fs::read_to_string(root().join("signaling/Cargo.toml")).expect("manifest");
    for dep in ["tokio", "axum", "str0m", "rsipstack"] {
        assert!(
            !signaling.contains(dep),
            "signaling must stay IO-free: it depends on {dep}"
        );
    }
    let loadtest = std::fs::read_to_string(root().join("loadtest/Cargo.toml")).expect("manifest");
    assert!(
        !loadtest.contains("gateway"),
        "loadtest is black-box: it must not depend on gateway"
    );
}

#[test]
fn every_module_in_the_architecture_table_exists() {
    let architecture =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    // Crates (the workspace members, by directory name) are listed in the same tables.
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    let crates: Vec<&str> = members_line
        .split('"')
        .skip(1)
        .step_by(2)
        .filter_map(|path| path.rsplit('/').next())
        .collect();
    for line in architecture.lines().filter(|l| l.starts_with("| `")) {
        let name = line
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap_or_default();
        let Some(module) = name.split(',').next().map(str::trim) else {
            continue;
        };
        if crates.contains(&module) {
            continue;
        }
        let rel = module.replace("::", "/");
        let src = root().join("gateway/src");
        let exists =
            src.join(format!("{rel}.rs")).exists() || src.join(&rel).join("mod.rs").exists();
        assert!(
            exists,
            "ARCHITECTURE.md lists `{module}` but gateway/src/{rel} does not exist"
        );
    }
}

/// How a gateway ends in [`a_gateway_that_ends_releases_its_media_ports_and_services`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Dropped,
    ShutDown,
    ShutDownMidCall,
}

/// A gateway, dropped or shut down, gives its media workers' sockets and its memory back:
/// without that the suite, which starts more gateways than there are RTP slices, ran out of
/// shared SIP-leg ports ("shared SIP-leg socket 127.0.0.1:32200: Address already in use"), and
/// an embedding process that restarts its gateway kept every old one's tables alive (the
/// metrics' media source held the services that hold the metrics). A gateway shut down, even
/// with a call up, leaves no task behind that holds its services, while the runtime runs on.
#[test]
fn a_gateway_that_ends_releases_its_media_ports_and_services() {
    for ending in [Ending::Dropped, Ending::ShutDown, Ending::ShutDownMidCall] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (services, ip, port) = runtime.block_on(async {
            let pbx = crate::support::start_demo(None).await;
            let settings = crate::support::test_settings(pbx.sip_addr());
            let (ip, port) = (settings.rtp.ip, settings.rtp.port_min);
            let gateway = crate::support::start_gateway(settings).await;
            let services = std::sync::Arc::downgrade(gateway.services());
            match ending {
                Ending::Dropped => drop(gateway),
                Ending::ShutDown => gateway.shutdown().await,
                Ending::ShutDownMidCall => {
                    let mut browser = crate::support::browser(&gateway).await;
                    let call = crate::support::answered_call(&mut browser, "echo")
                        .await
                        .map_err(|ended| format!("{ended:?}"))
                        .expect("the echo call is answered");
                    gateway.shutdown().await;
                    let ended = crate::support::ended(&mut browser, call.call_id()).await;
                    assert_eq!(ended.cause, "shutdown", "{ended:?}");
                }
            }
            if ending != Ending::Dropped {
                let gone = crate::support::eventually(std::time::Duration::from_secs(5), || {
                    services.strong_count() == 0
                })
                .await;
                assert!(gone, "{ending:?}: a task still holds the services");
            }
            (services, ip, port)
        });
        drop(runtime);
        assert_eq!(
            services.strong_count(),
            0,
            "{ending:?}: the services outlive the gateway and its runtime"
        );
        let released = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::net::UdpSocket::bind((ip, port)).is_ok()
        });
        assert!(released, "{ending:?}: {ip}:{port} still bound");
    }
}
