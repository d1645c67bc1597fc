//! Call flows as transcripts (design.md §2.10): `>` lines are inputs (optionally after
//! `+Ns` to advance the simulated clock), `<` lines are the outputs they must produce, in
//! order, and nothing else; `= done` asserts the value may be dropped.

use std::time::{Duration, Instant};

use super::*;
use crate::sdp::{Direction, G711, SIP_TELEPHONE_EVENT_PT};

const ANSWER: &str = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                      m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const EARLY: &str = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                     m=audio 4002 RTP/AVP 0\r\n";
const OPUS_ANSWER: &str = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
                           t=0 0\r\nm=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";

thread_local! {
    static INBOUND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static OFFERLESS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static DTMF_MODE: std::cell::Cell<DtmfMode> = const { std::cell::Cell::new(DtmfMode::Rfc4733) };
}

fn new_call(now: Instant) -> Call {
    let offer = SipOffer {
        session_id: 1,
        version: 1,
        rtp: "127.0.0.1:30000".parse().expect("addr"),
        codecs: vec![G711::Pcmu],
        telephone_event: Some(SIP_TELEPHONE_EVENT_PT),
        direction: Direction::SendRecv,
        sdes: crate::sdp::Sdes::off(),
    };
    let timers = CallTimers {
        ring_timeout: Duration::from_secs(60),
        cancel_guard: Duration::from_secs(32),
        dtmf_mode: DTMF_MODE.with(|m| m.get()),
        answer_timeout: Duration::from_secs(30),
    };
    if INBOUND.with(|i| i.get()) {
        let remote = crate::sdp::read_sip_answer(ANSWER, &offer).ok();
        let offerless = OFFERLESS.with(|o| o.get());
        return Call::inbound(
            CallId::new("c-1"),
            remote.filter(|_| !offerless),
            offer,
            now,
            timers,
        );
    }
    Call::outbound(CallId::new("c-1"), offer, now, timers)
}

/// Agent requests in transcripts; `None` when the line is an input instead.
fn parse_request(line: &str) -> Option<AgentRequest> {
    let mut words = line.split(' ');
    match words.next()? {
        "hold" => Some(AgentRequest::Hold),
        "unhold" => Some(AgentRequest::Unhold),
        "mute" => Some(AgentRequest::Mute),
        "unmute" => Some(AgentRequest::Unmute),
        "answer" => Some(AgentRequest::Answer),
        "reject" => Some(AgentRequest::Reject {
            status: words.next().and_then(|s| s.parse().ok()).unwrap_or(486),
        }),
        "transfer" => Some(AgentRequest::Transfer {
            refer_to: words.next().unwrap_or_default().to_string(),
            referred_by: "<sip:1001@pbx>".into(),
        }),
        "dtmf" => Some(AgentRequest::Dtmf {
            digits: words.next().unwrap_or_default().to_string(),
            duration: Duration::from_millis(100),
        }),
        _ => None,
    }
}

