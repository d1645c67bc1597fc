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

/// A gateway, dropped or shut down, gives its media workers' sockets back: without that the
/// suite, which starts more gateways than there are RTP slices, ran out of shared SIP-leg
/// ports ("shared SIP-leg socket 127.0.0.1:32200: Address already in use").
#[test]
fn a_dropped_or_shut_down_gateway_releases_its_media_ports() {
    for shut_down in [false, true] {
        let settings = crate::support::test_settings("127.0.0.1:5060".parse().expect("addr"));
        let (ip, port) = (settings.rtp.ip, settings.rtp.port_min);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let gateway = crate::support::start_gateway(settings).await;
            if shut_down {
                gateway.shutdown().await;
            } else {
                drop(gateway);
            }
        });
        drop(runtime);
        let released = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::net::UdpSocket::bind((ip, port)).is_ok()
        });
        assert!(released, "shut down: {shut_down}: {ip}:{port} still bound");
    }
}
