//! The TypeScript declarations of the wire protocol (`web-client/src/protocol.d.ts`), rendered
//! from one description of every message and proven equal to the serde types by probing them:
//!
//! - the variant lists (message `type`s, `Auth` modes, string enums) are read from serde's own
//!   "unknown variant …, expected one of …" errors, so a new Rust variant fails this test;
//! - each message's field list is read from serde's "unknown field …, expected one of …"
//!   errors (every type has `deny_unknown_fields`), so a new or renamed field fails it;
//! - a minimal instance (required fields only) and a full one (every optional field too) must
//!   parse and serialize back unchanged, and dropping any required field must fail, so `?`
//!   means exactly "may be absent" in both directions;
//! - a wrongly typed value in any field must be refused, and every literal of a string union
//!   accepted, so the TypeScript types are the JSON types serde accepts; a `number` described
//!   as an integer must refuse a fraction, one described as a float must keep one;
//! - plain (untagged) objects nested in messages ([`STRUCTS`], e.g. `CallQuality`) get the
//!   same probes on their own, and again in place inside the message that holds them, so the
//!   Rust field really has the described type;
//! - every fixture is checked against the description recursively: its fields, nested ones
//!   included, are described, the required ones are present, and each has the described JSON
//!   type.
//!
//! The committed file must equal the rendering. After changing the protocol, update the table
//! below until this test passes, then regenerate:
//! `UPDATE_PROTOCOL_DTS=1 cargo test -p signaling --test it typescript`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use signaling::{
    Auth, CallDirection, CallQuality, ClientMessage, EndedBy, ErrorCode, HoldBy, LegQuality,
    RejectReason, Resumed, ResumedCall, ResumedCallState, ServerMessage,
};

/// JSON type of a field, as TypeScript spells it.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    /// An integer `number`.
    Num,
    /// A `number` that may have a fraction (an `f64`).
    Float,
    Bool,
    /// `Record<string, string>` (SIP headers).
    StrMap,
    /// An array of a plain object declared in [`STRUCTS`] (e.g. `ResumedCall[]`).
    StructList(&'static str),
    /// A string union declared in [`UNIONS`].
    Union(&'static str),
    /// A tagged object union declared in [`TAGGED`] (e.g. `Auth`).
    Object(&'static str),
    /// A plain (untagged) object declared in [`STRUCTS`] (e.g. `CallQuality`).
    Struct(&'static str),
}

struct Field {
    name: &'static str,
    ty: Ty,
    optional: bool,
    doc: &'static str,
}

const fn req(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        optional: false,
        doc,
    }
}

const fn opt(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        optional: true,
        doc,
    }
}

struct Variant {
    tag: &'static str,
    doc: &'static str,
    fields: &'static [Field],
}

struct Tagged {
    /// TypeScript name of the union; each variant is `<prefix><PascalTag><suffix>`.
    name: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    tag_field: &'static str,
    doc: &'static str,
    variants: &'static [Variant],
}

struct Union {
    name: &'static str,
    doc: &'static str,
    values: &'static [&'static str],
}

/// A plain object type (a Rust struct with `deny_unknown_fields`), rendered as an interface.
struct Struct {
    name: &'static str,
    doc: &'static str,
    fields: &'static [Field],
}

use Ty::*;

const REQUEST_ID: Field = req(
    "request_id",
    Num,
    "Chosen by the client; the single reply echoes it.",
);
const CALL_ID: Field = req("call_id", Str, "The call, as named by callgate.");

const AUTH: Tagged = Tagged {
    name: "Auth",
    prefix: "Auth",
    suffix: "",
    tag_field: "mode",
    doc: "How the agent proves who it is.",
    variants: &[
        Variant {
            tag: "sip_credentials",
            doc: "The agent's own SIP extension and password (used for digest auth towards the PBX).",
            fields: &[
                req("extension", Str, "SIP user part, e.g. \"1001\"."),
                req("password", Str, "SIP digest password; never logged."),
            ],
        },
        Variant {
            tag: "token",
            doc: "A short-lived JWT minted by the CRM (`sub` = extension, optional `dial` patterns); callgate looks up the SIP password itself.",
            fields: &[
                opt(
                    "extension",
                    Str,
                    "When present, must equal the token's `sub`.",
                ),
                req("token", Str, "The compact JWT; never logged."),
            ],
        },
    ],
};

