//! One outbound call as a pure state machine (design.md §2.1): inputs from the browser, the
//! SIP leg and the media core go in with the time they happened; browser messages, SIP
//! actions and media actions come out. No IO, no clock reads, no imports of edge modules.

mod cause;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use signaling::{
    CallAnswered, CallEarlyMedia, CallEnded, CallHold, CallRinging, DtmfReceived, EndedBy,
    ErrorCode, ErrorMessage, HoldBy, ServerMessage, TransferProgress,
};

pub use cause::{EndCause, Ending};

use crate::sdp::{Direction, SdpError, SipAnswer, SipOffer, read_sip_answer, read_sip_offer};

/// Gateway-assigned call identifier, shown to the browser and put on every log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(String);

impl CallId {
    /// Wraps an id chosen by the session (random, unguessable).
    pub fn new(id: impl Into<String>) -> CallId {
        CallId(id.into())
    }

    /// The wire form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Timers of the call machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimers {
    /// An unanswered call is cancelled after this long.
    pub ring_timeout: Duration,
    /// After CANCEL, how long to wait for the INVITE's final response before giving up
    /// (RFC 3261 Timer B/C territory).
    pub cancel_guard: Duration,
    /// How the agent's DTMF requests reach the PBX.
    pub dtmf_mode: DtmfMode,
    /// An inbound call the agent does not answer is refused with 480 after this long.
    pub answer_timeout: Duration,
}

/// How DTMF requested by the agent is sent to the PBX (configured per PBX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtmfMode {
    /// RFC 4733 telephone-events in the RTP stream (INFO when the PBX did not accept them).
    #[default]
    Rfc4733,
    /// SIP INFO `application/dtmf-relay`.
    Info,
    /// Both at once (for PBXs that listen to one or the other).
    Both,
}

/// Requests the agent makes on a call that may be refused for the call's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRequest {
    /// Re-INVITE sendonly.
    Hold,
    /// Re-INVITE sendrecv.
    Unhold,
    /// Stop relaying the agent's audio.
    Mute,
    /// Relay the agent's audio again.
    Unmute,
    /// Answer the ringing inbound call (the browser's SDP answer is already applied).
    Answer,
    /// Refuse the ringing inbound call with this SIP status.
    Reject {
        /// 486, 603 or 480.
        status: u16,
    },
    /// Transfer the far end (REFER); the session built the `Refer-To` value.
    Transfer {
        /// `<sip:…>` with an optional `?Replaces=` part.
        refer_to: String,
        /// `<sip:agent@domain>`.
        referred_by: String,
    },
    /// Send DTMF digits (already validated: `0-9 * # A-D`, 1-32 of them).
    Dtmf {
        /// The digits.
        digits: String,
        /// Tone length of each.
        duration: Duration,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error code for the browser.
    pub code: ErrorCode,
    /// The explanation.
    pub message: String,
}

fn refusal(message: impl Into<String>) -> Refusal {
    Refusal {
        code: ErrorCode::InvalidState,
        message: message.into(),
    }
}

impl Default for CallTimers {
    fn default() -> Self {
        CallTimers {
            ring_timeout: Duration::from_secs(120),
            cancel_guard: Duration::from_secs(32),
            dtmf_mode: DtmfMode::default(),
            answer_timeout: Duration::from_secs(60),
        }
    }
}

/// Something that happened to the call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallInput {
    /// The agent asked to hang up.
    BrowserHangup,
    /// The agent's WebSocket is gone.
    SessionClosed,
    /// The gateway is shutting down now.
    Shutdown,
    /// 101-199 from the PBX (100 Trying is not reported).
    SipProvisional {
        /// Status code.
        status: u16,
        /// SDP body, if any (early media).
        sdp: Option<String>,
    },
    /// 2xx to the INVITE; the SIP layer has ACKed it.
    SipAnswered {
        /// SDP body, if any.
        sdp: Option<String>,
    },
    /// A final failure response to the INVITE (3xx-6xx).
    SipFailed {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// The SIP transaction could not be completed (no route, transport error, timeout).
    SipUnreachable {
        /// What went wrong, for the browser and the log.
        reason: String,
    },
    /// The PBX sent BYE on the established dialog.
    SipRemoteBye,
    /// The browser leg's ICE and DTLS completed.
    MediaConnected,
    /// A media leg received nothing for the inactivity timeout.
    MediaInactive {
        /// Which leg went silent, e.g. `"webrtc"` or `"sip"`.
        leg: &'static str,
    },
    /// The browser leg failed (ICE disconnected for good, DTLS error).
    MediaFailed {
        /// What failed.
        reason: String,
    },
    /// The final response to our re-INVITE (hold/unhold).
    SipReinviteOutcome {
        /// Status code (0 when no response came at all).
        status: u16,
        /// SDP answer, if any.
        sdp: Option<String>,
    },
    /// The PBX re-INVITEd (hold, resume, media move); we must reply.
    SipRemoteReinvite {
        /// Its SDP offer, if any.
        sdp: Option<String>,
    },
    /// The PBX's ACK to our 2xx for its offer-less re-INVITE, carrying its answer to the
    /// offer that 2xx made (RFC 3264 §5; a third-party call control re-route, RFC 3725).
    SipReinviteAckAnswer {
        /// The SDP answer.
        sdp: String,
    },
    /// The caller cancelled the inbound INVITE.
    SipCallerCancelled,
    /// The 2xx negotiated a session timer (RFC 4028).
    SipSessionTimer {
        /// `Session-Expires`.
        interval: Duration,
        /// True when we are the refresher.
        we_refresh: bool,
    },
    /// The PBX refreshed the session (re-INVITE or UPDATE).
    SipSessionRefreshed,
    /// The media core's latest quality measurement of both legs.
    MediaQuality(signaling::CallQuality),
    /// The media core removed the call's bridge; its measurement of the whole call when the
    /// browser leg had connected.
    MediaReleased(Option<signaling::CallQuality>),
    /// The final response to our REFER (0 when none came).
    SipReferOutcome {
        /// Status code.
        status: u16,
    },
    /// A NOTIFY about our REFER.
    SipTransferProgress {
        /// The transfer target's status.
        status: u16,
        /// The last report.
        done: bool,
    },
    /// A DTMF digit in a SIP INFO.
    SipDtmf {
        /// The digit.
        digit: char,
    },
    /// A DTMF digit in RFC 4733 events from the PBX.
    MediaDtmf {
        /// The digit.
        digit: char,
    },
    /// A deadline returned by [`Call::poll_timeout`] passed.
    Timeout,
}