fn remote_sdp(direction: &str) -> Option<String> {
    match direction {
        "none" => None,
        "bad" => Some(OPUS_ANSWER.to_string()),
        "zero" => Some(ANSWER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")),
        d => Some(format!("{ANSWER}a={d}\r\n")),
    }
}

fn parse_input(line: &str) -> CallInput {
    let mut words = line.splitn(2, ' ');
    let verb = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default();
    let sdp = |w: &str| match w {
        "sdp" => Some(ANSWER.to_string()),
        "early" => Some(EARLY.to_string()),
        "opus" => Some(OPUS_ANSWER.to_string()),
        _ => None,
    };
    match verb {
        "sip_provisional" => {
            let mut w = rest.split(' ');
            let status = w.next().and_then(|s| s.parse().ok()).expect("status");
            CallInput::SipProvisional {
                status,
                sdp: w.next().and_then(sdp),
            }
        }
        "sip_answered" => CallInput::SipAnswered { sdp: sdp(rest) },
        "sip_failed" => {
            let (status, reason) = rest.split_once(' ').expect("status reason");
            CallInput::SipFailed {
                status: status.parse().expect("status"),
                reason: reason.into(),
            }
        }
        "sip_unreachable" => CallInput::SipUnreachable {
            reason: rest.into(),
        },
        "sip_remote_bye" => CallInput::SipRemoteBye,
        "browser_hangup" => CallInput::BrowserHangup,
        "session_closed" => CallInput::SessionClosed,
        "shutdown" => CallInput::Shutdown,
        "media_connected" => CallInput::MediaConnected,
        "media_inactive" => CallInput::MediaInactive {
            leg: if rest == "sip" { "sip" } else { "webrtc" },
        },
        "media_failed" => CallInput::MediaFailed {
            reason: rest.into(),
        },
        "timeout" => CallInput::Timeout,
        "reinvite_outcome" => {
            let mut w = rest.split(' ');
            let status = w.next().and_then(|s| s.parse().ok()).expect("status");
            CallInput::SipReinviteOutcome {
                status,
                sdp: w.next().and_then(remote_sdp),
            }
        }
        "remote_reinvite" => CallInput::SipRemoteReinvite {
            sdp: remote_sdp(rest),
        },
        "ack_answer" => CallInput::SipReinviteAckAnswer {
            sdp: remote_sdp(rest).expect("an SDP answer"),
        },
        "sip_caller_cancelled" => CallInput::SipCallerCancelled,
        "session_timer" => {
            let mut w = rest.split(' ');
            let secs: u64 = w.next().and_then(|s| s.parse().ok()).expect("seconds");
            CallInput::SipSessionTimer {
                interval: Duration::from_secs(secs),
                we_refresh: w.next() == Some("uac"),
            }
        }
        "session_refreshed" => CallInput::SipSessionRefreshed,
        "refer_outcome" => CallInput::SipReferOutcome {
            status: rest.parse().expect("status"),
        },
        "notify" => {
            let mut w = rest.split(' ');
            let status = w.next().and_then(|s| s.parse().ok()).expect("status");
            CallInput::SipTransferProgress {
                status,
                done: w.next() == Some("done"),
            }
        }
        "sip_dtmf" => CallInput::SipDtmf {
            digit: rest.chars().next().expect("digit"),
        },
        "media_released" => CallInput::MediaReleased(None),
        "media_dtmf" => CallInput::MediaDtmf {
            digit: rest.chars().next().expect("digit"),
        },
        other => panic!("unknown transcript input {other}"),
    }
}

fn describe(output: &CallOutput) -> String {
    match output {
        CallOutput::Sip(SipAction::Invite { .. }) => "sip invite".into(),
        CallOutput::Sip(SipAction::Cancel) => "sip cancel".into(),
        CallOutput::Sip(SipAction::Bye) => "sip bye".into(),
        CallOutput::Media(MediaAction::Remove) => "media remove".into(),
        CallOutput::Media(MediaAction::Forward { to_sip }) => {
            format!("media forward to_sip={to_sip}")
        }
        CallOutput::Media(MediaAction::Dtmf { digits, .. }) => format!("media dtmf {digits}"),
        CallOutput::Sip(SipAction::Reinvite { sdp, .. }) => {
            let dir = ["sendrecv", "sendonly", "recvonly", "inactive"]
                .into_iter()
                .find(|d| sdp.contains(&format!("a={d}")));
            format!("sip reinvite {}", dir.unwrap_or("?"))
        }
        CallOutput::Sip(SipAction::ReplyReinvite { status, sdp }) => {
            let dir = sdp.as_deref().and_then(|sdp| {
                ["sendrecv", "sendonly", "recvonly", "inactive"]
                    .into_iter()
                    .find(|d| sdp.contains(&format!("a={d}")))
            });
            format!(
                "sip reply_reinvite {status}{}",
                dir.map(|d| format!(" {d}")).unwrap_or_default()
            )
        }
        CallOutput::Sip(SipAction::Info { digit, .. }) => format!("sip info {digit}"),
        CallOutput::Sip(SipAction::Accept { sdp }) => {
            format!(
                "sip accept {}",
                if sdp.contains("m=audio 30000") {
                    "ours"
                } else {
                    "?"
                }
            )
        }
        CallOutput::Sip(SipAction::Reject { status }) => format!("sip reject {status}"),
        CallOutput::Sip(SipAction::Refer { refer_to, .. }) => format!("sip refer {refer_to}"),
        CallOutput::Browser(ServerMessage::TransferProgress(p)) => {
            format!("browser transfer {} done={}", p.sip_status, p.done)
        }
        CallOutput::Browser(ServerMessage::CallHeld(m)) => format!("browser held {:?}", m.by),
        CallOutput::Browser(ServerMessage::CallResumed(m)) => format!("browser resumed {:?}", m.by),
        CallOutput::Browser(ServerMessage::DtmfReceived(m)) => format!("browser dtmf {}", m.digit),
        CallOutput::Browser(ServerMessage::Error(m)) => format!("browser error {}", m.code),
        CallOutput::Media(MediaAction::Connect(a)) => format!(
            "media connect {} {:?} te={}{}",
            a.remote_rtp,
            a.codec,
            a.telephone_event.map_or("-".to_string(), |t| t.to_string()),
            if a.on_hold { " hold" } else { "" }
        ),
        CallOutput::Browser(ServerMessage::CallRinging(m)) => {
            format!("browser ringing {}", m.sip_status)
        }
        CallOutput::Browser(ServerMessage::CallEarlyMedia(m)) => {
            format!("browser early_media {}", m.sip_status)
        }
        CallOutput::Browser(ServerMessage::CallAnswered(_)) => "browser answered".into(),
        CallOutput::Browser(ServerMessage::CallEnded(m)) => format!(
            "browser ended {} {} sip={} answered={}",
            serde_json::to_value(m.ended_by)
                .expect("serializes")
                .as_str()
                .unwrap_or_default(),
            m.cause,
            m.sip_status.map_or("-".to_string(), |s| s.to_string()),
            m.answered
        ),
        CallOutput::Browser(other) => format!("browser {other:?}"),
        CallOutput::Finished(r) => format!("finished {}", r.result_label()),
    }
}

fn run(transcript: &str) {
    let mut now = crate::clock::now();
    let mut call = new_call(now);
    let mut pending: Vec<String> = Vec::new();
    let drain = |call: &mut Call, pending: &mut Vec<String>| {
        while let Some(out) = call.poll_output() {
            pending.push(describe(&out));
        }
    };
    drain(&mut call, &mut pending);
    for (n, raw) in transcript.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(expected) = line.strip_prefix("< ") {
            assert!(
                !pending.is_empty(),
                "line {}: expected `{expected}`, got nothing",
                n + 1
            );
            let got = pending.remove(0);
            assert_eq!(got, expected, "line {}", n + 1);
        } else if let Some(input) = line.strip_prefix("> ") {
            assert!(
                pending.is_empty(),
                "line {}: unexpected outputs {pending:?}",
                n + 1
            );
            let input = match input.strip_prefix('+') {
                Some(timed) => {
                    let (secs, rest) = timed.split_once("s ").expect("+Ns input");
                    now += Duration::from_secs(secs.parse().expect("seconds"));
                    rest
                }
                None => input,
            };
            if let Some(request) = parse_request(input) {
                if let Err(refusal) = call.request(now, request) {
                    pending.push(format!("refused {}", refusal.code));
                }
            } else {
                call.handle_input(now, parse_input(input));
            }
            drain(&mut call, &mut pending);
        } else if line == "= done" {
            assert!(
                pending.is_empty(),
                "line {}: unexpected outputs {pending:?}",
                n + 1
            );
            assert!(call.is_done(), "line {}: call should be done", n + 1);
            assert_eq!(call.poll_timeout(), None);
        } else if line == "= alive" {
            assert!(
                !call.is_done(),
                "line {}: call should still be alive",
                n + 1
            );
        } else {
            panic!("line {}: bad transcript line {line}", n + 1);
        }
    }
    assert!(pending.is_empty(), "unconsumed outputs {pending:?}");
}