const CLIENT: Tagged = Tagged {
    name: "ClientMessage",
    prefix: "",
    suffix: "Request",
    tag_field: "type",
    doc: "Every message the browser may send.",
    variants: &[
        Variant {
            tag: "hello",
            doc: "Opens the session; must be the first message.",
            fields: &[
                REQUEST_ID,
                req("protocol", Num, "Protocol version; must be 1."),
                req("auth", Object("Auth"), "The agent's credentials."),
                opt(
                    "user_agent",
                    Str,
                    "Client name and version, logged for support.",
                ),
                opt(
                    "resume_token",
                    Str,
                    "The last welcome's `resume_token`: takes over that session (its calls and registration) if callgate still keeps it.",
                ),
            ],
        },
        Variant {
            tag: "call",
            doc: "Places an outbound call with the browser's WebRTC offer.",
            fields: &[
                REQUEST_ID,
                req("to", Str, "Number or extension to dial."),
                req("sdp", Str, "The browser's SDP offer (PCMU or PCMA audio)."),
                opt(
                    "headers",
                    StrMap,
                    "Extra SIP headers for the INVITE (allowed prefixes only, e.g. `X-`).",
                ),
                opt(
                    "call_uuid",
                    Str,
                    "The CRM's id for the call, sent to the PBX (default header `X-Call-UUID`).",
                ),
            ],
        },
        Variant {
            tag: "hangup",
            doc: "Ends a call: CANCEL before answer, BYE after.",
            fields: &[REQUEST_ID, CALL_ID],
        },
        Variant {
            tag: "ping",
            doc: "Application keepalive; answered with an ack.",
            fields: &[REQUEST_ID],
        },
        Variant {
            tag: "register",
            doc: "Registers the agent's extension with the PBX.",
            fields: &[REQUEST_ID],
        },
        Variant {
            tag: "unregister",
            doc: "Removes the registration.",
            fields: &[REQUEST_ID],
        },
        Variant {
            tag: "answer",
            doc: "Answers an `incoming_call` with the browser's SDP answer.",
            fields: &[
                REQUEST_ID,
                CALL_ID,
                req(
                    "sdp",
                    Str,
                    "The browser's SDP answer to the offer in `incoming_call`.",
                ),
            ],
        },
        Variant {
            tag: "reject",
            doc: "Refuses an `incoming_call`.",
            fields: &[
                REQUEST_ID,
                CALL_ID,
                opt("reason", Union("RejectReason"), "486 `busy` when absent."),
            ],
        },
        Variant {
            tag: "hold",
            doc: "Puts a call on hold (re-INVITE sendonly).",
            fields: &[REQUEST_ID, CALL_ID],
        },
        Variant {
            tag: "unhold",
            doc: "Resumes a held call.",
            fields: &[REQUEST_ID, CALL_ID],
        },
        Variant {
            tag: "mute",
            doc: "Stops relaying the agent's audio.",
            fields: &[REQUEST_ID, CALL_ID],
        },
        Variant {
            tag: "unmute",
            doc: "Relays the agent's audio again.",
            fields: &[REQUEST_ID, CALL_ID],
        },
        Variant {
            tag: "transfer",
            doc: "Transfers the far end: blind (`to`) or attended (`replaces_call_id`); exactly one of them.",
            fields: &[
                REQUEST_ID,
                CALL_ID,
                opt("to", Str, "Blind transfer target."),
                opt(
                    "replaces_call_id",
                    Str,
                    "Attended transfer: the agent's other call.",
                ),
            ],
        },
        Variant {
            tag: "dtmf",
            doc: "Sends DTMF digits on a call.",
            fields: &[
                REQUEST_ID,
                CALL_ID,
                req("digits", Str, "`0-9 * # A-D`, at most 32."),
                opt("duration_ms", Num, "Per digit, 40-2000 ms (default 100)."),
            ],
        },
        Variant {
            tag: "renegotiate",
            doc: "A new WebRTC offer for a call kept across a drop or reload; the ack carries the answer.",
            fields: &[
                REQUEST_ID,
                CALL_ID,
                req(
                    "sdp",
                    Str,
                    "The new peer connection's offer (the call's G.711 codec).",
                ),
            ],
        },
        Variant {
            tag: "message",
            doc: "Sends a SIP MESSAGE.",
            fields: &[
                REQUEST_ID,
                req("to", Str, "Number or extension."),
                req("text", Str, "At most 4 KiB."),
                opt("content_type", Str, "Default `text/plain;charset=UTF-8`."),
            ],
        },
        Variant {
            tag: "refresh_token",
            doc: "A fresh token for this token session (same extension); the reply is `token_refreshed`.",
            fields: &[
                REQUEST_ID,
                req("token", Str, "The compact JWT; never logged."),
            ],
        },
    ],
};