/// A request to the SIP leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipAction {
    /// Send the INVITE with this offer.
    Invite {
        /// The SDP offer body.
        sdp: String,
    },
    /// CANCEL the pending INVITE.
    Cancel,
    /// BYE the established dialog.
    Bye,
    /// Send a re-INVITE with this offer.
    Reinvite {
        /// The SDP offer body.
        sdp: String,
        /// `Session-Expires` to restate while a session timer runs (RFC 4028 §7.4).
        session_expires: Option<u32>,
    },
    /// Reply to the PBX's re-INVITE.
    ReplyReinvite {
        /// Status code.
        status: u16,
        /// SDP answer for a 2xx.
        sdp: Option<String>,
    },
    /// Send a REFER.
    Refer {
        /// `Refer-To` value.
        refer_to: String,
        /// `Referred-By` value.
        referred_by: String,
    },
    /// Answer the inbound INVITE with 200 OK.
    Accept {
        /// Our SDP (answer to the PBX's offer, or our offer for an offer-less INVITE).
        sdp: String,
    },
    /// Refuse the inbound INVITE.
    Reject {
        /// Final status.
        status: u16,
    },
    /// Send one DTMF digit as SIP INFO.
    Info {
        /// The digit.
        digit: char,
        /// Tone length in milliseconds.
        duration_ms: u32,
    },
}

/// A request to the media core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaAction {
    /// Start (or re-point) forwarding to the PBX's RTP endpoint.
    Connect(SipAnswer),
    /// Relay the agent's audio to the PBX or not (hold, mute, held by the PBX).
    Forward {
        /// Whether browser audio goes to the PBX.
        to_sip: bool,
    },
    /// Inject RFC 4733 events towards the PBX.
    Dtmf {
        /// The digits.
        digits: String,
        /// Tone length of each.
        duration: Duration,
    },
    /// Tear the bridge down and release its ports.
    Remove,
}

/// What the call wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutput {
    /// Send to the browser.
    Browser(ServerMessage),
    /// Ask the SIP leg.
    Sip(SipAction),
    /// Ask the media core.
    Media(MediaAction),
    /// The call is over for the browser: record it (emitted exactly once).
    Finished(CallRecord),
}

/// The outcome of a call, for metrics and the final log line.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// How it ended.
    pub ending: Ending,
    /// Time from the `call` request to the answer or the final failure, if one came.
    pub setup: Option<Duration>,
    /// Talk time, if answered.
    pub talk: Option<Duration>,
    /// Media quality of an answered call.
    pub quality: Option<signaling::CallQuality>,
}

impl CallRecord {
    /// The `callgate_calls_total{result}` label.
    pub fn result_label(&self) -> &'static str {
        if self.talk.is_some() {
            "answered"
        } else {
            self.ending.cause.as_str()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// INVITE sent, no provisional response beyond 100 yet.
    Inviting { ring_deadline: Instant },
    /// 18x received.
    Ringing {
        ring_deadline: Instant,
        early_media: bool,
    },
    /// Inbound: `incoming_call` sent, waiting for the agent.
    Offered { answer_deadline: Instant },
    /// Inbound: 200 OK sent, waiting for the ACK.
    Accepting { guard_deadline: Instant },
    /// 200 received and ACKed.
    Answered { answered_at: Instant, talk: Talk },
    /// The browser has been told the call ended; the CANCEL awaits the INVITE's final
    /// response so a 2xx racing it can still be ended with BYE.
    Cancelling { guard_deadline: Instant },
    /// Nothing left to do; the owner drops the value.
    Done,
}

/// Mid-call state: only an answered call has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Talk {
    agent_hold: bool,
    remote_hold: bool,
    muted: bool,
    /// Our re-INVITE in flight.
    pending: Option<Pending>,
    /// A re-INVITE to resend after a 491 (RFC 3261 §14.1).
    retry: Option<(Instant, Pending)>,
    glare_count: u32,
    /// A REFER of ours is in progress.
    transferring: bool,
    /// The negotiated session timer, if any.
    timer: Option<SessionTimer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Hold,
    Unhold,
    /// A session refresh (RFC 4028): same SDP, new version.
    Refresh,
}

/// RFC 4028 session timer of an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    due: Instant,
}

impl SessionTimer {
    fn next_due(interval: Duration, we_refresh: bool, now: Instant) -> Instant {
        if we_refresh {
            now + interval / 2
        } else {
            // RFC 4028 §10: BYE at expiry minus min(32 s, interval / 3) without a refresh.
            now + interval - (interval / 3).min(Duration::from_secs(32))
        }
    }
}

impl Talk {
    fn forward_to_sip(&self) -> bool {
        !self.agent_hold && !self.muted && !self.remote_hold
    }
}

/// A call's state as a resuming browser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeView {
    /// Where it stands.
    pub state: signaling::ResumedCallState,
    /// The agent holds it.
    pub held: bool,
    /// The far end holds it.
    pub remote_held: bool,
    /// The agent's audio is muted.
    pub muted: bool,
}

