// callgate browser protocol v1: TypeScript declarations of every JSON message.
// GENERATED from the signaling crate's types by signaling/tests/it/typescript.rs — do not
// edit. Regenerate: UPDATE_PROTOCOL_DTS=1 cargo test -p signaling --test it typescript
// Reference with examples: docs/protocol.md.

/** The protocol version this file describes (`hello.protocol`). */
export type ProtocolVersion = 1;

/** Stable error codes (signaling::ErrorCode); the SDK words each in zh/en/vi. */
export type ErrorCode =
  | "bad_json"
  | "unknown_type"
  | "invalid_message"
  | "message_too_large"
  | "binary_not_supported"
  | "unsupported_protocol"
  | "not_authenticated"
  | "already_authenticated"
  | "auth_failed"
  | "token_expired"
  | "token_replayed"
  | "token_mismatch"
  | "auth_mode_disabled"
  | "credentials_unavailable"
  | "invalid_number"
  | "invalid_header"
  | "invalid_sdp"
  | "no_common_codec"
  | "unknown_call"
  | "invalid_state"
  | "invalid_dtmf"
  | "too_many_calls"
  | "rate_limited"
  | "number_not_allowed"
  | "overloaded"
  | "shutting_down"
  | "pbx_refused"
  | "internal";

/** Which side ended a call. */
export type EndedBy =
  | "agent"
  | "remote"
  | "gateway";

/** Who changed the hold state. */
export type HoldBy =
  | "agent"
  | "remote";

/** Who placed a call. */
export type CallDirection =
  | "outbound"
  | "inbound";

/** Where a kept call stands. */
export type ResumedCallState =
  | "calling"
  | "incoming"
  | "answering"
  | "answered";

/** Why the agent refuses a call: 486, 603, 480. */
export type RejectReason =
  | "busy"
  | "decline"
  | "unavailable";

/** What a resumed session still holds. */
export interface Resumed {
  /** The agent is still registered with the PBX. */
  registered: boolean;
  /** Calls still up; renegotiate each one not `incoming` with a new peer connection (an `incoming` one is offered again by `incoming_call`). */
  calls: ResumedCall[];
}

/** One call kept across a WebSocket drop or page reload. */
export interface ResumedCall {
  /** The call, as named by callgate. */
  call_id: string;
  /** The CRM's id for the call (X-Call-UUID). */
  call_uuid?: string;
  /** Who placed it. */
  direction: CallDirection;
  /** The dialled number or the caller. */
  peer: string;
  /** Where the call stands. */
  state: ResumedCallState;
  /** The agent put it on hold. */
  held: boolean;
  /** The far end put it on hold. */
  remote_held: boolean;
  /** The agent's audio is muted at callgate. */
  muted: boolean;
}

/** Quality of a call on both legs with an E-model MOS estimate (ITU-T G.107). */
export interface CallQuality {
  /** The browser's leg (received from the browser). */
  webrtc: LegQuality;
  /** The PBX's leg (received from the PBX). */
  sip: LegQuality;
  /** Estimated mean opinion score, 1.0-4.5, from the worse leg. */
  mos: number;
}

/** Quality of one media leg over the call, as measured by callgate. */
export interface LegQuality {
  /** RTP packets callgate received on this leg. */
  packets: number;
  /** Packets the sender sent that never arrived (RFC 3550 expected − received). */
  lost: number;
  /** Interarrival jitter in milliseconds (RFC 3550). */
  jitter_ms: number;
  /** Round-trip time from RTCP on this leg, when it could be measured. */
  rtt_ms?: number;
}

/** The agent's own SIP extension and password (used for digest auth towards the PBX). */
export interface AuthSipCredentials {
  mode: "sip_credentials";
  /** SIP user part, e.g. "1001". */
  extension: string;
  /** SIP digest password; never logged. */
  password: string;
}

/** A short-lived JWT minted by the CRM (`sub` = extension, optional `dial` patterns); callgate looks up the SIP password itself. */
export interface AuthToken {
  mode: "token";
  /** When present, must equal the token's `sub`. */
  extension?: string;
  /** The compact JWT; never logged. */
  token: string;
}

/** How the agent proves who it is. */
export type Auth =
  | AuthSipCredentials
  | AuthToken;

/** Opens the session; must be the first message. */
export interface HelloRequest {
  type: "hello";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** Protocol version; must be 1. */
  protocol: number;
  /** The agent's credentials. */
  auth: Auth;
  /** Client name and version, logged for support. */
  user_agent?: string;
  /** The last welcome's `resume_token`: takes over that session (its calls and registration) if callgate still keeps it. */
  resume_token?: string;
}

/** Places an outbound call with the browser's WebRTC offer. */
export interface CallRequest {
  type: "call";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** Number or extension to dial. */
  to: string;
  /** The browser's SDP offer (PCMU or PCMA audio). */
  sdp: string;
  /** Extra SIP headers for the INVITE (allowed prefixes only, e.g. `X-`). */
  headers?: Record<string, string>;
  /** The CRM's id for the call, sent to the PBX (default header `X-Call-UUID`). */
  call_uuid?: string;
}