const SERVER: Tagged = Tagged {
    name: "ServerMessage",
    prefix: "",
    suffix: "Message",
    tag_field: "type",
    doc: "Every message callgate may send.",
    variants: &[
        Variant {
            tag: "welcome",
            doc: "Reply to `hello`: the session is open.",
            fields: &[
                REQUEST_ID,
                req("protocol", Num, "Protocol version in force."),
                req("session_id", Str, "Quoted in callgate's logs, for support."),
                req("server", Str, "e.g. \"callgate/0.1.0\"."),
                opt(
                    "resume_token",
                    Str,
                    "Send it in the next hello after a drop or reload to keep this session.",
                ),
                opt(
                    "node",
                    Str,
                    "The callgate node holding the session (for load-balancer affinity).",
                ),
                opt(
                    "resumed",
                    Struct("Resumed"),
                    "Present when the hello resumed a kept session.",
                ),
                opt(
                    "token_expires_at",
                    Num,
                    "Token sessions: the token's `exp` (Unix seconds); refresh before it.",
                ),
            ],
        },
        Variant {
            tag: "ack",
            doc: "Positive reply to a request.",
            fields: &[
                REQUEST_ID,
                opt("call_id", Str, "For `call`: the new call's id."),
                opt(
                    "sdp",
                    Str,
                    "For `call`: callgate's SDP answer; apply it at once.",
                ),
                opt("call_uuid", Str, "For `call`: the UUID sent to the PBX."),
            ],
        },
        Variant {
            tag: "error",
            doc: "Negative reply to a request, or a problem tied to none.",
            fields: &[
                opt(
                    "request_id",
                    Num,
                    "The request this answers, when it could be read.",
                ),
                opt("call_id", Str, "The call concerned, if any."),
                req(
                    "code",
                    Union("ErrorCode"),
                    "Branch on this, never on `message`.",
                ),
                req("message", Str, "English detail for logs and developers."),
            ],
        },
        Variant {
            tag: "call_ringing",
            doc: "The far end is alerting (180, or 183 without SDP).",
            fields: &[CALL_ID, req("sip_status", Num, "180 or 183.")],
        },
        Variant {
            tag: "call_early_media",
            doc: "Early media (183 with SDP) plays on the WebRTC leg.",
            fields: &[CALL_ID, req("sip_status", Num, "Usually 183.")],
        },
        Variant {
            tag: "call_answered",
            doc: "The call is established.",
            fields: &[CALL_ID],
        },
        Variant {
            tag: "call_ended",
            doc: "The call is over; nothing more follows for this `call_id`.",
            fields: &[
                CALL_ID,
                req("ended_by", Union("EndedBy"), "Which side ended it."),
                req(
                    "cause",
                    Str,
                    "Stable snake_case cause (docs/protocol.md lists them).",
                ),
                opt(
                    "sip_status",
                    Num,
                    "Final SIP status when the SIP side failed the call.",
                ),
                req("reason", Str, "Reason phrase or explanation."),
                req("answered", Bool, "Whether the call had been answered."),
                opt(
                    "quality",
                    Struct("CallQuality"),
                    "Media quality of an answered call (both legs and a MOS estimate).",
                ),
            ],
        },
        Variant {
            tag: "registered",
            doc: "The PBX accepted the registration.",
            fields: &[req(
                "expires",
                Num,
                "Seconds granted; callgate refreshes before.",
            )],
        },
        Variant {
            tag: "unregistered",
            doc: "The agent is no longer registered.",
            fields: &[req(
                "reason",
                Str,
                "`requested`, `refresh_failed` or `shutdown`.",
            )],
        },
        Variant {
            tag: "registration_failed",
            doc: "The PBX refused the registration or could not be reached.",
            fields: &[
                opt("sip_status", Num, "Absent when the PBX was unreachable."),
                req("reason", Str, "Reason phrase or explanation."),
                req("retrying", Bool, "Whether callgate keeps trying."),
            ],
        },
        Variant {
            tag: "incoming_call",
            doc: "A call for the agent: reply `answer` (to the offer in `sdp`) or `reject`.",
            fields: &[
                CALL_ID,
                req("from", Str, "Caller number."),
                opt("display_name", Str, "Caller display name."),
                req("to", Str, "Called number."),
                opt(
                    "headers",
                    StrMap,
                    "The INVITE's headers with a configured prefix (e.g. `X-`).",
                ),
                req("sdp", Str, "callgate's WebRTC SDP offer."),
            ],
        },
        Variant {
            tag: "call_held",
            doc: "A call was put on hold.",
            fields: &[CALL_ID, req("by", Union("HoldBy"), "Who held it.")],
        },
        Variant {
            tag: "call_resumed",
            doc: "A held call was resumed.",
            fields: &[CALL_ID, req("by", Union("HoldBy"), "Who resumed it.")],
        },
        Variant {
            tag: "transfer_progress",
            doc: "Progress of a transfer (NOTIFY sipfrag).",
            fields: &[
                CALL_ID,
                req("sip_status", Num, "Status of the transfer target's call."),
                req("done", Bool, "Last report; 2xx means transferred."),
            ],
        },
        Variant {
            tag: "dtmf_received",
            doc: "The far end sent a DTMF digit.",
            fields: &[CALL_ID, req("digit", Str, "`0-9 * # A-D`.")],
        },
        Variant {
            tag: "message_received",
            doc: "A SIP MESSAGE arrived for the agent.",
            fields: &[
                req("from", Str, "Sender number."),
                opt("display_name", Str, "Sender display name."),
                req("text", Str, "The text."),
                req("content_type", Str, "Its MIME type."),
            ],
        },
        Variant {
            tag: "token_refreshed",
            doc: "Reply to `refresh_token`: the session runs on the new token.",
            fields: &[
                REQUEST_ID,
                req("expires_at", Num, "The new token's `exp` (Unix seconds)."),
            ],
        },
        Variant {
            tag: "token_expiring",
            doc: "The session's token expires soon: send `refresh_token` with a fresh one.",
            fields: &[req("expires_at", Num, "The token's `exp` (Unix seconds).")],
        },
        Variant {
            tag: "token_expired",
            doc: "The token expired without a refresh: new activity is refused; the session closes (code 4002) once its last call has ended.",
            fields: &[
                req("expires_at", Num, "The token's `exp` (Unix seconds)."),
                req(
                    "active_calls",
                    Num,
                    "Calls still up; they go on until hung up.",
                ),
            ],
        },
    ],
};

