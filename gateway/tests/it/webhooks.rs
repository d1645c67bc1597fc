//! CRM webhooks against a local HTTP receiver: every call event arrives with its CDR fields and
//! a valid HMAC signature, and a refusing CRM gets retries.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loadtest::browser::CallOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
    raw_body: Vec<u8>,
}

/// A tiny HTTP/1.1 receiver: answers 500 to the first `fail_first` requests, then 200.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/hooks/callgate",
        listener.local_addr().expect("addr")
    );
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let store = seen.clone();
    tokio::spawn(async move {
        let mut served = 0usize;
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let Ok(n) = stream.read(&mut chunk).await else {
                    break (String::new(), Vec::new());
                };
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < end + 4 + length {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        break;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                break (
                    head,
                    buf[end + 4..(end + 4 + length).min(buf.len())].to_vec(),
                );
            };
            if head.is_empty() {
                continue;
            }
            served += 1;
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                })
                .collect();
            let body_json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let status = if served <= fail_first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            if served > fail_first {
                store.lock().expect("lock").push(Received {
                    headers,
                    body: body_json,
                    raw_body: body,
                });
            }
            let _ = stream
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_events_are_delivered_signed_and_retried() {
    let (url, seen) = receiver(1).await;
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.webhooks.url = Some(url);
    settings.webhooks.secret = Some("crm-shared-secret".into());
    settings.webhooks.first_retry_ms = 100;
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    let options = CallOptions {
        call_uuid: Some("crm-call-42".into()),
        ..CallOptions::default()
    };
    let call = browser.call_with("echo", options).await.expect("call");
    let id = call.call_id().to_string();
    // Long enough for the media core's first quality report (every 2 s).
    call.wait_frames(150, Duration::from_secs(10))
        .await
        .expect("audio");
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;

    let delivered = eventually(Duration::from_secs(10), || {
        seen.lock().expect("lock").len() >= 3
    })
    .await;
    let events = seen.lock().expect("lock").clone();
    assert!(delivered, "{events:?}");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.body["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        ["ringing", "answered", "ended"],
        "the first (refused) delivery was retried in order"
    );
    for event in &events {
        assert_eq!(event.body["call_id"], id.as_str());
        assert_eq!(event.body["call_uuid"], "crm-call-42");
        assert_eq!(event.body["agent"], "1001");
        assert_eq!(event.body["direction"], "outbound");
        let timestamp: u64 = event.headers["x-callgate-timestamp"]
            .parse()
            .expect("timestamp");
        let expected =
            gateway::webhooks::signature("crm-shared-secret", timestamp, &event.raw_body);
        assert_eq!(
            event.headers["x-callgate-signature"], expected,
            "signature verifies"
        );
    }
    let ended = &events[2].body;
    assert_eq!(ended["cause"], "normal_clearing");
    assert!(
        ended["duration_secs"].as_f64().is_some_and(|d| d > 0.0),
        "{ended}"
    );
    assert!(
        ended["quality"]["mos"].as_f64().is_some_and(|m| m > 3.5),
        "{ended}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_messages_are_captured_to_a_hep_collector() {
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.hep.collector = Some(collector.local_addr().expect("addr"));
    settings.hep.capture_id = 4242;
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    let call = browser.call("busy", BTreeMap::new()).await.expect("call");
    ended(&mut browser, call.call_id()).await;
    call.stop().await;
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(500), collector.recv_from(&mut buf)).await
    {
        assert_eq!(&buf[..4], b"HEP3", "a HEP v3 packet");
        assert_eq!(usize::from(u16::from_be_bytes([buf[4], buf[5]])), n);
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(text);
    }
    assert!(
        seen.iter().any(|p| p.contains("INVITE sip:busy@")),
        "the INVITE was captured"
    );
    assert!(
        seen.iter().any(|p| p.contains("SIP/2.0 486 Busy Here")),
        "the 486 was captured"
    );
}