/** Ends a call: CANCEL before answer, BYE after. */
export interface HangupRequest {
  type: "hangup";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
}

/** Application keepalive; answered with an ack. */
export interface PingRequest {
  type: "ping";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
}

/** Registers the agent's extension with the PBX. */
export interface RegisterRequest {
  type: "register";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
}

/** Removes the registration. */
export interface UnregisterRequest {
  type: "unregister";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
}

/** Answers an `incoming_call` with the browser's SDP answer. */
export interface AnswerRequest {
  type: "answer";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
  /** The browser's SDP answer to the offer in `incoming_call`. */
  sdp: string;
}

/** Refuses an `incoming_call`. */
export interface RejectRequest {
  type: "reject";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
  /** 486 `busy` when absent. */
  reason?: RejectReason;
}

/** Puts a call on hold (re-INVITE sendonly). */
export interface HoldRequest {
  type: "hold";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
}

/** Resumes a held call. */
export interface UnholdRequest {
  type: "unhold";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
}

/** Stops relaying the agent's audio. */
export interface MuteRequest {
  type: "mute";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
}

/** Relays the agent's audio again. */
export interface UnmuteRequest {
  type: "unmute";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
}

/** Transfers the far end: blind (`to`) or attended (`replaces_call_id`); exactly one of them. */
export interface TransferRequest {
  type: "transfer";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
  /** Blind transfer target. */
  to?: string;
  /** Attended transfer: the agent's other call. */
  replaces_call_id?: string;
}

/** Sends DTMF digits on a call. */
export interface DtmfRequest {
  type: "dtmf";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
  /** `0-9 * # A-D`, at most 32. */
  digits: string;
  /** Per digit, 40-2000 ms (default 100). */
  duration_ms?: number;
}

/** A new WebRTC offer for a call kept across a drop or reload; the ack carries the answer. */
export interface RenegotiateRequest {
  type: "renegotiate";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The call, as named by callgate. */
  call_id: string;
  /** The new peer connection's offer (the call's G.711 codec). */
  sdp: string;
}

/** Sends a SIP MESSAGE. */
export interface MessageRequest {
  type: "message";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** Number or extension. */
  to: string;
  /** At most 4 KiB. */
  text: string;
  /** Default `text/plain;charset=UTF-8`. */
  content_type?: string;
}

/** A fresh token for this token session (same extension); the reply is `token_refreshed`. */
export interface RefreshTokenRequest {
  type: "refresh_token";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The compact JWT; never logged. */
  token: string;
}

/** Every message the browser may send. */
export type ClientMessage =
  | HelloRequest
  | CallRequest
  | HangupRequest
  | PingRequest
  | RegisterRequest
  | UnregisterRequest
  | AnswerRequest
  | RejectRequest
  | HoldRequest
  | UnholdRequest
  | MuteRequest
  | UnmuteRequest
  | TransferRequest
  | DtmfRequest
  | RenegotiateRequest
  | MessageRequest
  | RefreshTokenRequest;

/** Reply to `hello`: the session is open. */
export interface WelcomeMessage {
  type: "welcome";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** Protocol version in force. */
  protocol: number;
  /** Quoted in callgate's logs, for support. */
  session_id: string;
  /** e.g. "callgate/0.1.0". */
  server: string;
  /** Send it in the next hello after a drop or reload to keep this session. */
  resume_token?: string;
  /** The callgate node holding the session (for load-balancer affinity). */
  node?: string;
  /** Present when the hello resumed a kept session. */
  resumed?: Resumed;
  /** Token sessions: the token's `exp` (Unix seconds); refresh before it. */
  token_expires_at?: number;
}

/** Positive reply to a request. */
export interface AckMessage {
  type: "ack";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** For `call`: the new call's id. */
  call_id?: string;
  /** For `call`: callgate's SDP answer; apply it at once. */
  sdp?: string;
  /** For `call`: the UUID sent to the PBX. */
  call_uuid?: string;
}

/** Negative reply to a request, or a problem tied to none. */
export interface ErrorMessage {
  type: "error";
  /** The request this answers, when it could be read. */
  request_id?: number;
  /** The call concerned, if any. */
  call_id?: string;
  /** Branch on this, never on `message`. */
  code: ErrorCode;
  /** English detail for logs and developers. */
  message: string;
}

/** The far end is alerting (180, or 183 without SDP). */
export interface CallRingingMessage {
  type: "call_ringing";
  /** The call, as named by callgate. */
  call_id: string;
  /** 180 or 183. */
  sip_status: number;
}

/** Early media (183 with SDP) plays on the WebRTC leg. */
export interface CallEarlyMediaMessage {
  type: "call_early_media";
  /** The call, as named by callgate. */
  call_id: string;
  /** Usually 183. */
  sip_status: number;
}