const UNIONS: &[Union] = &[
    Union {
        name: "ErrorCode",
        doc: "Stable error codes (signaling::ErrorCode); the SDK words each in zh/en/vi.",
        values: &[
            "bad_json",
            "unknown_type",
            "invalid_message",
            "message_too_large",
            "binary_not_supported",
            "unsupported_protocol",
            "not_authenticated",
            "already_authenticated",
            "auth_failed",
            "token_expired",
            "token_replayed",
            "token_mismatch",
            "auth_mode_disabled",
            "credentials_unavailable",
            "invalid_number",
            "invalid_header",
            "invalid_sdp",
            "no_common_codec",
            "unknown_call",
            "invalid_state",
            "invalid_dtmf",
            "too_many_calls",
            "rate_limited",
            "number_not_allowed",
            "overloaded",
            "shutting_down",
            "pbx_refused",
            "internal",
        ],
    },
    Union {
        name: "EndedBy",
        doc: "Which side ended a call.",
        values: &["agent", "remote", "gateway"],
    },
    Union {
        name: "HoldBy",
        doc: "Who changed the hold state.",
        values: &["agent", "remote"],
    },
    Union {
        name: "CallDirection",
        doc: "Who placed a call.",
        values: &["outbound", "inbound"],
    },
    Union {
        name: "ResumedCallState",
        doc: "Where a kept call stands.",
        values: &["calling", "incoming", "answering", "answered"],
    },
    Union {
        name: "RejectReason",
        doc: "Why the agent refuses a call: 486, 603, 480.",
        values: &["busy", "decline", "unavailable"],
    },
];