/// One outbound call.
#[derive(Debug)]
pub struct Call {
    id: CallId,
    state: State,
    created_at: Instant,
    setup: Option<Duration>,
    timers: CallTimers,
    offer: SipOffer,
    media: Option<SipAnswer>,
    /// The latest quality report from the media core.
    quality: Option<signaling::CallQuality>,
    /// An answered call that ended and waits for the media core's final measurement before
    /// it tells the browser and records the outcome (boxed: rare, and every agent's call
    /// slot would pay for it inline).
    closing: Option<Box<Closing>>,
    /// False once the session is closing or the gateway stopping: nothing waits then.
    may_wait_for_media: bool,
    outputs: VecDeque<CallOutput>,
}

/// The end of an answered call, held until its bridge's final quality arrives.
#[derive(Debug)]
struct Closing {
    ending: Ending,
    talk: Duration,
    deadline: Instant,
}

/// How long an ended call waits for its bridge's final measurement (normally one round trip
/// to the media worker, well under a millisecond) before it reports the last periodic one.
pub const FINAL_QUALITY_WAIT: Duration = Duration::from_millis(200);

impl Call {
    /// Starts an outbound call: the first output is the INVITE.
    pub fn outbound(id: CallId, offer: SipOffer, now: Instant, timers: CallTimers) -> Call {
        let mut outputs = VecDeque::new();
        outputs.push_back(CallOutput::Sip(SipAction::Invite {
            sdp: offer.render(),
        }));
        Call {
            id,
            state: State::Inviting {
                ring_deadline: now + timers.ring_timeout,
            },
            created_at: now,
            setup: None,
            timers,
            offer,
            media: None,
            quality: None,
            closing: None,
            may_wait_for_media: true,
            outputs,
        }
    }

    /// Starts an inbound call offered to the agent. `remote` is the PBX's SDP offer when the
    /// INVITE carried one; `local` describes our SIP-leg media (the codec the browser leg uses).
    pub fn inbound(
        id: CallId,
        remote: Option<SipAnswer>,
        local: SipOffer,
        now: Instant,
        timers: CallTimers,
    ) -> Call {
        Call {
            id,
            state: State::Offered {
                answer_deadline: now + timers.answer_timeout,
            },
            created_at: now,
            setup: None,
            timers,
            offer: local,
            media: remote,
            quality: None,
            closing: None,
            may_wait_for_media: true,
            outputs: VecDeque::new(),
        }
    }

    /// The call's id.
    pub fn id(&self) -> &CallId {
        &self.id
    }

    /// True once the browser has been answered or failed (the call counts as set up).
    pub fn is_answered(&self) -> bool {
        matches!(self.state, State::Answered { .. })
    }

    /// Where the call stands for a browser resuming its session (`welcome.resumed`); `None`
    /// for a call that is already ending.
    pub fn resume_view(&self) -> Option<ResumeView> {
        let plain = |state| ResumeView {
            state,
            held: false,
            remote_held: false,
            muted: false,
        };
        match &self.state {
            State::Inviting { .. } | State::Ringing { .. } => {
                Some(plain(signaling::ResumedCallState::Calling))
            }
            State::Offered { .. } => Some(plain(signaling::ResumedCallState::Incoming)),
            State::Accepting { .. } => Some(plain(signaling::ResumedCallState::Answering)),
            State::Answered { talk, .. } => Some(ResumeView {
                state: signaling::ResumedCallState::Answered,
                held: talk.agent_hold,
                remote_held: talk.remote_hold,
                muted: talk.muted,
            }),
            State::Cancelling { .. } | State::Done => None,
        }
    }

    /// True once the call has ended, even while its final report still waits for the media
    /// worker's measurement: such a call no longer occupies the agent (busy, call limits).
    pub fn is_over(&self) -> bool {
        self.state == State::Done
    }

