//! One outbound call as a pure state machine (design.md §2.1): inputs from the browser, the
//! SIP leg and the media core go in with the time they happened; browser messages, SIP
//! actions and media actions come out. No IO, no clock reads, no imports of edge modules.

mod cause;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use signaling::{CallAnswered, CallEarlyMedia, CallEnded, CallRinging, EndedBy, ServerMessage};

pub use cause::{EndCause, Ending};

use crate::sdp::{SipAnswer, SipOffer, read_sip_answer};

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
}

impl Default for CallTimers {
    fn default() -> Self {
        CallTimers {
            ring_timeout: Duration::from_secs(120),
            cancel_guard: Duration::from_secs(32),
        }
    }
}

/// Something that happened to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// A request to the media core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaAction {
    /// Start (or re-point) forwarding to the PBX's RTP endpoint.
    Connect(SipAnswer),
    /// Tear the bridge down and release its ports.
    Remove,
}

/// What the call wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// How it ended.
    pub ending: Ending,
    /// Time from the `call` request to the answer or the final failure, if one came.
    pub setup: Option<Duration>,
    /// Talk time, if answered.
    pub talk: Option<Duration>,
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
    /// 200 received and ACKed.
    Answered { answered_at: Instant },
    /// The browser has been told the call ended; the CANCEL awaits the INVITE's final
    /// response so a 2xx racing it can still be ended with BYE.
    Cancelling { guard_deadline: Instant },
    /// Nothing left to do; the owner drops the value.
    Done,
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
    outputs: VecDeque<CallOutput>,
}

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
            outputs,
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

    /// True when the value can be dropped: nothing more will happen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.outputs.is_empty()
    }

    /// Feeds one input. Inputs that make no sense in the current state are ignored (a late
    /// SIP retransmission or media event must never disturb a call).
    pub fn handle_input(&mut self, now: Instant, input: CallInput) {
        match (&self.state, input) {
            (State::Done, _) => {}

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
                    Some(text) => read_sip_answer(text, &self.offer).map_err(|e| e.to_string()),
                    None => self
                        .media
                        .clone()
                        .ok_or_else(|| "2xx without SDP answer".into()),
                };
                match answer {
                    Ok(answer) => {
                        self.connect_media(answer);
                        self.state = State::Answered { answered_at: now };
                        self.tell_browser(ServerMessage::CallAnswered(CallAnswered {
                            call_id: self.id.to_string(),
                        }));
                    }
                    Err(why) => {
                        self.outputs.push_back(CallOutput::Sip(SipAction::Bye));
                        self.finish(
                            now,
                            Ending {
                                by: EndedBy::Gateway,
                                cause: EndCause::IncompatibleMedia,
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
            State::Answered { .. } | State::Done => None,
        }
    }

    fn tell_browser(&mut self, message: ServerMessage) {
        self.outputs.push_back(CallOutput::Browser(message));
    }

    fn connect_media(&mut self, answer: SipAnswer) {
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
    /// (callers that must still wait on SIP override it).
    fn finish(&mut self, now: Instant, ending: Ending) {
        let talk = match self.state {
            State::Answered { answered_at } => Some(now - answered_at),
            _ => None,
        };
        self.outputs
            .push_back(CallOutput::Media(MediaAction::Remove));
        self.tell_browser(ServerMessage::CallEnded(CallEnded {
            call_id: self.id.to_string(),
            ended_by: ending.by,
            cause: ending.cause.as_str().into(),
            sip_status: ending.sip_status,
            reason: ending.reason.clone(),
            answered: talk.is_some(),
        }));
        self.outputs.push_back(CallOutput::Finished(CallRecord {
            ending,
            setup: self.setup,
            talk,
        }));
        self.state = State::Done;
    }
}

#[cfg(test)]
mod tests;