const STRUCTS: &[Struct] = &[
    Struct {
        name: "Resumed",
        doc: "What a resumed session still holds.",
        fields: &[
            req(
                "registered",
                Bool,
                "The agent is still registered with the PBX.",
            ),
            req(
                "calls",
                StructList("ResumedCall"),
                "Calls still up; renegotiate each one not `incoming` with a new peer connection (an `incoming` one is offered again by `incoming_call`).",
            ),
        ],
    },
    Struct {
        name: "ResumedCall",
        doc: "One call kept across a WebSocket drop or page reload.",
        fields: &[
            CALL_ID,
            opt("call_uuid", Str, "The CRM's id for the call (X-Call-UUID)."),
            req("direction", Union("CallDirection"), "Who placed it."),
            req("peer", Str, "The dialled number or the caller."),
            req("state", Union("ResumedCallState"), "Where the call stands."),
            req("held", Bool, "The agent put it on hold."),
            req("remote_held", Bool, "The far end put it on hold."),
            req("muted", Bool, "The agent's audio is muted at callgate."),
        ],
    },
    Struct {
        name: "CallQuality",
        doc: "Quality of a call on both legs with an E-model MOS estimate (ITU-T G.107).",
        fields: &[
            req(
                "webrtc",
                Struct("LegQuality"),
                "The browser's leg (received from the browser).",
            ),
            req(
                "sip",
                Struct("LegQuality"),
                "The PBX's leg (received from the PBX).",
            ),
            req(
                "mos",
                Float,
                "Estimated mean opinion score, 1.0-4.5, from the worse leg.",
            ),
        ],
    },
    Struct {
        name: "LegQuality",
        doc: "Quality of one media leg over the call, as measured by callgate.",
        fields: &[
            req("packets", Num, "RTP packets callgate received on this leg."),
            req(
                "lost",
                Num,
                "Packets the sender sent that never arrived (RFC 3550 expected − received).",
            ),
            req(
                "jitter_ms",
                Float,
                "Interarrival jitter in milliseconds (RFC 3550).",
            ),
            opt(
                "rtt_ms",
                Float,
                "Round-trip time from RTCP on this leg, when it could be measured.",
            ),
        ],
    },
];

const TAGGED: &[&Tagged] = &[&AUTH, &CLIENT, &SERVER];

// ---- probing the serde types ---------------------------------------------------------------

/// How serde parses one type: deserialize, then serialize back.
type Parse = fn(&Value) -> Result<Value, String>;

/// Deserializes `value` as `T` and serializes it back.
fn through<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Value, String> {
    let parsed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&parsed).map_err(|e| e.to_string())
}

/// The parser for a tagged union, string union or plain object, by TypeScript name.
fn parser(name: &str) -> Parse {
    match name {
        "Auth" => through::<Auth>,
        "ClientMessage" => through::<ClientMessage>,
        "ServerMessage" => through::<ServerMessage>,
        "ErrorCode" => through::<ErrorCode>,
        "EndedBy" => through::<EndedBy>,
        "HoldBy" => through::<HoldBy>,
        "RejectReason" => through::<RejectReason>,
        "CallQuality" => through::<CallQuality>,
        "Resumed" => through::<Resumed>,
        "ResumedCall" => through::<ResumedCall>,
        "CallDirection" => through::<CallDirection>,
        "ResumedCallState" => through::<ResumedCallState>,
        "LegQuality" => through::<LegQuality>,
        other => panic!("no parser for {other}"),
    }
}

/// The backticked names serde lists after "expected" in an unknown variant/field error.
fn expected_names(error: &str) -> BTreeSet<String> {
    if error.contains("there are no fields") || error.contains("there are no variants") {
        return BTreeSet::new();
    }
    let (_, list) = error
        .split_once("expected")
        .unwrap_or_else(|| panic!("serde error without a list: {error}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn field_names(fields: &[Field]) -> BTreeSet<String> {
    fields.iter().map(|f| f.name.to_string()).collect()
}

/// A valid value of `ty`; objects come with every optional field.
fn sample(ty: Ty) -> Value {
    match ty {
        Str => json!("x"),
        Num => json!(1),
        Float => json!(1.5),
        Bool => json!(true),
        StrMap => json!({"X-Sample": "v"}),
        Union(name) => json!(union(name).values[0]),
        Object(name) => {
            let tagged = tagged_union(name);
            instance(tagged, &tagged.variants[0], true)
        }
        Struct(name) => struct_instance(structure(name), true),
        StructList(name) => json!([struct_instance(structure(name), true)]),
    }
}

fn wrong(ty: Ty) -> Value {
    match ty {
        Str => json!(1),
        Num => json!("1"),
        Float => json!("1.5"),
        Bool => json!("true"),
        StrMap => json!({"X-Sample": 1}),
        Union(_) => json!("__not_a_variant__"),
        Object(_) | Struct(_) => json!("x"),
        StructList(_) => json!(["x"]),
    }
}

/// For an object type: its smallest valid value (required fields only) and its field list.
fn nested(ty: Ty) -> Option<(Value, &'static [Field])> {
    match ty {
        Object(name) => {
            let tagged = tagged_union(name);
            let variant = &tagged.variants[0];
            Some((instance(tagged, variant, false), variant.fields))
        }
        Struct(name) => {
            let s = structure(name);
            Some((struct_instance(s, false), s.fields))
        }
        _ => None,
    }
}

fn union(name: &str) -> &'static Union {
    UNIONS
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("union {name} is declared"))
}

