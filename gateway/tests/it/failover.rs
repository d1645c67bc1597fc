//! `sip.secondary_proxy`: while the primary proxy does not answer the OPTIONS keepalive, new
//! calls and registrations go to the secondary (the demo PBX here); when the primary answers
//! again, registrations move back to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signaling::ServerMessage;
use tokio::net::UdpSocket;

use crate::support::*;

/// A UDP "primary proxy" that answers OPTIONS with 200 only while `answering` is set and
/// records the method of every other request it receives (it never answers those).
async fn switchable_primary(
    answering: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let method = request.split(' ').next().unwrap_or("").to_string();
            if method != "OPTIONS" {
                seen.lock().expect("seen lock").push(method);
                continue;
            }
            if !answering.load(Ordering::Relaxed) {
                continue;
            }
            let response = sip_response(&request, "200 OK");
            let _ = socket.send_to(response.as_bytes(), from).await;
        }
    });
    (addr, task)
}

/// Polls `/metrics` until `line` is present, for at most 15 s.
async fn metrics_show(http: SocketAddr, line: &str) {
    for _ in 0..150 {
        let (_, body) = http_get(http, "/metrics").await;
        if body.lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = http_get(http, "/metrics").await;
    panic!("/metrics never showed {line}:\n{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_registrations_use_the_secondary_while_the_primary_is_down() {
    let answering = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (primary, task) = switchable_primary(answering.clone(), seen.clone()).await;
    let secondary = start_demo(None).await;
    let mut settings = test_settings(primary);
    settings.sip.secondary_proxy = Some(secondary.sip_addr());
    settings.sip.keepalive_interval = Duration::from_secs(1);
    settings.validate().expect("settings validate");
    let gateway = start_gateway(settings).await;
    let http = gateway.http_addr();

    // The primary never answers: the secondary takes over and /readyz stays ready.
    metrics_show(http, r#"callgate_sip_proxy_active{proxy="secondary"} 1"#).await;
    metrics_show(http, r#"callgate_sip_proxy_reachable{proxy="primary"} 0"#).await;
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (_, text) = http_get(http, "/metrics").await;
    assert!(
        metric(&text, "callgate_sip_proxy_failovers_total") >= 1.0,
        "{text}"
    );

    // A registration made now lands on the secondary.
    let mut browser = browser(&gateway).await;
    let reply = register_outcome(&mut browser).await;
    assert!(matches!(reply, ServerMessage::Registered(_)), "{reply:?}");
    assert_eq!(secondary.registrations().len(), 1);

    // A call placed now is answered by the secondary and carries audio.
    let call = browser
        .call("echo", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    call.wait_frames(20, Duration::from_secs(10))
        .await
        .expect("audio through the secondary");
    browser.hangup(&id).await.expect("hangup acked");
    ended(&mut browser, &id).await;
    call.stop().await;
    let to_primary = seen.lock().expect("seen lock").clone();
    assert!(
        to_primary.is_empty(),
        "no INVITE or REGISTER may go to the silent primary: {to_primary:?}"
    );

    // The primary answers again: failback, and the registration moves to it at once.
    answering.store(true, Ordering::Relaxed);
    metrics_show(http, r#"callgate_sip_proxy_active{proxy="primary"} 1"#).await;
    let moved = eventually(Duration::from_secs(10), || {
        seen.lock()
            .expect("seen lock")
            .iter()
            .any(|m| m == "REGISTER")
    })
    .await;
    assert!(moved, "the registration never went to the primary");
    task.abort();
}
