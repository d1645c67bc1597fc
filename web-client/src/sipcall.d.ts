// Type declarations of the SipCall SDK (src/sipcall.js, dist/sipcall.mjs, dist/sipcall.js).
// The wire protocol's own types are generated from the Rust crate into ./protocol.d.ts;
// test/types.test.js checks that every method and event declared here exists in the code.

import type { ErrorCode, RejectReason, HoldBy, CallQuality } from './protocol';

export type { ClientMessage, ServerMessage, ErrorCode, CallQuality, LegQuality } from './protocol';

/** UI and message languages. */
export type Language = 'zh' | 'en' | 'vi';

/** Browser APIs SipCall uses; override any of them (tests, non-browser hosts). */
export interface SipCallEnv {
  WebSocket: { new (url: string): WebSocket };
  RTCPeerConnection: { new (config?: RTCConfiguration): RTCPeerConnection };
  MediaStream: { new (tracks?: MediaStreamTrack[]): MediaStream };
  mediaDevices: MediaDevices | undefined;
  document: Document | undefined;
  language: string | undefined;
  /** Where the resume token survives a reload of the tab (null: no resume after reloads). */
  sessionStorage: Storage | null;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(id: unknown): void;
  random(): number;
  randomUUID: (() => string) | null;
  getRandomValues: ((array: Uint8Array) => Uint8Array) | null;
}

/** The seed SDK's configuration plus callgate's additions. */
export interface SipCallConfig {
  /** callgate's host name or IP. Required unless `url` is given. */
  host?: string;
  /** callgate's HTTP port (omitted from the URL when it is the scheme's default). */
  port?: string | number;
  /** true: wss://, false/absent: ws://. */
  proto?: boolean;
  /** WebSocket path, default `/ws`. */
  path?: string;
  /** Full WebSocket URL; overrides host/port/proto/path. */
  url?: string;
  /** The agent's extension. */
  extNo: string;
  /** The extension's SIP password (protocol v1's `sip_credentials` login). */
  extPwd?: string;
  /**
   * A login token instead of `extPwd`: a short-lived JWT minted by the CRM backend
   * (`sub` = extNo), sent as hello auth `{mode: "token", extension, token}`; callgate looks
   * the SIP password up itself. A refusal emits ERROR with `code` `token_expired` (fetch a
   * fresh token and call `setToken`), `auth_failed`, or `auth_mode_disabled` (a gateway
   * without token mode).
   */
  token?: string;
  /**
   * Token mode: fetches a fresh token from the CRM backend. Called when callgate warns that
   * the session's token expires (TOKEN_EXPIRING; the result is sent as `refresh_token`),
   * before every reconnect, instead of `token` when none is given, and once after the
   * session ended with its token (close 4002). A rejection emits ERROR `token_fetch_failed`.
   */
  getToken?: () => Promise<string> | string;
  /** Register the extension as soon as connected so inbound calls arrive (default false). */
  autoRegister?: boolean;
  /**
   * Resume after a dropped connection or a page reload (default true): callgate keeps the
   * session's calls and registration for its grace period (30 s by default); the SDK presents
   * the welcome's resume token (kept in sessionStorage for reloads), keeps or restores the
   * call (CALL_RESTORED after a reload) and reconnects its audio with a new peer connection.
   */
  resume?: boolean;
  /** Receives every event, like the seed's. */
  stateEventListener?: (event: SipCallEventName, data: unknown) => void;
  /** Log protocol frames to the console (passwords redacted). */
  debug?: boolean;
  /** Language of every `msg` (default: the browser's when zh/en/vi, else en). */
  lang?: Language | string;
  /** Where the far end's audio plays (default: a detached autoplay <audio>). */
  audioElement?: HTMLAudioElement;
  /** Microphone deviceId (see getMediaDeviceInfo); default the system's. */
  micDeviceId?: string;
  /** ICE servers; callgate is ICE-lite and normally needs none. */
  iceServers?: RTCIceServer[];
  /** First reconnect delay in ms (default 500); doubles per attempt, with jitter. */
  reconnectBaseDelay?: number;
  /** Longest reconnect delay in ms (default 30000). */
  reconnectMaxDelay?: number;
  /** Keepalive ping period in ms (default 20000). */
  pingInterval?: number;
  /** A request without reply after this many ms (default 10000) replaces the socket. */
  requestTimeout?: number;
  /** Override browser APIs. */
  env?: Partial<SipCallEnv>;
}

