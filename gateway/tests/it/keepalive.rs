//! OPTIONS keepalive against real peers: the demo PBX answers it, a silent address makes
//! `/readyz` fail with "pbx unreachable", and answering again makes it pass.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::support::*;

/// Polls `/readyz` until it gives `want` (status and body), for at most 10 s.
async fn readyz_becomes(http: SocketAddr, want: (u16, &str)) {
    for _ in 0..100 {
        let (status, body) = http_get(http, "/readyz").await;
        if (status, body.as_str()) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never gave {want:?}");
}

/// The value of the `callgate_pbx_reachable` gauge.
async fn reachable_gauge(http: SocketAddr) -> String {
    let (_, body) = http_get(http, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with("callgate_pbx_reachable "))
        .unwrap_or_else(|| panic!("no callgate_pbx_reachable in\n{body}"))
        .to_string()
}

/// A UDP "PBX" that answers OPTIONS with 200 only while `answering` is set.
async fn switchable_pbx(answering: Arc<AtomicBool>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !request.starts_with("OPTIONS ") || !answering.load(Ordering::Relaxed) {
                continue;
            }
            let response = sip_response(&request, "200 OK");
            let _ = socket.send_to(response.as_bytes(), from).await;
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pbx_answers_the_keepalive_and_readyz_passes() {
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.sip.keepalive_interval = Duration::from_secs(1);
    let gateway = start_gateway(settings).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    readyz_becomes(gateway.http_addr(), (200, "ready\n")).await;
    assert_eq!(
        reachable_gauge(gateway.http_addr()).await,
        "callgate_pbx_reachable 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_pbx_fails_readyz_until_it_answers_again() {
    let answering = Arc::new(AtomicBool::new(false));
    let (pbx, task) = switchable_pbx(answering.clone()).await;
    let mut settings = test_settings(pbx);
    settings.sip.keepalive_interval = Duration::from_secs(1);
    let gateway = start_gateway(settings).await;

    readyz_becomes(gateway.http_addr(), (503, "pbx unreachable\n")).await;
    assert_eq!(
        reachable_gauge(gateway.http_addr()).await,
        "callgate_pbx_reachable 0"
    );

    answering.store(true, Ordering::Relaxed);
    readyz_becomes(gateway.http_addr(), (200, "ready\n")).await;
    assert_eq!(
        reachable_gauge(gateway.http_addr()).await,
        "callgate_pbx_reachable 1"
    );
    task.abort();
}