fn tagged_union(name: &str) -> &'static Tagged {
    TAGGED
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("tagged union {name} is declared"))
}

fn structure(name: &str) -> &'static Struct {
    STRUCTS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("struct {name} is declared"))
}

/// Adds a sample of each field: the required ones, and the optional ones too if asked.
fn fill(object: &mut Map<String, Value>, fields: &[Field], with_optional: bool) {
    for field in fields {
        if with_optional || !field.optional {
            object.insert(field.name.into(), sample(field.ty));
        }
    }
}

fn instance(tagged: &Tagged, variant: &Variant, with_optional: bool) -> Value {
    let mut object = Map::new();
    object.insert(tagged.tag_field.into(), json!(variant.tag));
    fill(&mut object, variant.fields, with_optional);
    Value::Object(object)
}

fn struct_instance(s: &Struct, with_optional: bool) -> Value {
    let mut object = Map::new();
    fill(&mut object, s.fields, with_optional);
    Value::Object(object)
}

/// Probes one object type (a message variant or a struct) against serde: `make(with_optional)`
/// builds its minimal or full instance, `parse` is serde.
fn check_fields(what: &str, parse: Parse, fields: &[Field], make: &dyn Fn(bool) -> Value) {
    let mut probe = make(false);
    probe["__probe__"] = json!(0);
    let error = parse(&probe).expect_err("unknown field is refused");
    assert_eq!(
        field_names(fields),
        expected_names(&error),
        "{what}: field list differs"
    );

    for with_optional in [false, true] {
        let value = make(with_optional);
        let back = parse(&value).unwrap_or_else(|e| panic!("{what} {value}: {e}"));
        assert_eq!(
            back, value,
            "{what}: does not round-trip (an optional field that serializes as null, or an f64 described as Num?)"
        );
    }
    let full = make(true);
    for field in fields {
        let at = format!("{what}.{}", field.name);
        if !field.optional {
            let mut missing = full.clone();
            missing.as_object_mut().expect("object").remove(field.name);
            let error = parse(&missing).expect_err("required field");
            assert!(
                error.contains(&format!("missing field `{}`", field.name)),
                "{at} is described as required: {error}"
            );
        }
        let with = |value: Value| {
            let mut changed = full.clone();
            changed[field.name] = value;
            changed
        };
        assert!(
            parse(&with(wrong(field.ty))).is_err(),
            "{at} accepts a value that is not {}",
            ts_type(field.ty)
        );
        match field.ty {
            Num => assert!(
                parse(&with(json!(1.5))).is_err(),
                "{at} is described as an integer but accepts 1.5 (use Float)"
            ),
            // A float field takes integers too (JSON has one number type), but keeps fractions
            // (the full instance above round-trips 1.5).
            Float => {
                parse(&with(json!(1))).unwrap_or_else(|e| panic!("{at} = 1: {e}"));
            }
            Union(name) => {
                for literal in union(name).values {
                    parse(&with(json!(literal)))
                        .unwrap_or_else(|e| panic!("{at} = {literal}: {e}"));
                }
            }
            Object(_) | Struct(_) => {
                // In place, the field has the described type: its minimal value round-trips
                // and an unknown field inside it is refused with the described field list.
                let (minimal, inner_fields) = nested(field.ty).expect("object type");
                let value = with(minimal.clone());
                assert_eq!(
                    parse(&value).as_ref(),
                    Ok(&value),
                    "{at}: minimal {} in place",
                    ts_type(field.ty)
                );
                let mut probe = minimal;
                probe["__probe__"] = json!(0);
                let error = parse(&with(probe)).expect_err("unknown nested field is refused");
                assert_eq!(
                    field_names(inner_fields),
                    expected_names(&error),
                    "{at}: the Rust field is not a {}",
                    ts_type(field.ty)
                );
            }
            StructList(name) => {
                let s = structure(name);
                let value = with(json!([struct_instance(s, false)]));
                assert_eq!(
                    parse(&value).as_ref(),
                    Ok(&value),
                    "{at}: minimal item in place"
                );
                let mut probe = struct_instance(s, false);
                probe["__probe__"] = json!(0);
                let error =
                    parse(&with(json!([probe]))).expect_err("unknown item field is refused");
                assert_eq!(
                    field_names(s.fields),
                    expected_names(&error),
                    "{at}: the Rust item is not a {name}"
                );
            }
            Str | Bool | StrMap => {}
        }
    }
}

