//! SIP over plain TCP (`sip.transport = "tcp"`): callgate keeps its own connection to each
//! proxy (dialled at start with Nagle off, see `gateway/src/sip/tcp.rs`), dials it again when
//! the PBX closes it, and its requests and the PBX's answers travel on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use signaling::{ClientMessage, RejectReason, RejectRequest, ServerMessage};

use crate::support::*;

/// The next connection to `pbx`, for at most 10 s.
async fn next_connection(pbx: &TcpListener, which: &str) -> (TcpStream, SocketAddr) {
    tokio::time::timeout(Duration::from_secs(10), pbx.accept())
        .await
        .unwrap_or_else(|_| panic!("callgate never connected to the {which} proxy"))
        .expect("accept")
}

/// The PBX's end of a SIP TCP connection: reads whole messages (head and body by
/// Content-Length) and writes raw text.
struct PbxSide {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl PbxSide {
    fn new(stream: TcpStream) -> PbxSide {
        PbxSide {
            stream,
            buffer: Vec::new(),
        }
    }

    /// The next message callgate sent whose start line begins with `start` ("INVITE ",
    /// "SIP/2.0 180 "), for at most 10 s; the messages before it are skipped unanswered.
    async fn until(&mut self, start: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut skipped = Vec::new();
        loop {
            while let Some(message) = self.take_message() {
                if message.starts_with(start) {
                    return message;
                }
                skipped.push(message);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no {start:?} from callgate; got {skipped:#?}"))
                .expect("read");
            assert!(n > 0, "callgate closed the connection before {start:?}");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// A whole message from the buffer, if one is there (CRLF keepalives are dropped).
    fn take_message(&mut self) -> Option<String> {
        while self.buffer.starts_with(b"\r\n") {
            self.buffer.drain(..2);
        }
        let text = String::from_utf8_lossy(&self.buffer).into_owned();
        let head_end = text.find("\r\n\r\n")? + 4;
        let body = text[..head_end]
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                matches!(
                    name.trim().to_ascii_lowercase().as_str(),
                    "content-length" | "l"
                )
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
            })
            .unwrap_or(0);
        if self.buffer.len() < head_end + body {
            return None;
        }
        let message: Vec<u8> = self.buffer.drain(..head_end + body).collect();
        Some(String::from_utf8_lossy(&message).into_owned())
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.expect("write");
    }
}

/// The value of the first `name` header of `message`.
fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .split("\r\n")
        .find_map(|line| {
            let (n, value) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(value.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in\n{message}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_proxy_gets_a_kept_connection_that_carries_the_calls_and_is_redialled() {
    let primary = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let secondary = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut settings = test_settings(primary.local_addr().expect("addr"));
    settings.sip.secondary_proxy = Some(secondary.local_addr().expect("addr"));
    settings.sip.transport = gateway::config::SipTransport::Tcp;
    // No keepalive (test_settings): callgate sends nothing until the browser calls, so a
    // connection before that can only be the kept one.
    let gateway = start_gateway(settings).await;
    let (first, _) = next_connection(&primary, "primary").await;
    let (_to_secondary, _) = next_connection(&secondary, "secondary").await;

    // The PBX closes the connection: callgate dials again.
    drop(first);
    let (kept, _) = next_connection(&primary, "primary (again)").await;
    let mut kept = PbxSide::new(kept);

    // A call's INVITE leaves on that connection and the PBX's answer comes back on it.
    let mut browser = browser(&gateway).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let invite = kept.until("INVITE ").await;
    assert!(
        header(&invite, "Via").starts_with("SIP/2.0/TCP"),
        "{invite}"
    );
    kept.send(&sip_response(&invite, "486 Busy Here")).await;
    let end = ended(&mut browser, call.call_id()).await;
    assert_eq!(end.sip_status, Some(486), "{end:?}");
    kept.until("ACK ").await;
    call.stop().await;
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pbx_calls_a_registered_agent_back_on_the_kept_connection() {
    let pbx = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let pbx_addr = pbx.local_addr().expect("addr");
    let mut settings = test_settings(pbx_addr);
    settings.sip.transport = gateway::config::SipTransport::Tcp;
    let gateway = start_gateway(settings).await;
    let (kept, _) = next_connection(&pbx, "the").await;
    let mut kept = PbxSide::new(kept);

    let mut browser = browser(&gateway).await;
    send_register(&mut browser).await;
    let register = kept.until("REGISTER ").await;
    let contact = header(&register, "Contact");
    kept.send(&sip_response(&register, "200 OK").replace(
        "Content-Length: 0",
        &format!("Contact: {contact};expires=300\r\nContent-Length: 0"),
    ))
    .await;
    let outcome = registration_result(&mut browser).await;
    assert!(
        matches!(outcome, ServerMessage::Registered(_)),
        "{outcome:?}"
    );
    let user = gateway
        .services()
        .sip
        .agent_contacts()
        .pop()
        .expect("the agent is routed");

    // As Kamailio, Asterisk and FreeSWITCH do, the PBX reuses the connection callgate opened.
    let sip = gateway.sip_addr();
    kept.send(&format!(
        "INVITE sip:{user}@{sip};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP {pbx_addr};branch=z9hG4bKkept1\r\n\
         From: <sip:2000@{pbx_addr}>;tag=pbx1\r\nTo: <sip:{user}@{sip}>\r\n\
         Call-ID: kept-1@{pbx_addr}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:2000@{pbx_addr};transport=tcp>\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    ))
    .await;
    let incoming = browser.next_incoming().await.expect("incoming_call");
    kept.until("SIP/2.0 180 ").await;
    let request_id = browser.next_request_id();
    browser
        .send_message(&ClientMessage::Reject(RejectRequest {
            request_id,
            call_id: incoming.call_id.clone(),
            reason: Some(RejectReason::Decline),
        }))
        .await
        .expect("sent");
    let declined = kept.until("SIP/2.0 603 ").await;
    kept.send(&format!(
        "ACK sip:{user}@{sip};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP {pbx_addr};branch=z9hG4bKkept1\r\n\
         From: <sip:2000@{pbx_addr}>;tag=pbx1\r\nTo: {}\r\n\
         Call-ID: kept-1@{pbx_addr}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        header(&declined, "To")
    ))
    .await;
    let end = ended(&mut browser, &incoming.call_id).await;
    assert_eq!(
        (end.cause.as_str(), end.sip_status),
        ("declined", Some(603))
    );
    assert_no_leftovers(&gateway).await;
}