/** The call is established. */
export interface CallAnsweredMessage {
  type: "call_answered";
  /** The call, as named by callgate. */
  call_id: string;
}

/** The call is over; nothing more follows for this `call_id`. */
export interface CallEndedMessage {
  type: "call_ended";
  /** The call, as named by callgate. */
  call_id: string;
  /** Which side ended it. */
  ended_by: EndedBy;
  /** Stable snake_case cause (docs/protocol.md lists them). */
  cause: string;
  /** Final SIP status when the SIP side failed the call. */
  sip_status?: number;
  /** Reason phrase or explanation. */
  reason: string;
  /** Whether the call had been answered. */
  answered: boolean;
  /** Media quality of an answered call (both legs and a MOS estimate). */
  quality?: CallQuality;
}

/** The PBX accepted the registration. */
export interface RegisteredMessage {
  type: "registered";
  /** Seconds granted; callgate refreshes before. */
  expires: number;
}

/** The agent is no longer registered. */
export interface UnregisteredMessage {
  type: "unregistered";
  /** `requested`, `refresh_failed` or `shutdown`. */
  reason: string;
}

/** The PBX refused the registration or could not be reached. */
export interface RegistrationFailedMessage {
  type: "registration_failed";
  /** Absent when the PBX was unreachable. */
  sip_status?: number;
  /** Reason phrase or explanation. */
  reason: string;
  /** Whether callgate keeps trying. */
  retrying: boolean;
}

/** A call for the agent: reply `answer` (to the offer in `sdp`) or `reject`. */
export interface IncomingCallMessage {
  type: "incoming_call";
  /** The call, as named by callgate. */
  call_id: string;
  /** Caller number. */
  from: string;
  /** Caller display name. */
  display_name?: string;
  /** Called number. */
  to: string;
  /** The INVITE's headers with a configured prefix (e.g. `X-`). */
  headers?: Record<string, string>;
  /** callgate's WebRTC SDP offer. */
  sdp: string;
}

/** A call was put on hold. */
export interface CallHeldMessage {
  type: "call_held";
  /** The call, as named by callgate. */
  call_id: string;
  /** Who held it. */
  by: HoldBy;
}

/** A held call was resumed. */
export interface CallResumedMessage {
  type: "call_resumed";
  /** The call, as named by callgate. */
  call_id: string;
  /** Who resumed it. */
  by: HoldBy;
}

/** Progress of a transfer (NOTIFY sipfrag). */
export interface TransferProgressMessage {
  type: "transfer_progress";
  /** The call, as named by callgate. */
  call_id: string;
  /** Status of the transfer target's call. */
  sip_status: number;
  /** Last report; 2xx means transferred. */
  done: boolean;
}

/** The far end sent a DTMF digit. */
export interface DtmfReceivedMessage {
  type: "dtmf_received";
  /** The call, as named by callgate. */
  call_id: string;
  /** `0-9 * # A-D`. */
  digit: string;
}

/** A SIP MESSAGE arrived for the agent. */
export interface MessageReceivedMessage {
  type: "message_received";
  /** Sender number. */
  from: string;
  /** Sender display name. */
  display_name?: string;
  /** The text. */
  text: string;
  /** Its MIME type. */
  content_type: string;
}

/** Reply to `refresh_token`: the session runs on the new token. */
export interface TokenRefreshedMessage {
  type: "token_refreshed";
  /** Chosen by the client; the single reply echoes it. */
  request_id: number;
  /** The new token's `exp` (Unix seconds). */
  expires_at: number;
}

/** The session's token expires soon: send `refresh_token` with a fresh one. */
export interface TokenExpiringMessage {
  type: "token_expiring";
  /** The token's `exp` (Unix seconds). */
  expires_at: number;
}

/** The token expired without a refresh: new activity is refused; the session closes (code 4002) once its last call has ended. */
export interface TokenExpiredMessage {
  type: "token_expired";
  /** The token's `exp` (Unix seconds). */
  expires_at: number;
  /** Calls still up; they go on until hung up. */
  active_calls: number;
}

/** Every message callgate may send. */
export type ServerMessage =
  | WelcomeMessage
  | AckMessage
  | ErrorMessage
  | CallRingingMessage
  | CallEarlyMediaMessage
  | CallAnsweredMessage
  | CallEndedMessage
  | RegisteredMessage
  | UnregisteredMessage
  | RegistrationFailedMessage
  | IncomingCallMessage
  | CallHeldMessage
  | CallResumedMessage
  | TransferProgressMessage
  | DtmfReceivedMessage
  | MessageReceivedMessage
  | TokenRefreshedMessage
  | TokenExpiringMessage
  | TokenExpiredMessage;

/** Removes `request_id` from each member of a union. */
export type WithoutRequestId<M> = M extends unknown ? Omit<M, "request_id"> : never;

/** A client message without its request_id (the SDK assigns ids). */
export type ClientRequest = WithoutRequestId<ClientMessage>;