/** `{msg}` payloads (ERROR, MIC_ERROR); `code` is callgate's error code when it sent one. */
export interface MessageEvent {
  msg: string;
  code?: ErrorCode | string;
}

export interface ConnectedEvent {
  localAgent: string;
  /** The session (calls, registration) survived a drop or reload. */
  resumed: boolean;
  /** Token mode: the session token's `exp`, Unix seconds (welcome.token_expires_at). */
  tokenExpiresAt?: number;
}

export interface DisconnectedEvent {
  code?: number;
  reason?: string;
}

export interface ReconnectingEvent {
  /** 1 for the first retry of an outage. */
  attempt: number;
  /** Milliseconds until this attempt. */
  delay: number;
}

export interface ReconnectedEvent {
  /** Attempts the outage took. */
  attempts: number;
  /** callgate had kept the session: the current call continues. */
  resumed: boolean;
}

export interface RegisteredEvent {
  localAgent: string;
  /** Seconds the PBX granted (absent when the registration survived a resume). */
  expires?: number;
  /** The registration survived a drop or reload. */
  resumed?: boolean;
}

export interface UnregisteredEvent {
  localAgent: string;
  /** `requested`, `refresh_failed` or `shutdown`. */
  reason: string;
}

export interface RegisterFailedEvent {
  msg: string;
  /** The PBX's SIP status, 0 when none. */
  code: number;
  /** Whether callgate keeps trying. */
  retrying: boolean;
}

/** INCOMING_CALL / OUTGOING_CALL. */
export interface CallEvent {
  direction: 'inbound' | 'outbound';
  /** The other party's number. */
  otherLegNumber: string;
  /** The call UUID: the one call() returned, or an inbound call's X-Call-UUID (else callgate's call id). */
  callId: string;
}

export interface IncomingCallEvent extends CallEvent {
  direction: 'inbound';
  displayName?: string;
  /** The number that was called. */
  calledNumber: string;
  /** The INVITE's custom headers (e.g. X-Customer-Id), for the CRM's customer card. */
  headers: Record<string, string>;
}

export interface CallRefEvent {
  callId: string;
}

export interface ProgressEvent extends CallRefEvent {
  /** The provisional SIP status (180, 183). */
  code: number;
}

export interface InCallEvent extends CallRefEvent {
  /** Set when the call was resumed from hold. */
  resumed?: boolean;
  by?: HoldBy;
}

export interface HoldEvent extends CallRefEvent {
  by: HoldBy;
}

export interface CallEndEvent {
  /** `local` (the agent), `remote` (the far end / PBX) or `system` (callgate, network, browser). */
  originator: 'local' | 'remote' | 'system';
  /** callgate's `call_ended.cause`, a callgate error code, or `mic_error` / `media_setup_failed` / `cancelled`. */
  cause: string;
  /** The final SIP status, 0 when there was none. */
  code: number;
  answered: boolean;
  /**
   * callgate's measurement of the call's media (`call_ended.quality`, as sent: both legs'
   * packets, loss, jitter and RTT, and a MOS estimate). Absent when callgate sent none, e.g. for
   * a call that was never answered or that ended in the browser.
   */
  quality?: CallQuality;
  /** Localized explanation from the message table. */
  msg: string;
  callId: string;
  direction: 'inbound' | 'outbound';
  otherLegNumber: string;
}

export interface LatencyStatEvent {
  /** Round-trip time to callgate in ms. */
  latencyTime: number;
  /** Loss of the agent's audio over the last second, 0..1. */
  upLossRate: number;
  /** Loss of received audio over the last second, 0..1. */
  downLossRate: number;
  /** Microphone level, 0..1. */
  upAudioLevel: number;
  /** Received audio level, 0..1. */
  downAudioLevel: number;
}

export interface TransferProgressEvent extends CallRefEvent {
  code: number;
  done: boolean;
}

export interface DtmfReceivedEvent extends CallRefEvent {
  digit: string;
}

/** A call kept by callgate across a page reload is the current call again. */
export interface CallRestoredEvent {
  callId: string;
  direction: 'inbound' | 'outbound';
  otherLegNumber: string;
  /** Answered (IN_CALL already happened before the reload). */
  answered: boolean;
  held: boolean;
  muted: boolean;
}

/** Token mode: the session's token expires soon (refresh with `setToken`, or `getToken`). */
export interface TokenExpiringEvent {
  /** The token's `exp`, Unix seconds. */
  expiresAt: number;
}