fn check_tagged(tagged: &Tagged) {
    let parse = parser(tagged.name);
    let error = parse(&json!({ tagged.tag_field: "__probe__" })).expect_err("unknown tag");
    let serde_tags = expected_names(&error);
    let ours: BTreeSet<String> = tagged.variants.iter().map(|v| v.tag.to_string()).collect();
    assert_eq!(
        ours, serde_tags,
        "{}: the `{}` values described here differ from the Rust enum",
        tagged.name, tagged.tag_field
    );
    for variant in tagged.variants {
        check_fields(
            &format!("{} `{}`", tagged.name, variant.tag),
            parse,
            variant.fields,
            &|with_optional| instance(tagged, variant, with_optional),
        );
    }
}

fn check_struct(s: &Struct) {
    check_fields(s.name, parser(s.name), s.fields, &|with_optional| {
        struct_instance(s, with_optional)
    });
}

fn check_union(u: &Union) {
    let parse = parser(u.name);
    let error = parse(&json!("__probe__")).expect_err("unknown variant");
    let ours: BTreeSet<String> = u.values.iter().map(|v| v.to_string()).collect();
    assert_eq!(ours, expected_names(&error), "{}: values differ", u.name);
    for value in u.values {
        assert_eq!(
            parse(&json!(value)),
            Ok(json!(value)),
            "{}: {value}",
            u.name
        );
    }
}

// ---- checking fixtures against the description ----------------------------------------------

/// `value`, found at `at`, has the described JSON type, recursively.
fn conforms(at: &str, ty: Ty, value: &Value) {
    let ok = match ty {
        Str => value.is_string(),
        Num => value.is_u64() || value.is_i64(),
        Float => value.is_number(),
        Bool => value.is_boolean(),
        StrMap => value
            .as_object()
            .is_some_and(|map| map.values().all(Value::is_string)),
        Union(name) => value
            .as_str()
            .is_some_and(|v| union(name).values.contains(&v)),
        Object(name) => {
            conforms_tagged(at, tagged_union(name), value);
            true
        }
        Struct(name) => {
            conforms_object(at, structure(name).fields, None, value);
            true
        }
        StructList(name) => value.as_array().is_some_and(|items| {
            for (i, item) in items.iter().enumerate() {
                conforms_object(&format!("{at}[{i}]"), structure(name).fields, None, item);
            }
            true
        }),
    };
    assert!(ok, "{at}: {value} is not {}", ts_type(ty));
}

fn conforms_tagged(at: &str, tagged: &Tagged, value: &Value) {
    let tag = value[tagged.tag_field]
        .as_str()
        .unwrap_or_else(|| panic!("{at}: no `{}` tag", tagged.tag_field));
    let variant = tagged
        .variants
        .iter()
        .find(|v| v.tag == tag)
        .unwrap_or_else(|| panic!("{at}: `{tag}` is a described {}", tagged.name));
    conforms_object(at, variant.fields, Some(tagged.tag_field), value);
}

fn conforms_object(at: &str, fields: &[Field], tag_field: Option<&str>, value: &Value) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{at}: {value} is an object"));
    for (key, item) in object {
        if Some(key.as_str()) == tag_field {
            continue;
        }
        let field = fields
            .iter()
            .find(|f| f.name == key)
            .unwrap_or_else(|| panic!("{at}: field {key} is described"));
        conforms(&format!("{at}.{key}"), field.ty, item);
    }
    for field in fields.iter().filter(|f| !f.optional) {
        assert!(
            object.contains_key(field.name),
            "{at}: required field {} is present",
            field.name
        );
    }
}

// ---- rendering -----------------------------------------------------------------------------

