//! RFC 4475 torture messages (gateway/tests/fixtures/rfc4475/, see its README) sent over UDP to
//! a running callgate's SIP port: valid requests are parsed and answered by callgate's routing
//! (never 400), invalid ones are answered as the RFC asks (400, 505, 501) or dropped when no
//! answer is possible, and afterwards callgate still serves calls and nothing panicked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::support::*;

/// What the RFC calls for, as callgate (a user agent, not a proxy) answers it.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A final response with one of these codes.
    Answer(&'static [u16]),
    /// No answer at all (responses, and requests nobody could answer); `Some(m)`: whether
    /// the guard must count it as malformed (a valid response must parse).
    Silent(Option<bool>),
}

use Expect::{Answer, Silent};

/// Every message of RFC 4475 §3 with the section that describes it and callgate's outcome.
/// Unknown agents get 404, REGISTER 405 (callgate is no registrar), OPTIONS 200.
const CASES: &[(&str, &str, Expect)] = &[
    // §3.1.1 valid messages: parsed and answered by routing, never 400.
    ("wsinv", "3.1.1.1", Answer(&[404])),
    ("intmeth", "3.1.1.2", Answer(&[501])),
    ("esc01", "3.1.1.3", Answer(&[404])),
    ("escnull", "3.1.1.4", Answer(&[405])),
    ("esc02", "3.1.1.5", Answer(&[501])),
    ("lwsdisp", "3.1.1.6", Answer(&[200])),
    ("longreq", "3.1.1.7", Answer(&[404])),
    ("dblreq", "3.1.1.8", Answer(&[405])),
    ("semiuri", "3.1.1.9", Answer(&[200])),
    ("transports", "3.1.1.10", Answer(&[200])),
    ("mpart01", "3.1.1.11", Answer(&[404])),
    ("unreason", "3.1.1.12", Silent(Some(false))),
    ("noreason", "3.1.1.13", Silent(Some(false))),
    // §3.1.2 invalid messages. Where the RFC allows a liberal reading, the README says which
    // one callgate takes.
    ("badinv01", "3.1.2.1", Answer(&[400])),
    ("clerr", "3.1.2.2", Answer(&[400])),
    ("ncl", "3.1.2.3", Answer(&[400])),
    ("scalar02", "3.1.2.4", Answer(&[400])),
    ("scalarlg", "3.1.2.5", Silent(Some(true))),
    ("quotbal", "3.1.2.6", Answer(&[400])),
    ("ltgtruri", "3.1.2.7", Answer(&[400])),
    ("lwsruri", "3.1.2.8", Answer(&[400])),
    ("lwsstart", "3.1.2.9", Answer(&[400])),
    ("trws", "3.1.2.10", Answer(&[400])),
    ("escruri", "3.1.2.11", Answer(&[404])),
    ("baddate", "3.1.2.12", Answer(&[404])),
    ("regbadct", "3.1.2.13", Answer(&[405])),
    ("badaspec", "3.1.2.14", Answer(&[200])),
    ("baddn", "3.1.2.15", Answer(&[400])),
    ("badvers", "3.1.2.16", Answer(&[505])),
    ("mismatch01", "3.1.2.17", Answer(&[400])),
    ("mismatch02", "3.1.2.18", Answer(&[400])),
    ("bigcode", "3.1.2.19", Silent(Some(true))),
    // §3.2 transaction layer.
    ("badbranch", "3.2.1", Answer(&[200])),
    // §3.3 application layer.
    ("insuf", "3.3.1", Answer(&[400])),
    ("unkscm", "3.3.2", Answer(&[416])),
    ("novelsc", "3.3.3", Answer(&[416])),
    ("unksm2", "3.3.4", Answer(&[405])),
    ("bext01", "3.3.5", Answer(&[420])),
    ("invut", "3.3.6", Answer(&[404])),
    ("regaut01", "3.3.7", Answer(&[405])),
    ("multi01", "3.3.8", Answer(&[400])),
    ("mcl01", "3.3.9", Answer(&[400])),
    // Well-formed, but no transaction of ours: discarded by the stack (RFC 3261 §18.1.2).
    ("bcast", "3.3.10", Silent(None)),
    ("zeromf", "3.3.11", Answer(&[200])),
    ("cparam01", "3.3.12", Answer(&[405])),
    ("cparam02", "3.3.13", Answer(&[405])),
    ("regescrt", "3.3.14", Answer(&[405])),
    ("sdp01", "3.3.15", Answer(&[404])),
    // §3.4 backward compatibility.
    ("inv2543", "3.4.1", Answer(&[404])),
];