    /// True when the value can be dropped: nothing more will happen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.outputs.is_empty() && self.closing.is_none()
    }

    /// Feeds one input. Inputs that make no sense in the current state are ignored (a late
    /// SIP retransmission or media event must never disturb a call).
    pub fn handle_input(&mut self, now: Instant, input: CallInput) {
        if matches!(input, CallInput::SessionClosed | CallInput::Shutdown) {
            self.may_wait_for_media = false;
        }
        match (&self.state, input) {
            (State::Done, CallInput::MediaReleased(quality)) if self.closing.is_some() => {
                if quality.is_some() {
                    self.quality = quality;
                }
                self.report_end();
            }
            (State::Done, CallInput::SessionClosed | CallInput::Shutdown)
                if self.closing.is_some() =>
            {
                self.report_end();
            }
            (State::Done, CallInput::Timeout)
                if self.closing.as_ref().is_some_and(|c| now >= c.deadline) =>
            {
                self.report_end();
            }
            (State::Done, _) => {}
            (_, CallInput::MediaQuality(quality)) => self.quality = Some(quality),

            // ---- inbound, before the agent answers
            (State::Offered { .. }, CallInput::BrowserHangup) => {
                self.reject(
                    now,
                    603,
                    EndedBy::Agent,
                    EndCause::Declined,
                    "the agent declined the call",
                );
            }
            (State::Offered { .. }, CallInput::SessionClosed) => {
                self.reject(
                    now,
                    480,
                    EndedBy::Agent,
                    EndCause::WebsocketClosed,
                    "the agent's connection closed",
                );
            }
            (State::Offered { .. }, CallInput::Shutdown) => {
                self.reject(
                    now,
                    480,
                    EndedBy::Gateway,
                    EndCause::Shutdown,
                    "callgate is shutting down",
                );
            }
            (State::Offered { answer_deadline }, CallInput::Timeout) if now >= *answer_deadline => {
                self.reject(
                    now,
                    480,
                    EndedBy::Gateway,
                    EndCause::NoAnswer,
                    "the agent did not answer in time",
                );
            }
            (State::Offered { .. } | State::Accepting { .. }, CallInput::SipCallerCancelled) => {
                self.finish(
                    now,
                    Ending {
                        by: EndedBy::Remote,
                        cause: EndCause::Cancelled,
                        sip_status: Some(487),
                        reason: "the caller hung up".into(),
                    },
                );
            }
            (State::Accepting { .. }, CallInput::SipAnswered { sdp }) => {
                if self.media.is_none() {
                    // Offer-less INVITE: the PBX's answer to our offer rides the ACK.
                    match sdp
                        .as_deref()
                        .map(|text| read_sip_answer(text, &self.offer))
                    {
                        Some(Ok(answer)) => self.connect_media(answer),
                        _ => {
                            self.outputs.push_back(CallOutput::Sip(SipAction::Bye));
                            self.finish(
                                now,
                                Ending {
                                    by: EndedBy::Gateway,
                                    cause: EndCause::IncompatibleMedia,
                                    sip_status: None,
                                    reason: "the ACK carried no usable SDP answer".into(),
                                },
                            );
                            return;
                        }
                    }
                }
                let remote_hold = self
                    .media
                    .as_ref()
                    .is_some_and(|m| m.direction.blocks_sending_to_author());
                self.state = State::Answered {
                    answered_at: now,
                    talk: Talk {
                        remote_hold,
                        ..Talk::default()
                    },
                };
                self.tell_browser(ServerMessage::CallAnswered(CallAnswered {
                    call_id: self.id.to_string(),
                }));
            }
            (State::Accepting { guard_deadline }, CallInput::Timeout) if now >= *guard_deadline => {
                self.bye(
                    now,
                    EndedBy::Gateway,
                    EndCause::Timeout,
                    "the PBX never acknowledged the answer",
                );
            }
            (
                State::Accepting { .. },
                CallInput::BrowserHangup | CallInput::SessionClosed | CallInput::Shutdown,
            ) => {
                self.bye(
                    now,
                    EndedBy::Agent,
                    EndCause::NormalClearing,
                    "the agent hung up",
                );
            }
            (State::Accepting { .. }, CallInput::SipRemoteBye) => {
                self.finish(
                    now,
                    Ending {
                        by: EndedBy::Remote,
                        cause: EndCause::NormalClearing,
                        sip_status: None,
                        reason: "the far end hung up".into(),
                    },
                );
            }
            (
                State::Accepting { .. } | State::Offered { .. },
                CallInput::SipUnreachable { reason },
            ) => {
                self.finish(
                    now,
                    Ending {
                        by: EndedBy::Gateway,
                        cause: EndCause::Unreachable,
                        sip_status: None,
                        reason,
                    },
                );
            }
            (State::Accepting { .. }, CallInput::MediaInactive { leg }) => {
                let why = format!("no media received on the {leg} leg");
                self.bye(now, EndedBy::Gateway, EndCause::MediaTimeout, &why);
            }
            (State::Accepting { .. }, CallInput::MediaFailed { reason }) => {
                self.bye(now, EndedBy::Gateway, EndCause::MediaFailed, &reason);
            }

            // ---- provisional responses
            (
                State::Inviting { ring_deadline } | State::Ringing { ring_deadline, .. },
                CallInput::SipProvisional { status, sdp },
            ) => {
                let ring_deadline = *ring_deadline;
                let was_early = matches!(
                    self.state,
                    State::Ringing {
                        early_media: true,
                        ..
                    }
                );
                let was_ringing = matches!(self.state, State::Ringing { .. });
                let early = sdp
                    .as_deref()
                    .and_then(|s| read_sip_answer(s, &self.offer).ok());
                if let Some(answer) = early {
                    self.connect_media(answer);
                    self.state = State::Ringing {
                        ring_deadline,
                        early_media: true,
                    };
                    if !was_early {
                        self.tell_browser(ServerMessage::CallEarlyMedia(CallEarlyMedia {
                            call_id: self.id.to_string(),
                            sip_status: status,
                        }));
                    }
                } else {
                    self.state = State::Ringing {
                        ring_deadline,
                        early_media: was_early,
                    };
                    if !was_ringing {
                        self.tell_browser(ServerMessage::CallRinging(CallRinging {
                            call_id: self.id.to_string(),
                            sip_status: status,
                        }));
                    }
                }
            }

            // ---- answer
            (State::Inviting { .. } | State::Ringing { .. }, CallInput::SipAnswered { sdp }) => {
                self.setup = Some(now - self.created_at);
                let answer = match sdp.as_deref() {
                    Some(text) => read_sip_answer(text, &self.offer),
                    None => self.media.clone().ok_or(SdpError::NoAudio),
                };
                match answer {
                    Ok(answer) => {
                        let remote_hold = answer.direction.blocks_sending_to_author();
                        self.connect_media(answer);
                        let talk = Talk {
                            remote_hold,
                            ..Talk::default()
                        };
                        if remote_hold {
                            self.outputs
                                .push_back(CallOutput::Media(MediaAction::Forward {
                                    to_sip: false,
                                }));
                        }
                        self.state = State::Answered {
                            answered_at: now,
                            talk,
                        };
                        self.tell_browser(ServerMessage::CallAnswered(CallAnswered {
                            call_id: self.id.to_string(),
                        }));
                    }
                    Err(why) => {
                        let cause = if why == SdpError::NoCrypto {
                            EndCause::SrtpRequired
                        } else {
                            EndCause::IncompatibleMedia
                        };
                        let why = match (why, sdp.is_some()) {
                            (SdpError::NoAudio, false) => "2xx without SDP answer".to_string(),
                            (why, _) => why.to_string(),
                        };
                        self.outputs.push_back(CallOutput::Sip(SipAction::Bye));
                        self.finish(
                            now,
                            Ending {
                                by: EndedBy::Gateway,
                                cause,
                                sip_status: None,
                                reason: format!("unusable SDP answer from the PBX: {why}"),
                            },
                        );
                    }
                }
            }
            (State::Cancelling { .. }, CallInput::SipAnswered { .. }) => {
                // The 2xx crossed our CANCEL: the dialog exists, end it.
                self.outputs.push_back(CallOutput::Sip(SipAction::Bye));
                self.state = State::Done;
            }

            // ---- failures before answer
            (
                State::Inviting { .. } | State::Ringing { .. },
                CallInput::SipFailed { status, reason },
            ) => {
                self.setup = Some(now - self.created_at);
                self.finish(
                    now,
                    Ending {
                        by: EndedBy::Remote,
                        cause: EndCause::from_sip_status(status),
                        sip_status: Some(status),
                        reason,
                    },
                );
            }
            (
                State::Inviting { .. } | State::Ringing { .. },
                CallInput::SipUnreachable { reason },
            ) => {
                self.finish(
                    now,
                    Ending {
                        by: EndedBy::Gateway,
                        cause: EndCause::Unreachable,
                        sip_status: None,
                        reason,
                    },
                );
            }
            (
                State::Cancelling { .. },
                CallInput::SipFailed { .. } | CallInput::SipUnreachable { .. },
            ) => {
                self.state = State::Done;
            }
            (State::Cancelling { guard_deadline }, CallInput::Timeout)
                if now >= *guard_deadline =>
            {
                self.state = State::Done;
            }

            // ---- the agent ends the call
            (State::Inviting { .. } | State::Ringing { .. }, CallInput::BrowserHangup) => {
                self.cancel(
                    now,
                    EndedBy::Agent,
                    EndCause::Cancelled,
                    "the agent hung up",
                );
            }
            (State::Inviting { .. } | State::Ringing { .. }, CallInput::SessionClosed) => {
                self.cancel(
                    now,
                    EndedBy::Agent,
                    EndCause::WebsocketClosed,
                    "the agent's connection closed",
                );
            }
            (State::Inviting { .. } | State::Ringing { .. }, CallInput::Shutdown) => {
                self.cancel(
                    now,
                    EndedBy::Gateway,
                    EndCause::Shutdown,
                    "callgate is shutting down",
                );
            }
            (State::Answered { .. }, CallInput::BrowserHangup) => {
                self.bye(
                    now,
                    EndedBy::Agent,
                    EndCause::NormalClearing,
                    "the agent hung up",
                );
            }
            (State::Answered { .. }, CallInput::SessionClosed) => {
                self.bye(
                    now,
                    EndedBy::Agent,
                    EndCause::WebsocketClosed,
                    "the agent's connection closed",
                );
            }
            (State::Answered { .. }, CallInput::Shutdown) => {
                self.bye(
                    now,
                    EndedBy::Gateway,
                    EndCause::Shutdown,
                    "callgate is shutting down",
                );
            }

            // ---- the far end ends the call
            (State::Answered { .. }, CallInput::SipRemoteBye) => {
                self.finish(
                    now,
                    Ending {
                        by: EndedBy::Remote,
                        cause: EndCause::NormalClearing,
                        sip_status: None,
                        reason: "the far end hung up".into(),
                    },
                );
            }
            (State::Answered { .. }, CallInput::SipUnreachable { reason }) => {
                self.finish(
                    now,
                    Ending {
                        by: EndedBy::Gateway,
                        cause: EndCause::Unreachable,
                        sip_status: None,
                        reason,
                    },
                );
            }

            // ---- media
            (State::Inviting { .. } | State::Ringing { .. }, CallInput::MediaInactive { leg }) => {
                let why = format!("no media received on the {leg} leg");
                self.cancel(now, EndedBy::Gateway, EndCause::MediaTimeout, &why);
            }
            (State::Answered { .. }, CallInput::MediaInactive { leg }) => {
                let why = format!("no media received on the {leg} leg");
                self.bye(now, EndedBy::Gateway, EndCause::MediaTimeout, &why);
            }
            (State::Inviting { .. } | State::Ringing { .. }, CallInput::MediaFailed { reason }) => {
                self.cancel(now, EndedBy::Gateway, EndCause::MediaFailed, &reason);
            }
            (State::Answered { .. }, CallInput::MediaFailed { reason }) => {
                self.bye(now, EndedBy::Gateway, EndCause::MediaFailed, &reason);
            }

            // ---- timers
            (
                State::Inviting { ring_deadline } | State::Ringing { ring_deadline, .. },
                CallInput::Timeout,
            ) if now >= *ring_deadline => {
                self.cancel(
                    now,
                    EndedBy::Gateway,
                    EndCause::NoAnswer,
                    "no answer before the ring timeout",
                );
            }

            // ---- mid-call
            (State::Answered { .. }, CallInput::SipReinviteOutcome { status, sdp }) => {
                self.on_reinvite_outcome(now, status, sdp);
            }
            (State::Answered { .. }, CallInput::SipReferOutcome { status })
                if !(200..300).contains(&status) =>
            {
                if let State::Answered { talk, .. } = &mut self.state {
                    talk.transferring = false;
                }
                self.tell_browser(ServerMessage::TransferProgress(TransferProgress {
                    call_id: self.id.to_string(),
                    sip_status: if status == 0 { 408 } else { status },
                    done: true,
                }));
            }
            (State::Answered { talk, .. }, CallInput::SipTransferProgress { status, done })
                if talk.transferring =>
            {
                self.tell_browser(ServerMessage::TransferProgress(TransferProgress {
                    call_id: self.id.to_string(),
                    sip_status: status,
                    done,
                }));
                if done && (200..300).contains(&status) {
                    self.bye(
                        now,
                        EndedBy::Agent,
                        EndCause::Transferred,
                        "the call was transferred",
                    );
                } else if done && let State::Answered { talk, .. } = &mut self.state {
                    talk.transferring = false;
                }
            }
            (
                State::Answered { .. },
                CallInput::SipSessionTimer {
                    interval,
                    we_refresh,
                },
            ) => {
                if let State::Answered { talk, .. } = &mut self.state {
                    talk.timer = Some(SessionTimer {
                        interval,
                        we_refresh,
                        due: SessionTimer::next_due(interval, we_refresh, now),
                    });
                }
            }
            (State::Answered { .. }, CallInput::SipSessionRefreshed) => self.remote_refreshed(now),
            (State::Answered { talk, .. }, CallInput::Timeout)
                if talk.timer.is_some_and(|t| now >= t.due) =>
            {
                self.session_timer_due(now);
            }
            (State::Answered { .. }, CallInput::SipRemoteReinvite { sdp }) => {
                self.remote_refreshed(now);
                self.on_remote_reinvite(sdp);
            }
            (State::Answered { .. }, CallInput::SipReinviteAckAnswer { sdp }) => {
                self.on_reinvite_ack_answer(&sdp);
            }
            (_, CallInput::SipReinviteAckAnswer { .. }) => {}
            (_, CallInput::SipRemoteReinvite { .. }) => {
                // Not established (or already ending): the re-INVITE cannot be honoured.
                self.outputs
                    .push_back(CallOutput::Sip(SipAction::ReplyReinvite {
                        status: 491,
                        sdp: None,
                    }));
            }
            (
                State::Answered { .. }
                | State::Ringing {
                    early_media: true, ..
                },
                CallInput::SipDtmf { digit } | CallInput::MediaDtmf { digit },
            ) => {
                self.tell_browser(ServerMessage::DtmfReceived(DtmfReceived {
                    call_id: self.id.to_string(),
                    digit: digit.to_string(),
                }));
            }
            (State::Answered { talk, .. }, CallInput::Timeout)
                if talk.retry.is_some_and(|(at, _)| now >= at) =>
            {
                if let State::Answered { talk, .. } = &mut self.state
                    && let Some((_, pending)) = talk.retry.take()
                {
                    self.send_reinvite(pending);
                }
            }

            // Everything else (late retransmissions, duplicate events, MediaConnected) is
            // informational or stale.
            _ => {}
        }
    }

    /// Next thing to do, if any. Drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.outputs.pop_front()
    }

    /// When [`CallInput::Timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Inviting { ring_deadline } | State::Ringing { ring_deadline, .. } => {
                Some(ring_deadline)
            }
            State::Cancelling { guard_deadline } => Some(guard_deadline),
            State::Offered { answer_deadline } => Some(answer_deadline),
            State::Accepting { guard_deadline } => Some(guard_deadline),
            State::Answered { ref talk, .. } => {
                match (talk.retry.map(|(at, _)| at), talk.timer.map(|t| t.due)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Done => self.closing.as_ref().map(|c| c.deadline),
        }
    }

    /// An agent request about this call; refused when the call's state does not allow it.
    pub fn request(&mut self, now: Instant, request: AgentRequest) -> Result<(), Refusal> {
        match (&self.state, &request) {
            (State::Offered { .. }, AgentRequest::Answer) => {
                self.setup = Some(now - self.created_at);
                let sdp = self.offer.render();
                if let Some(remote) = self.media.clone() {
                    self.outputs
                        .push_back(CallOutput::Media(MediaAction::Connect(remote.clone())));
                    if remote.direction.blocks_sending_to_author() {
                        self.outputs
                            .push_back(CallOutput::Media(MediaAction::Forward { to_sip: false }));
                    }
                }
                self.outputs
                    .push_back(CallOutput::Sip(SipAction::Accept { sdp }));
                self.state = State::Accepting {
                    guard_deadline: now + self.timers.cancel_guard,
                };
                return Ok(());
            }
            (State::Offered { .. }, AgentRequest::Reject { status }) => {
                let status = *status;
                self.outputs
                    .push_back(CallOutput::Sip(SipAction::Reject { status }));
                self.finish(
                    now,
                    Ending {
                        by: EndedBy::Agent,
                        cause: EndCause::from_sip_status(status),
                        sip_status: Some(status),
                        reason: "the agent refused the call".into(),
                    },
                );
                return Ok(());
            }
            (_, AgentRequest::Answer | AgentRequest::Reject { .. }) => {
                return Err(refusal("no incoming call is ringing"));
            }
            _ => {}
        }
        let State::Answered { talk, .. } = &mut self.state else {
            return Err(refusal("the call is not answered"));
        };
        match request {
            AgentRequest::Hold | AgentRequest::Unhold
                if talk.pending.is_some() || talk.retry.is_some() =>
            {
                Err(refusal("a hold or resume is already in progress"))
            }
            AgentRequest::Hold if talk.agent_hold => Err(refusal("the call is already on hold")),
            AgentRequest::Unhold if !talk.agent_hold => Err(refusal("the call is not on hold")),
            AgentRequest::Hold => {
                talk.pending = Some(Pending::Hold);
                self.outputs
                    .push_back(CallOutput::Media(MediaAction::Forward { to_sip: false }));
                self.send_reinvite(Pending::Hold);
                Ok(())
            }
            AgentRequest::Unhold => {
                talk.pending = Some(Pending::Unhold);
                self.send_reinvite(Pending::Unhold);
                Ok(())
            }
            AgentRequest::Mute | AgentRequest::Unmute => {
                talk.muted = request == AgentRequest::Mute;
                let to_sip = talk.forward_to_sip();
                self.outputs
                    .push_back(CallOutput::Media(MediaAction::Forward { to_sip }));
                Ok(())
            }
            AgentRequest::Answer | AgentRequest::Reject { .. } => {
                Err(refusal("no incoming call is ringing"))
            }
            AgentRequest::Transfer { .. } if talk.transferring => {
                Err(refusal("a transfer is already in progress"))
            }
            AgentRequest::Transfer {
                refer_to,
                referred_by,
            } => {
                talk.transferring = true;
                self.outputs.push_back(CallOutput::Sip(SipAction::Refer {
                    refer_to,
                    referred_by,
                }));
                Ok(())
            }
            AgentRequest::Dtmf { digits, duration } => {
                let events_accepted = self
                    .media
                    .as_ref()
                    .is_some_and(|m| m.telephone_event.is_some());
                let (rtp, info) = match self.timers.dtmf_mode {
                    DtmfMode::Rfc4733 if events_accepted => (true, false),
                    DtmfMode::Rfc4733 | DtmfMode::Info => (false, true),
                    DtmfMode::Both => (events_accepted, true),
                };
                if rtp {
                    self.outputs.push_back(CallOutput::Media(MediaAction::Dtmf {
                        digits: digits.clone(),
                        duration,
                    }));
                }
                if info {
                    let duration_ms = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
                    for digit in digits.chars() {
                        self.outputs
                            .push_back(CallOutput::Sip(SipAction::Info { digit, duration_ms }));
                    }
                }
                Ok(())
            }
        }
    }

    fn remote_refreshed(&mut self, now: Instant) {
        if let State::Answered { talk, .. } = &mut self.state
            && let Some(timer) = talk.timer.as_mut()
            && !timer.we_refresh
        {
            timer.due = SessionTimer::next_due(timer.interval, false, now);
        }
    }

    fn session_timer_due(&mut self, now: Instant) {
        let State::Answered { talk, .. } = &mut self.state else {
            return;
        };
        let Some(timer) = talk.timer.as_mut() else {
            return;
        };
        if !timer.we_refresh {
            self.bye(
                now,
                EndedBy::Gateway,
                EndCause::Timeout,
                "the session expired: the PBX did not refresh it",
            );
            return;
        }
        if talk.pending.is_some() || talk.retry.is_some() {
            // A re-INVITE in flight refreshes the session too; look again shortly.
            timer.due = now + Duration::from_secs(1);
            return;
        }
        timer.due = now + timer.interval / 2;
        self.send_reinvite(Pending::Refresh);
    }

    fn send_reinvite(&mut self, pending: Pending) {
        self.offer.version += 1;
        let holding = matches!(&self.state, State::Answered { talk, .. } if talk.agent_hold);
        self.offer.direction = match pending {
            Pending::Hold => Direction::SendOnly,
            Pending::Unhold => Direction::SendRecv,
            Pending::Refresh if holding => Direction::SendOnly,
            Pending::Refresh => Direction::SendRecv,
        };
        if let State::Answered { talk, .. } = &mut self.state {
            talk.pending = Some(pending);
        }
        let session_expires = match &self.state {
            State::Answered { talk, .. } => talk
                .timer
                .map(|t| u32::try_from(t.interval.as_secs()).unwrap_or(u32::MAX)),
            _ => None,
        };
        self.outputs.push_back(CallOutput::Sip(SipAction::Reinvite {
            sdp: self.offer.render(),
            session_expires,
        }));
    }

    fn on_reinvite_outcome(&mut self, now: Instant, status: u16, sdp: Option<String>) {
        let State::Answered { talk, .. } = &mut self.state else {
            return;
        };
        let Some(pending) = talk.pending.take() else {
            return;
        };
        match status {
            200..=299 if pending == Pending::Refresh => {
                if let Some(timer) = talk.timer.as_mut() {
                    timer.due = now + timer.interval / 2;
                }
                if let Some(answer) = sdp
                    .as_deref()
                    .and_then(|text| read_sip_answer(text, &self.offer).ok())
                {
                    self.connect_media(answer);
                }
            }
            _ if pending == Pending::Refresh && !matches!(status, 0 | 408 | 481 | 491) => {
                // A refused refresh leaves the session as it was; the next one is due as usual.
            }
            200..=299 => {
                talk.agent_hold = pending == Pending::Hold;
                let to_sip = talk.forward_to_sip();
                let answer = sdp
                    .as_deref()
                    .and_then(|text| read_sip_answer(text, &self.offer).ok());
                if let Some(answer) = answer {
                    self.connect_media(answer);
                }
                self.outputs
                    .push_back(CallOutput::Media(MediaAction::Forward { to_sip }));
                let event = CallHold {
                    call_id: self.id.to_string(),
                    by: HoldBy::Agent,
                };
                self.tell_browser(match pending {
                    Pending::Hold => ServerMessage::CallHeld(event),
                    Pending::Unhold | Pending::Refresh => ServerMessage::CallResumed(event),
                });
            }
            491 => {
                // Glare: retry after 2.1-4 s (RFC 3261 §14.1), spread by call and attempt.
                talk.glare_count += 1;
                let spread = (self.id.as_str().bytes().map(u64::from).sum::<u64>() * 131
                    + u64::from(talk.glare_count) * 617)
                    % 1900;
                talk.retry = Some((now + Duration::from_millis(2100 + spread), pending));
            }
            0 | 408 | 481 => {
                // The dialog is gone (RFC 3261 §14.1): end the call.
                self.outputs.push_back(CallOutput::Sip(SipAction::Bye));
                self.finish(
                    now,
                    Ending {
                        by: EndedBy::Gateway,
                        cause: EndCause::Timeout,
                        sip_status: (status != 0).then_some(status),
                        reason: "the PBX stopped answering in-dialog requests".into(),
                    },
                );
            }
            _ => {
                // Refused: the session stays as it was before the request.
                self.offer.version += 1;
                self.offer.direction = if talk.agent_hold {
                    Direction::SendOnly
                } else {
                    Direction::SendRecv
                };
                let to_sip = talk.forward_to_sip();
                self.outputs
                    .push_back(CallOutput::Media(MediaAction::Forward { to_sip }));
                let what = if pending == Pending::Hold {
                    "hold"
                } else {
                    "resume"
                };
                self.tell_browser(ServerMessage::Error(ErrorMessage {
                    request_id: None,
                    call_id: Some(self.id.to_string()),
                    code: ErrorCode::InvalidState,
                    message: format!("the PBX refused to {what} the call ({status})"),
                }));
            }
        }
    }

    fn on_remote_reinvite(&mut self, sdp: Option<String>) {
        let State::Answered { talk, .. } = &mut self.state else {
            return;
        };
        if talk.pending.is_some() {
            self.outputs
                .push_back(CallOutput::Sip(SipAction::ReplyReinvite {
                    status: 491,
                    sdp: None,
                }));
            return;
        }
        let Some(text) = sdp else {
            // Offer-less re-INVITE: offer our current session; the answer rides the ACK.
            self.offer.version += 1;
            let sdp = Some(self.offer.render());
            self.outputs
                .push_back(CallOutput::Sip(SipAction::ReplyReinvite {
                    status: 200,
                    sdp,
                }));
            return;
        };
        let Ok(remote) = read_sip_offer(&text, &mut self.offer) else {
            self.outputs
                .push_back(CallOutput::Sip(SipAction::ReplyReinvite {
                    status: 488,
                    sdp: None,
                }));
            return;
        };
        self.offer.version += 1;
        self.offer.direction = Direction::answer_to(remote.direction, talk.agent_hold);
        let sdp = Some(self.offer.render());
        let hold_change = self.apply_remote_session(remote);
        self.outputs
            .push_back(CallOutput::Sip(SipAction::ReplyReinvite {
                status: 200,
                sdp,
            }));
        if let Some(message) = hold_change {
            self.tell_browser(message);
        }
    }

    /// The answer to the offer our 2xx made for an offer-less re-INVITE. An ACK cannot be
    /// refused: an unusable answer leaves the media as it was.
    fn on_reinvite_ack_answer(&mut self, text: &str) {
        if let Ok(remote) = read_sip_answer(text, &self.offer)
            && let Some(message) = self.apply_remote_session(remote)
        {
            self.tell_browser(message);
        }
    }

    /// Points the SIP leg at the PBX's (new) session description; returns what to tell the
    /// browser when the PBX's hold changed (after the SIP answer, when there is one).
    fn apply_remote_session(&mut self, remote: SipAnswer) -> Option<ServerMessage> {
        let State::Answered { talk, .. } = &mut self.state else {
            return None;
        };
        let was_held = talk.remote_hold;
        talk.remote_hold = remote.direction.blocks_sending_to_author();
        let now_held = talk.remote_hold;
        let to_sip = talk.forward_to_sip();
        self.connect_media(remote);
        self.outputs
            .push_back(CallOutput::Media(MediaAction::Forward { to_sip }));
        (was_held != now_held).then(|| {
            let event = CallHold {
                call_id: self.id.to_string(),
                by: HoldBy::Remote,
            };
            if now_held {
                ServerMessage::CallHeld(event)
            } else {
                ServerMessage::CallResumed(event)
            }
        })
    }

    fn tell_browser(&mut self, message: ServerMessage) {
        self.outputs.push_back(CallOutput::Browser(message));
    }

    fn connect_media(&mut self, answer: SipAnswer) {
        // Our next offers restate the negotiated crypto, so a re-INVITE keeps the keys.
        self.offer.sdes.settle(answer.srtp.as_ref());
        if self.media.as_ref() != Some(&answer) {
            self.outputs
                .push_back(CallOutput::Media(MediaAction::Connect(answer.clone())));
            self.media = Some(answer);
        }
    }

    fn cancel(&mut self, now: Instant, by: EndedBy, cause: EndCause, reason: &str) {
        self.outputs.push_back(CallOutput::Sip(SipAction::Cancel));
        self.finish(
            now,
            Ending {
                by,
                cause,
                sip_status: None,
                reason: reason.into(),
            },
        );
        self.state = State::Cancelling {
            guard_deadline: now + self.timers.cancel_guard,
        };
    }

    fn reject(&mut self, now: Instant, status: u16, by: EndedBy, cause: EndCause, reason: &str) {
        self.outputs
            .push_back(CallOutput::Sip(SipAction::Reject { status }));
        self.finish(
            now,
            Ending {
                by,
                cause,
                sip_status: Some(status),
                reason: reason.into(),
            },
        );
    }

    fn bye(&mut self, now: Instant, by: EndedBy, cause: EndCause, reason: &str) {
        self.outputs.push_back(CallOutput::Sip(SipAction::Bye));
        self.finish(
            now,
            Ending {
                by,
                cause,
                sip_status: None,
                reason: reason.into(),
            },
        );
    }

    /// Tells the browser, releases media and records the outcome; the state becomes Done
    /// (callers that must still wait on SIP override it). An answered call first waits (up
    /// to [`FINAL_QUALITY_WAIT`]) for its bridge's final measurement, so that the quality it
    /// reports covers the whole call rather than stopping at the last periodic sample.
    fn finish(&mut self, now: Instant, ending: Ending) {
        let talk = match self.state {
            State::Answered { answered_at, .. } => Some(now - answered_at),
            _ => None,
        };
        self.outputs
            .push_back(CallOutput::Media(MediaAction::Remove));
        self.state = State::Done;
        match talk {
            Some(talk) if self.may_wait_for_media => {
                self.closing = Some(Box::new(Closing {
                    ending,
                    talk,
                    deadline: now + FINAL_QUALITY_WAIT,
                }));
            }
            _ => self.tell_and_record(ending, talk),
        }
    }

    /// Ends the wait for the final measurement: with it, or with the last periodic one.
    fn report_end(&mut self) {
        if let Some(closing) = self.closing.take() {
            let Closing { ending, talk, .. } = *closing;
            self.tell_and_record(ending, Some(talk));
        }
    }

    /// The browser's `call_ended` and the call record, with the quality known now.
    fn tell_and_record(&mut self, ending: Ending, talk: Option<Duration>) {
        self.tell_browser(ServerMessage::CallEnded(CallEnded {
            call_id: self.id.to_string(),
            ended_by: ending.by,
            cause: ending.cause.as_str().into(),
            sip_status: ending.sip_status,
            reason: ending.reason.clone(),
            answered: talk.is_some(),
            quality: talk.and(self.quality),
        }));
        self.outputs.push_back(CallOutput::Finished(CallRecord {
            ending,
            setup: self.setup,
            talk,
            quality: talk.and(self.quality),
        }));
    }
}

#[cfg(test)]
mod tests;