/** Token mode: callgate runs the session on the token given to `setToken`. */
export interface TokenRefreshedEvent {
  /** The new token's `exp`, Unix seconds. */
  expiresAt: number;
}

/**
 * Token mode: the token expired without a refresh. New calls, transfers, registrations and
 * messages are refused (`token_expired`); the calls in progress go on, then callgate closes
 * the session (code 4002).
 */
export interface TokenExpiredEvent {
  expiresAt: number;
  /** Calls still up. */
  activeCalls: number;
}

export interface MessageReceivedEvent {
  from: string;
  displayName?: string;
  text: string;
  contentType: string;
}

/** Every event and its payload. */
export interface SipCallEvents {
  MIC_ERROR: MessageEvent;
  ERROR: MessageEvent;
  CONNECTED: ConnectedEvent;
  DISCONNECTED: DisconnectedEvent;
  RECONNECTING: ReconnectingEvent;
  RECONNECTED: ReconnectedEvent;
  REGISTERED: RegisteredEvent;
  UNREGISTERED: UnregisteredEvent;
  REGISTER_FAILED: RegisterFailedEvent;
  INCOMING_CALL: IncomingCallEvent;
  OUTGOING_CALL: CallEvent;
  RINGING: ProgressEvent;
  EARLY_MEDIA: ProgressEvent;
  IN_CALL: InCallEvent;
  HOLD: HoldEvent;
  CALL_END: CallEndEvent;
  CALL_RESTORED: CallRestoredEvent;
  MUTE: CallRefEvent;
  UNMUTE: CallRefEvent;
  LATENCY_STAT: LatencyStatEvent;
  TRANSFER_PROGRESS: TransferProgressEvent;
  DTMF_RECEIVED: DtmfReceivedEvent;
  /** The text of an incoming SIP MESSAGE (the seed passes the body alone). */
  MESSAGE_INCOMING: string;
  MESSAGE_RECEIVED: MessageReceivedEvent;
  TOKEN_EXPIRING: TokenExpiringEvent;
  TOKEN_REFRESHED: TokenRefreshedEvent;
  TOKEN_EXPIRED: TokenExpiredEvent;
}

export type SipCallEventName = keyof SipCallEvents;

/** Extra call parameters: `businessId` → header `X-Business-Id`; values ≤ 100 characters, one line. */
export type ExtraParam = Record<string, string | number | boolean | null | undefined>;

export interface CallSnapshot {
  callId: string;
  direction: 'inbound' | 'outbound';
  otherLegNumber: string;
  displayName?: string;
  headers: Record<string, string>;
  answered: boolean;
  held: boolean;
  muted: boolean;
}

export interface SipCallState {
  connected: boolean;
  registered: boolean;
  call: CallSnapshot | null;
}

/** What testMicrophone resolves to: call yes() or no() to stop the test. */
export interface MicrophoneTest {
  yes(): void;
  no(): void;
  /** Set (localized) when the microphone could not be opened. */
  error?: string;
}

export default class SipCall {
  static readonly VERSION: string;
  static readonly EVENTS: { readonly [K in SipCallEventName]: K };
  static readonly AutoCallTask: typeof AutoCallTask;

  /** Connects at once; create one per page. */
  constructor(config: SipCallConfig);

  /** The agent's extension. */
  readonly localAgent: string;

  on<K extends SipCallEventName>(name: K, listener: (data: SipCallEvents[K]) => void): void;
  on(name: 'event', listener: (event: SipCallEventName, data: unknown) => void): void;
  off<K extends SipCallEventName>(name: K, listener: (data: SipCallEvents[K]) => void): void;
  off(name: 'event', listener: (event: SipCallEventName, data: unknown) => void): void;

  /** Ends the call, closes the connection for good and drops every listener. */
  cleanSDK(): void;
  /** Resolves true when the microphone opens; emits MIC_ERROR otherwise. */
  micCheck(): Promise<boolean>;
  setLanguage(lang: Language | string): void;
  /**
   * Token mode: replaces the token. A connected session sends it to callgate
   * (`refresh_token`; TOKEN_REFRESHED, or ERROR with callgate's code) and resolves true once
   * callgate runs the session on it. Offline, the next (re)connect uses it; after a refused
   * login (e.g. ERROR `token_expired`) it also connects again.
   */
  setToken(token: string): Promise<boolean>;
  setMicrophone(deviceId: string | null): void;
  register(): void;
  unregister(): void;
  /** Returns the call UUID, or null when the call could not start (ERROR says why). */
  call(phone: string, extraParam?: ExtraParam): string | null;
  answer(): void;
  reject(reason?: RejectReason): void;
  hangup(): void;
  hold(): void;
  unhold(): void;
  mute(): void;
  unmute(): void;
  transfer(phone: string): void;
  /** Digits 0-9 * # A-D, at most 32. */
  sendDtmf(tone: string): void;
  sendMessage(target: string, text: string): void;
  getState(): SipCallState;
  getPeerConnection(): RTCPeerConnection | null;