#[test]
fn happy_path_answer_then_agent_hangs_up() {
    run("
        < sip invite
        > sip_provisional 180
        < browser ringing 180
        > sip_provisional 180
        > +3s sip_answered sdp
        < media connect 127.0.0.1:4000 Pcmu te=101
        < browser answered
        > media_connected
        > +60s browser_hangup
        < sip bye
        < media remove
        > media_released
        < browser ended agent normal_clearing sip=- answered=true
        < finished answered
        = done
    ");
}

#[test]
fn early_media_then_answer_repoints_media_once() {
    run("
        < sip invite
        > sip_provisional 183 early
        < media connect 127.0.0.1:4002 Pcmu te=-
        < browser early_media 183
        > sip_provisional 183 early
        > sip_provisional 180
        > sip_answered sdp
        < media connect 127.0.0.1:4000 Pcmu te=101
        < browser answered
        > sip_remote_bye
        < media remove
        > media_released
        < browser ended remote normal_clearing sip=- answered=true
        < finished answered
        = done
    ");
}

#[test]
fn answer_without_sdp_reuses_early_media_description() {
    run("
        < sip invite
        > sip_provisional 183 early
        < media connect 127.0.0.1:4002 Pcmu te=-
        < browser early_media 183
        > sip_answered none
        < browser answered
        = alive
    ");
}

#[test]
fn far_end_hangs_up() {
    run("
        < sip invite
        > sip_answered sdp
        < media connect 127.0.0.1:4000 Pcmu te=101
        < browser answered
        > +10s sip_remote_bye
        < media remove
        > media_released
        < browser ended remote normal_clearing sip=- answered=true
        < finished answered
        = done
        > sip_remote_bye
        > browser_hangup
        = done
    ");
}

#[test]
fn cancel_before_answer_waits_for_the_final_response() {
    run("
        < sip invite
        > sip_provisional 180
        < browser ringing 180
        > browser_hangup
        < sip cancel
        < media remove
        < browser ended agent cancelled sip=- answered=false
        < finished cancelled
        = alive
        > sip_failed 487 Request Terminated
        = done
    ");
}

#[test]
fn cancel_racing_200_ends_the_dialog_with_bye() {
    run("
        < sip invite
        > sip_provisional 180
        < browser ringing 180
        > browser_hangup
        < sip cancel
        < media remove
        < browser ended agent cancelled sip=- answered=false
        < finished cancelled
        > sip_answered sdp
        < sip bye
        = done
    ");
}

#[test]
fn cancel_guard_expires_when_the_pbx_never_answers_the_cancel() {
    run("
        < sip invite
        > browser_hangup
        < sip cancel
        < media remove
        < browser ended agent cancelled sip=- answered=false
        < finished cancelled
        > +31s timeout
        = alive
        > +1s timeout
        = done
    ");
}

#[test]
fn failure_statuses_map_to_causes() {
    for (status, reason, cause) in [
        (486, "Busy Here", "busy"),
        (600, "Busy Everywhere", "busy"),
        (603, "Decline", "declined"),
        (404, "Not Found", "not_found"),
        (480, "Temporarily Unavailable", "unavailable"),
        (403, "Forbidden", "forbidden"),
        (407, "Proxy Authentication Required", "auth_failed"),
        (488, "Not Acceptable Here", "incompatible_media"),
        (408, "Request Timeout", "timeout"),
        (503, "Service Unavailable", "server_error"),
        (420, "Bad Extension", "sip_error"),
    ] {
        run(&format!(
            "
            < sip invite
            > sip_provisional 180
            < browser ringing 180
            > sip_failed {status} {reason}
            < media remove
            < browser ended remote {cause} sip={status} answered=false
            < finished {cause}
            = done
        "
        ));
    }
}

#[test]
fn unreachable_pbx_ends_with_a_gateway_cause() {
    run("
        < sip invite
        > sip_unreachable no route to 127.0.0.1:5080
        < media remove
        < browser ended gateway unreachable sip=- answered=false
        < finished unreachable
        = done
    ");
}

#[test]
fn ring_timeout_cancels() {
    run("
        < sip invite
        > sip_provisional 180
        < browser ringing 180
        > +59s timeout
        > +1s timeout
        < sip cancel
        < media remove
        < browser ended gateway no_answer sip=- answered=false
        < finished no_answer
        > sip_failed 487 Request Terminated
        = done
    ");
}

#[test]
fn media_inactivity_ends_answered_and_ringing_calls() {
    run("
        < sip invite
        > sip_answered sdp
        < media connect 127.0.0.1:4000 Pcmu te=101
        < browser answered
        > +30s media_inactive sip
        < sip bye
        < media remove
        > media_released
        < browser ended gateway media_timeout sip=- answered=true
        < finished answered
        = done
    ");
    run("
        < sip invite
        > sip_provisional 180
        < browser ringing 180
        > +30s media_inactive webrtc
        < sip cancel
        < media remove
        < browser ended gateway media_timeout sip=- answered=false
        < finished media_timeout
        > sip_failed 487 Request Terminated
        = done
    ");
}

#[test]
fn answer_we_cannot_relay_is_ended_with_bye() {
    run("
        < sip invite
        > sip_answered opus
        < sip bye
        < media remove
        < browser ended gateway incompatible_media sip=- answered=false
        < finished incompatible_media
        = done
    ");
}

#[test]
fn websocket_loss_and_shutdown_end_calls() {
    run("
        < sip invite
        > sip_answered sdp
        < media connect 127.0.0.1:4000 Pcmu te=101
        < browser answered
        > session_closed
        < sip bye
        < media remove
        < browser ended agent websocket_closed sip=- answered=true
        < finished answered
        = done
    ");
    run("
        < sip invite
        > shutdown
        < sip cancel
        < media remove
        < browser ended gateway shutdown sip=- answered=false
        < finished shutdown
        = alive
    ");
}

/// A measurement whose MOS tells which one the call reported.
fn quality_with_mos(mos: f64, packets: u64) -> signaling::CallQuality {
    let leg = signaling::LegQuality {
        packets,
        lost: 0,
        jitter_ms: 1.0,
        rtt_ms: None,
    };
    signaling::CallQuality {
        webrtc: leg,
        sip: leg,
        mos,
    }
}

/// An outbound call answered and connected, with one periodic quality sample (MOS 3.0).
fn answered_call_with_a_sample(now: Instant) -> Call {
    let mut call = new_call(now);
    call.handle_input(
        now,
        CallInput::SipAnswered {
            sdp: Some(ANSWER.to_string()),
        },
    );
    call.handle_input(now, CallInput::MediaConnected);
    call.handle_input(now, CallInput::MediaQuality(quality_with_mos(3.0, 100)));
    while call.poll_output().is_some() {}
    call
}

/// The `call_ended` message and the record's quality among `outputs`.
fn reported_quality(outputs: &[CallOutput]) -> (Option<f64>, Option<f64>) {
    let told = outputs.iter().find_map(|o| match o {
        CallOutput::Browser(ServerMessage::CallEnded(e)) => Some(e.quality.map(|q| q.mos)),
        _ => None,
    });
    let recorded = outputs.iter().find_map(|o| match o {
        CallOutput::Finished(r) => Some(r.quality.map(|q| q.mos)),
        _ => None,
    });
    match (told, recorded) {
        (Some(told), Some(recorded)) => (told, recorded),
        _ => panic!("no call_ended and record in {outputs:?}"),
    }
}

/// The call tells the browser and records the outcome now, both with this MOS, and is done.
#[track_caller]
fn assert_ends_reporting(call: &mut Call, mos: f64) {
    assert_eq!(reported_quality(&drain_all(call)), (Some(mos), Some(mos)));
    assert!(call.is_done());
}

fn drain_all(call: &mut Call) -> Vec<CallOutput> {
    std::iter::from_fn(|| call.poll_output()).collect()
}

#[test]
fn an_ended_call_reports_its_bridges_final_measurement() {
    let now = crate::clock::now();
    let mut call = answered_call_with_a_sample(now);
    call.handle_input(now, CallInput::BrowserHangup);
    let out = drain_all(&mut call);
    assert!(
        matches!(
            &out[..],
            [
                CallOutput::Sip(SipAction::Bye),
                CallOutput::Media(MediaAction::Remove)
            ]
        ),
        "the browser is told only once the bridge answered: {out:?}"
    );
    assert!(!call.is_done());
    assert_eq!(call.poll_timeout(), Some(now + FINAL_QUALITY_WAIT));
    // Other inputs meanwhile change nothing.
    call.handle_input(now, CallInput::SipRemoteBye);
    call.handle_input(now, CallInput::MediaQuality(quality_with_mos(1.0, 1)));
    assert!(drain_all(&mut call).is_empty());
    call.handle_input(
        now,
        CallInput::MediaReleased(Some(quality_with_mos(4.2, 150))),
    );
    let out = drain_all(&mut call);
    assert_eq!(reported_quality(&out), (Some(4.2), Some(4.2)));
    assert!(call.is_done());
    assert_eq!(call.poll_timeout(), None);
}

#[test]
fn without_a_final_measurement_the_last_sample_is_reported() {
    // The bridge was already gone (no measurement) ...
    let now = crate::clock::now();
    let mut call = answered_call_with_a_sample(now);
    call.handle_input(now, CallInput::SipRemoteBye);
    drain_all(&mut call);
    call.handle_input(now, CallInput::MediaReleased(None));
    assert_ends_reporting(&mut call, 3.0);

    // ... or the worker never answers: the wait ends at its deadline, not before.
    let mut call = answered_call_with_a_sample(now);
    call.handle_input(now, CallInput::BrowserHangup);
    drain_all(&mut call);
    call.handle_input(now + FINAL_QUALITY_WAIT / 2, CallInput::Timeout);
    assert!(drain_all(&mut call).is_empty());
    call.handle_input(now + FINAL_QUALITY_WAIT, CallInput::Timeout);
    assert_ends_reporting(&mut call, 3.0);
}

#[test]
fn an_ended_call_waiting_for_its_measurement_no_longer_occupies_the_agent() {
    let now = crate::clock::now();
    let mut call = answered_call_with_a_sample(now);
    assert!(!call.is_over());
    call.handle_input(now, CallInput::BrowserHangup);
    drain_all(&mut call);
    // The report still waits for the worker, yet the agent is free for the next call.
    assert!(call.is_over() && !call.is_done());
    call.handle_input(now, CallInput::MediaReleased(None));
    assert!(call.is_over());
}

#[test]
fn a_closing_session_or_gateway_does_not_wait_for_the_measurement() {
    let now = crate::clock::now();
    // Ended by the session's end: reported at once.
    let mut call = answered_call_with_a_sample(now);
    call.handle_input(now, CallInput::SessionClosed);
    assert_ends_reporting(&mut call, 3.0);
    // Ended before, then the gateway stops during the wait: reported at once.
    let mut call = answered_call_with_a_sample(now);
    call.handle_input(now, CallInput::BrowserHangup);
    drain_all(&mut call);
    call.handle_input(now, CallInput::Shutdown);
    assert_ends_reporting(&mut call, 3.0);
}

#[test]
fn stale_inputs_after_the_end_change_nothing() {
    run("
        < sip invite
        > sip_failed 486 Busy Here
        < media remove
        < browser ended remote busy sip=486 answered=false
        < finished busy
        = done
        > sip_answered sdp
        > sip_provisional 180
        > media_inactive sip
        > timeout
        > browser_hangup
        = done
    ");
}

#[test]
fn every_cause_has_a_distinct_spelling() {
    let mut names: Vec<&str> = EndCause::ALL.iter().map(|c| c.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), EndCause::ALL.len());
}

const ANSWERED: &str = "
    < sip invite
    > sip_answered sdp
    < media connect 127.0.0.1:4000 Pcmu te=101
    < browser answered
";

#[test]
fn agent_hold_and_resume() {
    run(&format!(
        "{ANSWERED}
        > hold
        < media forward to_sip=false
        < sip reinvite sendonly
        > hold
        < refused invalid_state
        > reinvite_outcome 200 recvonly
        < media connect 127.0.0.1:4000 Pcmu te=101
        < media forward to_sip=false
        < browser held Agent
        > hold
        < refused invalid_state
        > unhold
        < sip reinvite sendrecv
        > reinvite_outcome 200 sendrecv
        < media connect 127.0.0.1:4000 Pcmu te=101
        < media forward to_sip=true
        < browser resumed Agent
        > unhold
        < refused invalid_state
        = alive
    "
    ));
}

#[test]
fn requests_need_an_answered_call() {
    run("
        < sip invite
        > hold
        < refused invalid_state
        > dtmf 1
        < refused invalid_state
        > mute
        < refused invalid_state
    ");
}

#[test]
fn glare_retries_after_a_back_off() {
    run(&format!(
        "{ANSWERED}
        > hold
        < media forward to_sip=false
        < sip reinvite sendonly
        > reinvite_outcome 491
        > +1s timeout
        > +4s timeout
        < sip reinvite sendonly
        > reinvite_outcome 200 recvonly
        < media connect 127.0.0.1:4000 Pcmu te=101
        < media forward to_sip=false
        < browser held Agent
    "
    ));
}

#[test]
fn refused_hold_restores_the_call_and_dead_dialog_ends_it() {
    run(&format!(
        "{ANSWERED}
        > hold
        < media forward to_sip=false
        < sip reinvite sendonly
        > reinvite_outcome 488
        < media forward to_sip=true
        < browser error invalid_state
        > hold
        < media forward to_sip=false
        < sip reinvite sendonly
        > reinvite_outcome 481
        < sip bye
        < media remove
        > media_released
        < browser ended gateway timeout sip=481 answered=true
        < finished answered
        = done
    "
    ));
}

#[test]
fn pbx_hold_and_resume_are_answered_and_reported() {
    run(&format!(
        "{ANSWERED}
        > remote_reinvite sendonly
        < media connect 127.0.0.1:4000 Pcmu te=101 hold
        < media forward to_sip=false
        < sip reply_reinvite 200 recvonly
        < browser held Remote
        > remote_reinvite inactive
        < media connect 127.0.0.1:4000 Pcmu te=101 hold
        < media forward to_sip=false
        < sip reply_reinvite 200 inactive
        > remote_reinvite sendrecv
        < media connect 127.0.0.1:4000 Pcmu te=101
        < media forward to_sip=true
        < sip reply_reinvite 200 sendrecv
        < browser resumed Remote
        > remote_reinvite zero
        < media connect 0.0.0.0:4000 Pcmu te=101 hold
        < media forward to_sip=false
        < sip reply_reinvite 200 recvonly
        < browser held Remote
        > remote_reinvite bad
        < sip reply_reinvite 488
        > remote_reinvite none
        < sip reply_reinvite 200 recvonly
    "
    ));
}

#[test]
fn an_offerless_reinvites_answer_is_taken_from_the_ack() {
    run(&format!(
        "{ANSWERED}
        > remote_reinvite none
        < sip reply_reinvite 200 sendrecv
        > ack_answer sendonly
        < media connect 127.0.0.1:4000 Pcmu te=101 hold
        < media forward to_sip=false
        < browser held Remote
        > ack_answer bad
        > ack_answer sendrecv
        < media connect 127.0.0.1:4000 Pcmu te=101
        < media forward to_sip=true
        < browser resumed Remote
    "
    ));
}

#[test]
fn remote_reinvite_during_our_own_is_glare() {
    run(&format!(
        "{ANSWERED}
        > hold
        < media forward to_sip=false
        < sip reinvite sendonly
        > remote_reinvite sendrecv
        < sip reply_reinvite 491
    "
    ));
    run("
        < sip invite
        > remote_reinvite sendrecv
        < sip reply_reinvite 491
    ");
}

#[test]
fn mute_only_stops_the_agents_audio() {
    run(&format!(
        "{ANSWERED}
        > mute
        < media forward to_sip=false
        > unmute
        < media forward to_sip=true
        > remote_reinvite sendonly
        < media connect 127.0.0.1:4000 Pcmu te=101 hold
        < media forward to_sip=false
        < sip reply_reinvite 200 recvonly
        < browser held Remote
        > unmute
        < media forward to_sip=false
    "
    ));
}

#[test]
fn dtmf_follows_the_configured_mode() {
    run(&format!(
        "{ANSWERED}
        > dtmf 12#
        < media dtmf 12#
        > sip_dtmf 5
        < browser dtmf 5
        > media_dtmf 7
        < browser dtmf 7
    "
    ));
    DTMF_MODE.with(|m| m.set(DtmfMode::Both));
    run(&format!(
        "{ANSWERED}
        > dtmf 9*
        < media dtmf 9*
        < sip info 9
        < sip info *
    "
    ));
    DTMF_MODE.with(|m| m.set(DtmfMode::Info));
    run(&format!(
        "{ANSWERED}
        > dtmf 4
        < sip info 4
    "
    ));
    DTMF_MODE.with(|m| m.set(DtmfMode::Rfc4733));
    // A PBX that did not accept telephone-events gets INFO.
    run("
        < sip invite
        > sip_answered early
        < media connect 127.0.0.1:4002 Pcmu te=-
        < browser answered
        > dtmf 3
        < sip info 3
    ");
}

fn inbound(transcript: &str) {
    INBOUND.with(|i| i.set(true));
    run(transcript);
    INBOUND.with(|i| i.set(false));
}

#[test]
fn inbound_answered_then_caller_hangs_up() {
    inbound(
        "
        > hold
        < refused invalid_state
        > answer
        < media connect 127.0.0.1:4000 Pcmu te=101
        < sip accept ours
        > answer
        < refused invalid_state
        > sip_answered none
        < browser answered
        > +20s sip_remote_bye
        < media remove
        > media_released
        < browser ended remote normal_clearing sip=- answered=true
        < finished answered
        = done
    ",
    );
}

#[test]
fn inbound_rejected_cancelled_or_unanswered() {
    inbound(
        "
        > reject 603
        < sip reject 603
        < media remove
        < browser ended agent declined sip=603 answered=false
        < finished declined
        = done
    ",
    );
    inbound(
        "
        > +3s sip_caller_cancelled
        < media remove
        < browser ended remote cancelled sip=487 answered=false
        < finished cancelled
        = done
    ",
    );
    inbound(
        "
        > +29s timeout
        > +1s timeout
        < sip reject 480
        < media remove
        < browser ended gateway no_answer sip=480 answered=false
        < finished no_answer
        = done
    ",
    );
    inbound(
        "
        > session_closed
        < sip reject 480
        < media remove
        < browser ended agent websocket_closed sip=480 answered=false
        < finished websocket_closed
        = done
    ",
    );
}

#[test]
fn offerless_inbound_takes_the_answer_from_the_ack() {
    OFFERLESS.with(|o| o.set(true));
    inbound(
        "
        > answer
        < sip accept ours
        > sip_answered sdp
        < media connect 127.0.0.1:4000 Pcmu te=101
        < browser answered
    ",
    );
    inbound(
        "
        > answer
        < sip accept ours
        > sip_answered none
        < sip bye
        < media remove
        < browser ended gateway incompatible_media sip=- answered=false
        < finished incompatible_media
        = done
    ",
    );
    OFFERLESS.with(|o| o.set(false));
}

#[test]
fn inbound_never_acknowledged_is_ended() {
    inbound(
        "
        > answer
        < media connect 127.0.0.1:4000 Pcmu te=101
        < sip accept ours
        > +33s timeout
        < sip bye
        < media remove
        < browser ended gateway timeout sip=- answered=false
        < finished timeout
        = done
    ",
    );
}

#[test]
fn transfer_success_ends_the_call_and_failure_keeps_it() {
    run(&format!(
        "{ANSWERED}
        > transfer <sip:1003@pbx>
        < sip refer <sip:1003@pbx>
        > transfer <sip:1004@pbx>
        < refused invalid_state
        > refer_outcome 202
        > notify 100
        < browser transfer 100 done=false
        > notify 486 done
        < browser transfer 486 done=true
        > transfer <sip:1003@pbx>
        < sip refer <sip:1003@pbx>
        > refer_outcome 403
        < browser transfer 403 done=true
        > transfer <sip:1003@pbx>
        < sip refer <sip:1003@pbx>
        > refer_outcome 202
        > notify 200 done
        < browser transfer 200 done=true
        < sip bye
        < media remove
        > media_released
        < browser ended agent transferred sip=- answered=true
        < finished answered
        = done
    "
    ));
}

#[test]
fn session_timers_refresh_or_expire() {
    run(&format!(
        "{ANSWERED}
        > session_timer 90 uac
        > +44s timeout
        > +1s timeout
        < sip reinvite sendrecv
        > reinvite_outcome 200 sendrecv
        > +44s timeout
        > +1s timeout
        < sip reinvite sendrecv
        = alive
    "
    ));
    run(&format!(
        "{ANSWERED}
        > session_timer 90 uas
        > +50s session_refreshed
        > +50s timeout
        = alive
        > +10s timeout
        < sip bye
        < media remove
        > media_released
        < browser ended gateway timeout sip=- answered=true
        < finished answered
        = done
    "
    ));
}

mod srtp {
    use super::*;
    use crate::sdp::{MasterKey, Sdes, SrtpPolicy};
    use base64::Engine as _;

    const OURS: [MasterKey; 2] = [MasterKey([1; 30]), MasterKey([2; 30])];

    fn key_text(key: &MasterKey) -> String {
        base64::engine::general_purpose::STANDARD.encode(key.0)
    }

    fn srtp_call(policy: SrtpPolicy, now: Instant) -> Call {
        let offer = SipOffer {
            session_id: 1,
            version: 1,
            rtp: "127.0.0.1:30000".parse().expect("addr"),
            codecs: vec![G711::Pcmu],
            telephone_event: Some(SIP_TELEPHONE_EVENT_PT),
            direction: Direction::SendRecv,
            sdes: Sdes::new(policy, OURS),
        };
        let timers = CallTimers {
            ring_timeout: Duration::from_secs(60),
            cancel_guard: Duration::from_secs(32),
            dtmf_mode: DtmfMode::Rfc4733,
            answer_timeout: Duration::from_secs(30),
        };
        Call::outbound(CallId::new("c-1"), offer, now, timers)
    }

    fn drain(call: &mut Call) -> Vec<CallOutput> {
        std::iter::from_fn(|| call.poll_output()).collect()
    }

    fn savp(key: u8) -> String {
        let line = format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            key_text(&MasterKey([key; 30]))
        );
        ANSWER.replace("RTP/AVP", "RTP/SAVP") + &line
    }

    #[test]
    fn mandatory_call_answered_without_crypto_ends_with_srtp_required() {
        let now = crate::clock::now();
        let mut call = srtp_call(SrtpPolicy::Mandatory, now);
        let invite = drain(&mut call);
        assert!(
            matches!(&invite[..], [CallOutput::Sip(SipAction::Invite { sdp })] if sdp.contains("RTP/SAVP") && sdp.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32")),
            "{invite:?}"
        );
        call.handle_input(
            now,
            CallInput::SipAnswered {
                sdp: Some(ANSWER.to_string()),
            },
        );
        let out = drain(&mut call);
        assert!(matches!(out[0], CallOutput::Sip(SipAction::Bye)), "{out:?}");
        let ended = out.iter().find_map(|o| match o {
            CallOutput::Browser(ServerMessage::CallEnded(e)) => Some(e),
            _ => None,
        });
        let ended = ended.expect("call_ended");
        assert_eq!(ended.cause, "srtp_required");
        assert!(ended.reason.contains("a=crypto"), "{}", ended.reason);
        assert!(call.is_done());
    }

    #[test]
    fn reinvites_keep_our_key_and_follow_the_pbxs_new_key() {
        let now = crate::clock::now();
        let mut call = srtp_call(SrtpPolicy::Mandatory, now);
        drain(&mut call);
        call.handle_input(now, CallInput::SipAnswered { sdp: Some(savp(9)) });
        let out = drain(&mut call);
        let first = out
            .iter()
            .find_map(|o| match o {
                CallOutput::Media(MediaAction::Connect(a)) => a.srtp,
                _ => None,
            })
            .expect("a keyed Connect");
        assert_eq!((first.local, first.remote), (OURS[0], MasterKey([9; 30])));

        // Our hold re-INVITE restates only the negotiated line with our same key.
        assert!(call.request(now, AgentRequest::Hold).is_ok());
        let out = drain(&mut call);
        let sdp = out
            .iter()
            .find_map(|o| match o {
                CallOutput::Sip(SipAction::Reinvite { sdp, .. }) => Some(sdp.clone()),
                _ => None,
            })
            .expect("re-INVITE");
        assert_eq!(sdp.matches("a=crypto").count(), 1, "{sdp}");
        assert!(sdp.contains(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}",
            key_text(&OURS[0])
        )));
        call.handle_input(
            now,
            CallInput::SipReinviteOutcome {
                status: 200,
                sdp: Some(savp(9).replace("a=sendrecv", "") + "a=recvonly\r\n"),
            },
        );
        drain(&mut call);

        // The PBX re-keys in its own re-INVITE: we answer with our key, media gets theirs.
        call.handle_input(now, CallInput::SipRemoteReinvite { sdp: Some(savp(7)) });
        let out = drain(&mut call);
        let connect = out
            .iter()
            .find_map(|o| match o {
                CallOutput::Media(MediaAction::Connect(a)) => a.srtp,
                _ => None,
            })
            .expect("re-keyed Connect");
        assert_eq!(
            (connect.local, connect.remote),
            (OURS[0], MasterKey([7; 30]))
        );
        let reply = out
            .iter()
            .find_map(|o| match o {
                CallOutput::Sip(SipAction::ReplyReinvite { status: 200, sdp }) => sdp.clone(),
                _ => None,
            })
            .expect("200 with SDP");
        assert!(reply.contains("RTP/SAVP"), "{reply}");
        assert!(reply.contains(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}",
            key_text(&OURS[0])
        )));

        // A re-INVITE without crypto on a mandatory call is refused; the call goes on.
        call.handle_input(
            now,
            CallInput::SipRemoteReinvite {
                sdp: Some(ANSWER.to_string()),
            },
        );
        let out = drain(&mut call);
        assert!(
            matches!(
                &out[..],
                [CallOutput::Sip(SipAction::ReplyReinvite {
                    status: 488,
                    ..
                })]
            ),
            "{out:?}"
        );
        assert!(!call.is_done());
    }
}