fn pascal(tag: &str) -> String {
    tag.split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn interface_name(tagged: &Tagged, variant: &Variant) -> String {
    format!("{}{}{}", tagged.prefix, pascal(variant.tag), tagged.suffix)
}

fn ts_type(ty: Ty) -> String {
    match ty {
        Str => "string".into(),
        Num | Float => "number".into(),
        Bool => "boolean".into(),
        StrMap => "Record<string, string>".into(),
        Union(name) | Object(name) | Struct(name) => name.into(),
        StructList(name) => format!("{name}[]"),
    }
}

/// The members of an interface, one documented line each.
fn render_fields(out: &mut String, fields: &[Field]) {
    for field in fields {
        out.push_str(&format!(
            "  /** {} */\n  {}{}: {};\n",
            field.doc,
            field.name,
            if field.optional { "?" } else { "" },
            ts_type(field.ty)
        ));
    }
}

fn render() -> String {
    let mut out = String::new();
    out.push_str(
        "// callgate browser protocol v1: TypeScript declarations of every JSON message.\n\
         // GENERATED from the signaling crate's types by signaling/tests/it/typescript.rs — do not\n\
         // edit. Regenerate: UPDATE_PROTOCOL_DTS=1 cargo test -p signaling --test it typescript\n\
         // Reference with examples: docs/protocol.md.\n\n\
         /** The protocol version this file describes (`hello.protocol`). */\n\
         export type ProtocolVersion = 1;\n",
    );
    for u in UNIONS {
        out.push_str(&format!("\n/** {} */\nexport type {} =\n", u.doc, u.name));
        let lines: Vec<String> = u.values.iter().map(|v| format!("  | \"{v}\"")).collect();
        out.push_str(&lines.join("\n"));
        out.push_str(";\n");
    }
    for s in STRUCTS {
        out.push_str(&format!(
            "\n/** {} */\nexport interface {} {{\n",
            s.doc, s.name
        ));
        render_fields(&mut out, s.fields);
        out.push_str("}\n");
    }
    for tagged in TAGGED {
        for variant in tagged.variants {
            out.push_str(&format!(
                "\n/** {} */\nexport interface {} {{\n  {}: \"{}\";\n",
                variant.doc,
                interface_name(tagged, variant),
                tagged.tag_field,
                variant.tag
            ));
            render_fields(&mut out, variant.fields);
            out.push_str("}\n");
        }
        out.push_str(&format!(
            "\n/** {} */\nexport type {} =\n",
            tagged.doc, tagged.name
        ));
        let lines: Vec<String> = tagged
            .variants
            .iter()
            .map(|v| format!("  | {}", interface_name(tagged, v)))
            .collect();
        out.push_str(&lines.join("\n"));
        out.push_str(";\n");
    }
    out.push_str(
        "\n/** Removes `request_id` from each member of a union. */\n\
         export type WithoutRequestId<M> = M extends unknown ? Omit<M, \"request_id\"> : never;\n\
         \n/** A client message without its request_id (the SDK assigns ids). */\n\
         export type ClientRequest = WithoutRequestId<ClientMessage>;\n",
    );
    out
}

fn dts_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("web-client")
        .join("src")
        .join("protocol.d.ts")
}

#[test]
fn description_matches_the_serde_types() {
    for u in UNIONS {
        check_union(u);
    }
    for s in STRUCTS {
        check_struct(s);
    }
    for tagged in TAGGED {
        check_tagged(tagged);
    }
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, union("ErrorCode").values, "ErrorCode in table order");
}

#[test]
fn every_declared_type_is_used_and_every_name_is_unique() {
    let fields = TAGGED
        .iter()
        .flat_map(|t| t.variants)
        .flat_map(|v| v.fields)
        .chain(STRUCTS.iter().flat_map(|s| s.fields));
    let used: BTreeSet<&str> = fields
        .filter_map(|f| match f.ty {
            Union(name) | Object(name) | Struct(name) | StructList(name) => Some(name),
            Str | Num | Float | Bool | StrMap => None,
        })
        .collect();
    for name in UNIONS
        .iter()
        .map(|u| u.name)
        .chain(STRUCTS.iter().map(|s| s.name))
    {
        assert!(
            used.contains(name),
            "{name} is declared but no field has it"
        );
    }
    let mut names: Vec<String> = UNIONS
        .iter()
        .map(|u| u.name.to_string())
        .chain(STRUCTS.iter().map(|s| s.name.to_string()))
        .chain(TAGGED.iter().map(|t| t.name.to_string()))
        .chain(
            TAGGED
                .iter()
                .flat_map(|t| t.variants.iter().map(|v| interface_name(t, v))),
        )
        .collect();
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        count,
        "two exported TypeScript types share a name"
    );
}

#[test]
fn every_fixture_is_a_described_message() {
    for (side, tagged) in [("client", &CLIENT), ("server", &SERVER)] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(side);
        for entry in std::fs::read_dir(&dir).expect("fixtures") {
            let path = entry.expect("entry").path();
            let value: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("readable"))
                    .expect("JSON");
            conforms_tagged(&path.display().to_string(), tagged, &value);
        }
    }
}

#[test]
fn committed_declarations_are_up_to_date() {
    let rendered = render();
    let path = dts_path();
    if std::env::var_os("UPDATE_PROTOCOL_DTS").is_some() {
        std::fs::write(&path, &rendered).expect("write protocol.d.ts");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} is stale; regenerate it with: UPDATE_PROTOCOL_DTS=1 cargo test -p signaling --test it typescript",
        path.display()
    );
}