  /** Calls `handle(0-100)` ~10×/s with the microphone level until yes()/no(). */
  static testMicrophone(handle: (level: number) => void, options?: { lang?: Language | string; env?: Partial<SipCallEnv> }): Promise<MicrophoneTest>;
  /** navigator.mediaDevices.enumerateDevices(), or [] without it. */
  static getMediaDeviceInfo(): Promise<MediaDeviceInfo[]>;
}

// ---- AutoCallTask ---------------------------------------------------------------------------

export interface TaskItem {
  phone: string;
  id: string;
  /** Passed to call() as its extraParam. */
  extraParam?: ExtraParam;
  [key: string]: unknown;
}

export type TaskStatus = 'pause' | 'running' | 'end';

export interface TaskStat {
  status: TaskStatus;
  total: number;
  called: number;
  answered: number;
  unAnswered: number;
  currentTask: TaskItem | undefined;
  /** ms since the epoch, null before start(). */
  startTime: number | null;
  /** Seconds since start(). */
  duration: number;
  /** `calling`, `in_call`, `after_call_work`, `waiting_for_idle`, a pause reason, or `end`. */
  runInfo: string;
}

export interface TaskPauseInfo {
  source: 'user' | 'system';
  /** '' (user), `disconnected`, `unregistered`, `call_failed`. */
  reason: string;
}

export interface TaskCallResult extends TaskItem {
  result: { answered: boolean; cause: string; code: number; msg: string };
}

export interface TaskCallbacks {
  task_stat: TaskStat;
  task_end: TaskStat;
  task_pause: TaskPauseInfo;
  call_answer: TaskItem;
  call_end: TaskCallResult;
}

export interface AutoCallTaskConfig {
  /** After an answered call, wait for next() (the seed's name). */
  AutoAfterCallWork?: boolean;
  afterCallWork?: boolean;
  /** With after-call work: resume by itself after this many seconds (0 = wait for next()). */
  afterCallWorkSeconds?: number;
  /** Pause between calls in ms (default 1000). */
  callInterval?: number;
  env?: Partial<Pick<SipCallEnv, 'setTimeout' | 'clearTimeout' | 'setInterval' | 'clearInterval'>> & { now?: () => number };
}

/** The seed's progressive dialer. */
export class AutoCallTask {
  constructor(
    sipClient: SipCall,
    config?: AutoCallTaskConfig,
    taskCallback?: <K extends keyof TaskCallbacks>(type: K, data: TaskCallbacks[K]) => void,
  );
  addTask(task: TaskItem): void;
  addTasks(tasks: TaskItem[]): void;
  start(): void;
  pause(): void;
  stop(): void;
  next(): void;
  destroy(): void;
  getStat(): TaskStat;
}

/** Localized text for a failure: error code first, then SIP status, then cause. */
export function describeFailure(
  failure: { errorCode?: ErrorCode | string; sipStatus?: number; cause?: string; endedBy?: string },
  lang?: Language,
): string;

export const VERSION: string;
export const EVENTS: { readonly [K in SipCallEventName]: K };
/** `businessId` → `X-Business-Id`; `{error}` names the message key when a value is refused. */
export function extraHeaders(extraParam: ExtraParam): { headers?: Record<string, string>; error?: string };
/** The WebSocket URL from the seed's host/port/proto plus path. */
export function gatewayUrl(config: Pick<SipCallConfig, 'url' | 'host' | 'port' | 'proto' | 'path'>): string;
/** `url` with `node=<node>` of a resume token added (load-balancer affinity on reconnect). */
export function withResumeNode(url: string, token: string | null): string;
/** A v4 UUID, also on plain-http pages. */
export function makeUuid(env: Pick<SipCallEnv, 'randomUUID' | 'getRandomValues' | 'random'>): string;