/// Panics raised in callgate's or rsipstack's code while the torture runs (the hook is
/// process-wide; panics of other tests, located in tests/, are not counted).
static STACK_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_stack_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let file = info.location().map(|l| l.file()).unwrap_or_default();
        if file.contains("gateway/src") || file.contains("rsipstack") {
            STACK_PANICS.fetch_add(1, Ordering::Relaxed);
        }
        previous(info);
    }));
}

fn fixture(tag: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/rfc4475/{tag}.dat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value of header `name` (long form, case-insensitive) in a response's text.
fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status_of(text: &str) -> u16 {
    text.strip_prefix("SIP/")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a SIP response:\n{text}"))
}

/// Receives datagrams until a final response; returns its text, `None` when none comes.
async fn final_response(socket: &UdpSocket) -> Option<String> {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .ok()?
            .expect("recv");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if status_of(&text) >= 200 {
            return Some(text);
        }
    }
}

/// An OPTIONS callgate must answer 200, with this Call-ID.
fn probe(local: SocketAddr, sip: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:callgate@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}\r\n\
         From: <sip:probe@{local}>;tag=p1\r\nTo: <sip:callgate@{sip}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

async fn malformed_count(http: SocketAddr) -> f64 {
    let (_, body) = http_get(http, "/metrics").await;
    metric(&body, "callgate_media_errors_total{kind=\"sip_malformed\"}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rfc4475_torture_message_is_answered_as_the_rfc_asks() {
    count_stack_panics();
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let sip = gateway.sip_addr();
    let mut failures = Vec::new();
    for (tag, section, expect) in CASES {
        let bytes = fixture(tag);
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let local = socket.local_addr().expect("addr");
        let malformed_before = malformed_count(gateway.http_addr()).await;
        socket.send_to(&bytes, sip).await.expect("sent");
        match expect {
            Answer(codes) => {
                let Some(reply) = final_response(&socket).await else {
                    failures.push(format!("{tag} (§{section}): no answer, want {codes:?}"));
                    continue;
                };
                let status = status_of(&reply);
                if !codes.contains(&status) {
                    failures.push(format!(
                        "{tag} (§{section}): got {status}, want one of {codes:?}\n{reply}"
                    ));
                }
                let wanted_header = match *tag {
                    "intmeth" | "esc02" => Some(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")),
                    "bext01" => Some((
                        "Unsupported",
                        "nothingSupportsThis, nothingSupportsThisEither",
                    )),
                    _ => None,
                };
                if let Some((name, prefix)) = wanted_header
                    && !header(&reply, name).is_some_and(|v| v.starts_with(prefix))
                {
                    failures.push(format!(
                        "{tag} (§{section}): no `{name}: {prefix}…`\n{reply}"
                    ));
                }
                if *tag == "dblreq" {
                    // RFC 3261 §18.3: the INVITE after the REGISTER's body is noise.
                    assert_eq!(header(&reply, "CSeq"), Some("8 REGISTER"), "{reply}");
                }
            }
            Silent(malformed) => {
                // Whatever callgate answers comes before the answer to a later OPTIONS on
                // the same socket, since both leave from the same receive loop in order.
                let call_id = format!("probe-{tag}");
                let options = probe(local, sip, &call_id);
                socket.send_to(options.as_bytes(), sip).await.expect("sent");
                let reply = final_response(&socket)
                    .await
                    .unwrap_or_else(|| panic!("{tag}: the OPTIONS after it went unanswered"));
                if header(&reply, "Call-ID") != Some(call_id.as_str()) {
                    failures.push(format!(
                        "{tag} (§{section}): answered, want silence\n{reply}"
                    ));
                }
                let malformed_after = malformed_count(gateway.http_addr()).await;
                let counted = malformed_after > malformed_before;
                if malformed.is_some_and(|want| want != counted) {
                    failures.push(format!(
                        "{tag} (§{section}): counted as malformed: {counted}, want {malformed:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // Still healthy: an OPTIONS, a real call through the demo PBX, /healthz.
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let options = probe(socket.local_addr().expect("addr"), sip, "after-torture");
    socket.send_to(options.as_bytes(), sip).await.expect("sent");
    let reply = final_response(&socket).await.expect("OPTIONS answered");
    assert_eq!(status_of(&reply), 200);
    prove_still_serving(&gateway).await;
    let (status, _) = http_get(gateway.http_addr(), "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        STACK_PANICS.load(Ordering::Relaxed),
        0,
        "callgate or rsipstack panicked"
    );
}
