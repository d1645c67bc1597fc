//! Why a call ended, classified once and used everywhere: the browser's `call_ended`, the
//! log line and the `callgate_calls_total{result}` label (design.md §2.9).

use signaling::EndedBy;

/// The closed set of end causes; each has a stable snake_case spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndCause {
    /// A party hung up an answered call.
    NormalClearing,
    /// The agent hung up before the far end answered.
    Cancelled,
    /// The agent transferred the call and the PBX confirmed it.
    Transferred,
    /// 486 / 600.
    Busy,
    /// 603.
    Declined,
    /// 480, or the PBX's own no-answer handling.
    Unavailable,
    /// callgate's ring timeout expired.
    NoAnswer,
    /// 404 / 604.
    NotFound,
    /// 403.
    Forbidden,
    /// 401 / 407 after our credentials were tried.
    AuthFailed,
    /// 484 / 485.
    InvalidNumber,
    /// 488 / 606, or an answer we cannot relay without transcoding.
    IncompatibleMedia,
    /// `sip.srtp = "mandatory"` and the PBX's answer had no usable SRTP crypto (`a=crypto`).
    SrtpRequired,
    /// 408 from the far end or a SIP transaction timeout.
    Timeout,
    /// 5xx.
    ServerError,
    /// Any other SIP failure.
    SipError,
    /// The PBX could not be reached (transport error).
    Unreachable,
    /// A media leg stopped receiving for longer than the inactivity timeout.
    MediaTimeout,
    /// ICE or DTLS failed on the browser leg.
    MediaFailed,
    /// The agent's WebSocket closed.
    WebsocketClosed,
    /// callgate is shutting down.
    Shutdown,
    /// A bug or unexpected failure inside callgate.
    Internal,
}

impl EndCause {
    /// Maps a final SIP failure status to a cause.
    pub fn from_sip_status(status: u16) -> EndCause {
        match status {
            486 | 600 => EndCause::Busy,
            603 => EndCause::Declined,
            480 => EndCause::Unavailable,
            404 | 604 => EndCause::NotFound,
            403 => EndCause::Forbidden,
            401 | 407 => EndCause::AuthFailed,
            484 | 485 => EndCause::InvalidNumber,
            488 | 606 => EndCause::IncompatibleMedia,
            408 => EndCause::Timeout,
            487 => EndCause::Cancelled,
            500..=599 => EndCause::ServerError,
            _ => EndCause::SipError,
        }
    }

    /// Stable wire and label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::NormalClearing => "normal_clearing",
            EndCause::Cancelled => "cancelled",
            EndCause::Transferred => "transferred",
            EndCause::Busy => "busy",
            EndCause::Declined => "declined",
            EndCause::Unavailable => "unavailable",
            EndCause::NoAnswer => "no_answer",
            EndCause::NotFound => "not_found",
            EndCause::Forbidden => "forbidden",
            EndCause::AuthFailed => "auth_failed",
            EndCause::InvalidNumber => "invalid_number",
            EndCause::IncompatibleMedia => "incompatible_media",
            EndCause::SrtpRequired => "srtp_required",
            EndCause::Timeout => "timeout",
            EndCause::ServerError => "server_error",
            EndCause::SipError => "sip_error",
            EndCause::Unreachable => "unreachable",
            EndCause::MediaTimeout => "media_timeout",
            EndCause::MediaFailed => "media_failed",
            EndCause::WebsocketClosed => "websocket_closed",
            EndCause::Shutdown => "shutdown",
            EndCause::Internal => "internal",
        }
    }

    /// Every cause, for docs and label pre-registration.
    pub const ALL: &'static [EndCause] = &[
        EndCause::NormalClearing,
        EndCause::Cancelled,
        EndCause::Transferred,
        EndCause::Busy,
        EndCause::Declined,
        EndCause::Unavailable,
        EndCause::NoAnswer,
        EndCause::NotFound,
        EndCause::Forbidden,
        EndCause::AuthFailed,
        EndCause::InvalidNumber,
        EndCause::IncompatibleMedia,
        EndCause::SrtpRequired,
        EndCause::Timeout,
        EndCause::ServerError,
        EndCause::SipError,
        EndCause::Unreachable,
        EndCause::MediaTimeout,
        EndCause::MediaFailed,
        EndCause::WebsocketClosed,
        EndCause::Shutdown,
        EndCause::Internal,
    ];
}

/// How a call ended, as reported to the browser, the log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Which side ended it.
    pub by: EndedBy,
    /// Why.
    pub cause: EndCause,
    /// The final SIP status when the SIP side failed the call.
    pub sip_status: Option<u16>,
    /// Reason phrase or explanation.
    pub reason: String,
}
