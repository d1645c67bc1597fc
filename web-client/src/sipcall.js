// SipCall: the seed softphone SDK's API (JsSIP-based `sip-call`) on top of callgate's JSON
// protocol (docs/protocol.md). One instance per agent page; one current call at a time, like
// the seed. Misuse never throws: it becomes an ERROR event with a localized message.

import { Emitter } from './emitter.js';
import { Connection, PROTOCOL_VERSION } from './connection.js';
import { describe, text, pickLanguage } from './messages.js';
import { latencyStat, emptySample } from './stats.js';
import {
  openMicrophone,
  createPeer,
  makeOffer,
  makeAnswer,
  closePeer,
  setMicEnabled,
  stopStream,
} from './media.js';
import { AutoCallTask } from './autocall.js';

/** SDK version, sent to callgate as the hello's user_agent. */
export const VERSION = '0.1.0';

/** Every event name SipCall emits (the seed's plus callgate's extras). */
export const EVENTS = Object.freeze({
  MIC_ERROR: 'MIC_ERROR',
  ERROR: 'ERROR',
  CONNECTED: 'CONNECTED',
  DISCONNECTED: 'DISCONNECTED',
  RECONNECTING: 'RECONNECTING',
  RECONNECTED: 'RECONNECTED',
  REGISTERED: 'REGISTERED',
  UNREGISTERED: 'UNREGISTERED',
  REGISTER_FAILED: 'REGISTER_FAILED',
  INCOMING_CALL: 'INCOMING_CALL',
  OUTGOING_CALL: 'OUTGOING_CALL',
  RINGING: 'RINGING',
  EARLY_MEDIA: 'EARLY_MEDIA',
  IN_CALL: 'IN_CALL',
  HOLD: 'HOLD',
  CALL_END: 'CALL_END',
  CALL_RESTORED: 'CALL_RESTORED',
  MUTE: 'MUTE',
  UNMUTE: 'UNMUTE',
  LATENCY_STAT: 'LATENCY_STAT',
  TRANSFER_PROGRESS: 'TRANSFER_PROGRESS',
  DTMF_RECEIVED: 'DTMF_RECEIVED',
  MESSAGE_INCOMING: 'MESSAGE_INCOMING',
  MESSAGE_RECEIVED: 'MESSAGE_RECEIVED',
  TOKEN_EXPIRING: 'TOKEN_EXPIRING',
  TOKEN_REFRESHED: 'TOKEN_REFRESHED',
  TOKEN_EXPIRED: 'TOKEN_EXPIRED',
});

const ENDED_BY = { agent: 'local', remote: 'remote', gateway: 'system' };
const DTMF_DIGITS = /^[0-9*#A-D]{1,32}$/;
const HEADER_NAME = /^[A-Za-z0-9-]+$/;
const EXTRA_VALUE_MAX = 100;

/** The browser's implementations, overridable one by one (tests, non-browser hosts). */
function resolveEnv(overrides = {}) {
  const g = globalThis;
  const nav = g.navigator;
  const cryptoApi = g.crypto;
  return {
    WebSocket: g.WebSocket,
    RTCPeerConnection: g.RTCPeerConnection,
    MediaStream: g.MediaStream,
    mediaDevices: nav && nav.mediaDevices,
    document: g.document,
    sessionStorage: safeSessionStorage(g),
    language: nav && nav.language,
    setTimeout: (fn, ms) => g.setTimeout(fn, ms),
    clearTimeout: (id) => g.clearTimeout(id),
    setInterval: (fn, ms) => g.setInterval(fn, ms),
    clearInterval: (id) => g.clearInterval(id),
    random: Math.random,
    randomUUID: cryptoApi && cryptoApi.randomUUID ? () => cryptoApi.randomUUID() : null,
    getRandomValues: cryptoApi && cryptoApi.getRandomValues ? (a) => cryptoApi.getRandomValues(a) : null,
    ...overrides,
  };
}

/** The page's sessionStorage, or null where reading it throws (sandboxed frames, privacy modes). */
function safeSessionStorage(g) {
  try {
    return g.sessionStorage || null;
  } catch {
    return null;
  }
}

/**
 * A v4 UUID. crypto.randomUUID exists only in secure contexts (https, localhost); a CRM on
 * plain http behind a proxy still needs call UUIDs, so fall back to getRandomValues.
 */
export function makeUuid(env) {
  if (env.randomUUID) return env.randomUUID();
  const bytes = new Uint8Array(16);
  if (env.getRandomValues) env.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(env.random() * 256);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The SIP header for one `extraParam` key: `businessId` → `X-Business-Id`; a key that already
 * starts with `X-` is kept. Values are single-line and at most 100 characters (the seed's
 * limit). Returns `{headers}` or `{error: messageKey}`.
 */
export function extraHeaders(extraParam) {
  const headers = {};
  if (!extraParam || typeof extraParam !== 'object') return { headers };
  for (const [key, raw] of Object.entries(extraParam)) {
    if (raw === undefined || raw === null) continue;
    const name = /^x-/i.test(key)
      ? key
      : 'X-' +
        key
          .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
          .split(/[-_\s]+/)
          .filter(Boolean)
          .map((part) => part[0].toUpperCase() + part.slice(1))
          .join('-');
    if (!HEADER_NAME.test(name)) return { error: 'invalid_header' };
    const value = String(raw);
    if (value.length > EXTRA_VALUE_MAX || /[\r\n]/.test(value)) return { error: 'extra_param_too_long' };
    headers[name] = value;
  }
  return { headers };
}

/** The WebSocket URL from the seed's host/port/proto plus callgate's path. */
export function gatewayUrl({ url, host, port, proto, path = '/ws' }) {
  if (url) return url;
  const scheme = proto ? 'wss' : 'ws';
  const h = String(host).includes(':') && !String(host).startsWith('[') ? `[${host}]` : host;
  const defaultPort = proto ? '443' : '80';
  const p = port !== undefined && port !== null && String(port) !== '' && String(port) !== defaultPort ? `:${port}` : '';
  return `${scheme}://${h}${p}${path.startsWith('/') ? path : '/' + path}`;
}

/**
 * The WebSocket URL with `node=<node>` (the resume token's prefix, callgate's `welcome.node`)
 * once a session exists, so a load balancer can send a reconnecting browser back to the node
 * that keeps its calls (docs/scaling.md). callgate itself ignores the parameter.
 */
export function withResumeNode(url, token) {
  const node = token ? String(token).split('.')[0] : '';
  if (!node || !/^[A-Za-z0-9_-]{1,63}$/.test(node)) return url;
  const cut = url.replace(/[?&]node=[^&#]*/, '').replace(/\?&/, '?').replace(/\?$/, '');
  return `${cut}${cut.includes('?') ? '&' : '?'}node=${node}`;
}

export default class SipCall {
  /**
   * Connects to callgate at once (like the seed's constructor) and authenticates as the
   * extension; with `autoRegister` it also registers so inbound calls arrive. Create one per
   * page, not one per call.
   */
  constructor(config = {}) {
    this.config = { ...config };
    this.env = resolveEnv(config.env);
    this.lang = pickLanguage(config.lang, this.env.language);
    const debug = Boolean(config.debug);
    this.log = {
      debug: (...args) => debug && console.debug('[sipcall]', ...args),
      error: (...args) => console.error('[sipcall]', ...args),
    };
    this.events = new Emitter(config.stateEventListener, this.log);
    this.localAgent = config.extNo === undefined ? '' : String(config.extNo);
    this.micDeviceId = config.micDeviceId || null;
    this.audio = config.audioElement || this.createAudioElement();
    this.current = null;
    this.registered = false;
    this.wantRegistered = Boolean(config.autoRegister);
    // Resume (callgate keeps a dropped session's calls for a grace period): the token of the
    // last welcome, kept in sessionStorage so a reload of this tab resumes too.
    this.resume = config.resume !== false;
    this.resumeKey = `callgate.resume.${this.localAgent}`;
    this.resumeToken = this.resume ? this.loadResumeToken() : null;
    this.online = false;
    this.cleaned = false;
    this.conn = null;

    // Token mode: `getToken` (async, returns a fresh JWT from the CRM backend) is called when
    // callgate warns that the token expires, before every reconnect, and when no token is set.
    this.getToken = typeof config.getToken === 'function' ? config.getToken : null;
    this.tokenExpiresAt = null;
    this.tokenRecovering = false;
    // Token mode: the page logs in with a CRM-minted token rather than a SIP password.
    this.tokenLogin = !config.extPwd && Boolean(config.token || this.getToken);
    const hasSecret = Boolean(config.extPwd) || this.tokenLogin;
    if ((!config.host && !config.url) || !this.localAgent || !hasSecret) {
      Promise.resolve().then(() => this.emit(EVENTS.ERROR, { msg: text('bad_config', this.lang) }));
      return;
    }
    this.conn = new Connection({
      url: () => withResumeNode(gatewayUrl(config), this.resumeToken),
      env: this.env,
      log: this.log,
      options: {
        reconnectBaseDelay: config.reconnectBaseDelay,
        reconnectMaxDelay: config.reconnectMaxDelay,
        pingInterval: config.pingInterval,
        requestTimeout: config.requestTimeout,
      },
      hello: () => ({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        // Read at every (re)connect: setToken() swaps in a fresh token.
        auth: this.config.extPwd
          ? { mode: 'sip_credentials', extension: this.localAgent, password: String(this.config.extPwd) }
          : { mode: 'token', extension: this.localAgent, token: String(this.config.token) },
        user_agent: `sipcall.js/${VERSION}`,
        ...(this.resumeToken ? { resume_token: this.resumeToken } : {}),
      }),
      beforeReconnect: () => this.onBeforeReconnect(),
      onOpen: (welcome, reconnected, attempts) => this.onOpen(welcome, reconnected, attempts),
      onMessage: (msg) => this.onMessage(msg),
      onDrop: (info) => this.onDrop(info),
      onFatal: (error) => this.onFatal(error),
    });
    this.conn.start({ prepare: this.tokenLogin && !config.token });
  }

  /**
   * Replaces the login token (token mode). On a connected session it is sent to callgate
   * (`refresh_token`), which then runs the session on it: TOKEN_REFRESHED `{expiresAt}`, or
   * ERROR with callgate's code when refused (the session keeps its old token). Offline, the
   * next (re)connect says hello with it; after a refused login (e.g. ERROR `token_expired`)
   * it also connects again. Resolves true once a live session took the token.
   */
  setToken(token) {
    if (this.cleaned || !token) return Promise.resolve(false);
    this.config.token = String(token);
    if (!this.conn) return Promise.resolve(false);
    if (!this.online) {
      this.conn.restart();
      return Promise.resolve(false);
    }
    if (!this.tokenLogin) return Promise.resolve(false);
    return this.conn.request({ type: 'refresh_token', token: this.config.token }).then(
      (reply) => {
        this.tokenExpiresAt = reply.expires_at;
        this.emit(EVENTS.TOKEN_REFRESHED, { expiresAt: reply.expires_at });
        return true;
      },
      (error) => {
        // Lost with the socket: the reconnect says hello with the new token anyway.
        if (error.code !== 'not_connected') {
          this.emit(EVENTS.ERROR, { msg: describe({ errorCode: error.code }, this.lang), code: error.code });
        }
        return false;
      },
    );
  }

  /** Adds a listener: an event name, or 'event' for `(event, data)` on every event. */
  on(name, fn) {
    this.events.on(name, fn);
  }

  /** Removes a listener added with `on`. */
  off(name, fn) {
    this.events.off(name, fn);
  }

  /**
   * Tears the SDK down (logout, page change): ends the call, closes the socket for good (which
   * also unregisters the extension at callgate) and drops every listener.
   */
  cleanSDK() {
    if (this.cleaned) return;
    if (this.current) this.finish(this.current, { originator: 'local', cause: 'websocket_closed', code: 0 });
    this.cleaned = true;
    this.storeResumeToken(null);
    if (this.conn) this.conn.stop();
    this.online = false;
    this.registered = false;
    this.events.clear();
  }

  /**
   * Checks that the microphone can be opened (permission, device present) and releases it;
   * emits MIC_ERROR with the reason when it cannot. Resolves true when the mic works.
   */
  async micCheck() {
    try {
      stopStream(await openMicrophone(this.env, this.micDeviceId));
      return true;
    } catch (error) {
      this.emit(EVENTS.MIC_ERROR, { msg: text(error.micKey, this.lang) });
      return false;
    }
  }

  /** Switches the language of every later message ('zh', 'en' or 'vi'). */
  setLanguage(lang) {
    this.lang = pickLanguage(lang, this.env.language);
  }

  /** Chooses the microphone for the next call (a deviceId from getMediaDeviceInfo). */
  setMicrophone(deviceId) {
    this.micDeviceId = deviceId || null;
  }

  /** Registers the extension with the PBX through callgate so inbound calls reach this page. */
  register() {
    if (!this.usable()) return;
    this.wantRegistered = true;
    this.conn.request({ type: 'register' }).catch((error) => {
      this.emit(EVENTS.REGISTER_FAILED, { msg: describe({ errorCode: error.code }, this.lang), code: 0, retrying: false });
    });
  }

  /** Removes the registration; inbound calls stop, outbound calls still work. */
  unregister() {
    if (!this.usable()) return;
    if (!this.registered && !this.wantRegistered) return this.misuse('not_registered');
    this.wantRegistered = false;
    this.conn.request({ type: 'unregister' }).catch((error) => this.requestFailed(error));
  }

  /**
   * Dials `phone` and returns the call UUID (sent to the PBX as X-Call-UUID so its CDR
   * matches), or null when the call could not be started (an ERROR event says why).
   * `extraParam` keys become X- headers (`businessId` → `X-Business-Id`). Every call that
   * returned a UUID ends with exactly one CALL_END.
   */
  call(phone, extraParam = {}) {
    if (!this.usable()) return null;
    if (this.current) return this.misuse('call_in_progress', null);
    const to = String(phone === undefined || phone === null ? '' : phone).trim();
    if (!to) return this.misuse('empty_target', null);
    const extra = extraHeaders(extraParam);
    if (extra.error) return this.misuse(extra.error, null);
    const call = this.newCall({ uuid: makeUuid(this.env), direction: 'outbound', number: to });
    this.placeCall(call, extra.headers);
    return call.uuid;
  }

  /** Answers the ringing inbound call with the microphone. */
  answer() {
    const call = this.current;
    if (this.cleaned) return this.misuse('sdk_cleaned');
    if (!call || call.direction !== 'inbound' || call.phase !== 'incoming') return this.misuse('no_ringing_call');
    call.phase = 'answering';
    this.answerCall(call);
  }

  /** Refuses the ringing inbound call: 'busy' (486, default), 'decline' (603), 'unavailable' (480). */
  reject(reason = 'busy') {
    const call = this.current;
    if (this.cleaned) return this.misuse('sdk_cleaned');
    if (!call || call.direction !== 'inbound' || call.phase !== 'incoming') return this.misuse('no_ringing_call');
    call.phase = 'rejecting';
    this.conn
      .request({ type: 'reject', call_id: call.id, reason })
      .catch((error) => this.callRequestFailed(call, error));
  }

  /** Ends the current call: cancels it while ringing, hangs up once answered, rejects an unanswered inbound call. */
  hangup() {
    const call = this.current;
    if (this.cleaned) return this.misuse('sdk_cleaned');
    if (!call) return this.misuse('no_call');
    if (call.direction === 'inbound' && call.phase === 'incoming' && !call.suspended) return this.reject('busy');
    call.hangupWanted = true;
    if (!call.id) return; // placeCall sends the hangup once callgate has named the call
    if (call.suspended) return; // sent once the session is resumed
    this.sendHangup(call);
  }

  /** Puts the answered call on hold (the PBX plays music on hold); HOLD follows. */
  hold() {
    const call = this.activeCall();
    if (!call) return;
    if (call.held) return this.misuse('already_held');
    this.conn.request({ type: 'hold', call_id: call.id }).catch((error) => this.callRequestFailed(call, error));
  }

  /** Resumes a held call; IN_CALL follows. */
  unhold() {
    const call = this.activeCall();
    if (!call) return;
    if (!call.held) return this.misuse('not_held');
    this.conn.request({ type: 'unhold', call_id: call.id }).catch((error) => this.callRequestFailed(call, error));
  }

  /** Stops sending the agent's voice (in the browser and at callgate); MUTE follows. */
  mute() {
    const call = this.activeCall();
    if (!call) return;
    if (call.muted) return this.misuse('already_muted');
    call.muted = true;
    setMicEnabled(call.stream, false);
    this.conn.request({ type: 'mute', call_id: call.id }).then(
      () => !call.ended && this.emit(EVENTS.MUTE, { callId: call.uuid }),
      (error) => {
        call.muted = false;
        setMicEnabled(call.stream, true);
        this.callRequestFailed(call, error);
      },
    );
  }

  /** Sends the agent's voice again; UNMUTE follows. */
  unmute() {
    const call = this.activeCall();
    if (!call) return;
    if (!call.muted) return this.misuse('not_muted');
    this.conn.request({ type: 'unmute', call_id: call.id }).then(
      () => {
        if (call.ended) return;
        call.muted = false;
        setMicEnabled(call.stream, true);
        this.emit(EVENTS.UNMUTE, { callId: call.uuid });
      },
      (error) => this.callRequestFailed(call, error),
    );
  }

  /** Blind-transfers the far end to `phone`; TRANSFER_PROGRESS follows, then CALL_END (transferred). */
  transfer(phone) {
    const call = this.activeCall();
    if (!call) return;
    const to = String(phone === undefined || phone === null ? '' : phone).trim();
    if (!to) return this.misuse('empty_target');
    this.conn.request({ type: 'transfer', call_id: call.id, to }).catch((error) => this.callRequestFailed(call, error));
  }

  /** Sends DTMF digits (0-9 * # A-D, up to 32) on the answered call, e.g. for an IVR. */
  sendDtmf(tone) {
    const call = this.activeCall();
    if (!call) return;
    const digits = String(tone === undefined || tone === null ? '' : tone).toUpperCase();
    if (!DTMF_DIGITS.test(digits)) return this.misuse('invalid_dtmf');
    this.conn.request({ type: 'dtmf', call_id: call.id, digits }).catch((error) => this.callRequestFailed(call, error));
  }

  /** Sends a text (SIP MESSAGE) to an extension or number. */
  sendMessage(target, content) {
    if (!this.usable()) return;
    const to = String(target === undefined || target === null ? '' : target).trim();
    if (!to) return this.misuse('empty_target');
    if (content === undefined || content === null || String(content) === '') return this.misuse('empty_message');
    this.conn.request({ type: 'message', to, text: String(content) }).catch((error) => this.requestFailed(error));
  }

  /**
   * The current call's RTCPeerConnection (null without a call), for diagnostics such as
   * getStats() beyond what LATENCY_STAT reports.
   */
  getPeerConnection() {
    return (this.current && this.current.pc) || null;
  }

  /** A snapshot for UIs that render from state rather than events. */
  getState() {
    const call = this.current;
    return {
      connected: this.online,
      registered: this.registered,
      call: call && {
        callId: call.uuid,
        direction: call.direction,
        otherLegNumber: call.number,
        displayName: call.displayName,
        headers: { ...call.headers },
        answered: call.answered,
        held: call.held,
        muted: call.muted,
      },
    };
  }

  /**
   * Measures the microphone level for a "speak now" check: calls `handle(0-100)` about ten
   * times a second and resolves to `{yes, no}`, both of which stop the test (the seed's API).
   * When the microphone cannot be opened it resolves with `error` set to the MIC_ERROR text.
   */
  static async testMicrophone(handle, { lang, env: overrides } = {}) {
    const env = resolveEnv(overrides);
    const language = pickLanguage(lang, env.language);
    let stream;
    try {
      stream = await openMicrophone(env, null);
    } catch (error) {
      const noop = () => {};
      return { yes: noop, no: noop, error: text(error.micKey, language) };
    }
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    const context = new Context();
    const source = context.createMediaStreamSource(stream);
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const timer = env.setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const v of samples) peak = Math.max(peak, Math.abs(v));
      try {
        handle(Math.min(100, Math.round(peak * 100)));
      } catch {
        // the page's callback failing must not leave the mic open
      }
    }, 100);
    const stop = () => {
      env.clearInterval(timer);
      source.disconnect();
      stopStream(stream);
      context.close();
    };
    return { yes: stop, no: stop };
  }

  /** Lists audio devices for a picker (labels appear once the mic was allowed). */
  static async getMediaDeviceInfo() {
    const devices = globalThis.navigator && globalThis.navigator.mediaDevices;
    if (!devices || !devices.enumerateDevices) return [];
    return devices.enumerateDevices();
  }

  // ---- internals -------------------------------------------------------------------------

  emit(event, data) {
    if (this.cleaned && event !== EVENTS.CALL_END) return;
    this.events.emit(event, data);
  }

  misuse(key, result) {
    this.emit(EVENTS.ERROR, { msg: text(key, this.lang) });
    return result;
  }

  usable() {
    if (this.cleaned) return this.misuse('sdk_cleaned', false);
    if (!this.conn || !this.conn.isOpen()) return this.misuse('not_connected', false);
    return true;
  }

  activeCall() {
    if (this.cleaned) return this.misuse('sdk_cleaned', null);
    const call = this.current;
    if (!call || !call.answered || !call.id || call.ended) return this.misuse('no_active_call', null);
    return call;
  }

  requestFailed(error) {
    this.emit(EVENTS.ERROR, { msg: describe({ errorCode: error.code }, this.lang), code: error.code });
  }

  callRequestFailed(call, error) {
    if (call.ended) return;
    if (error.code === 'unknown_call') {
      // callgate no longer knows the call: it is over whatever we thought.
      this.finish(call, { originator: 'system', cause: 'unknown_call', code: 0 });
      return;
    }
    this.requestFailed(error);
  }

  createAudioElement() {
    const doc = this.env.document;
    if (!doc || !doc.createElement) return null;
    const audio = doc.createElement('audio');
    audio.autoplay = true;
    return audio;
  }

  newCall(fields) {
    const call = {
      uuid: '',
      id: null,
      direction: 'outbound',
      number: '',
      displayName: undefined,
      headers: {},
      phase: 'starting',
      answered: false,
      held: false,
      muted: false,
      ended: false,
      hangupWanted: false,
      pc: null,
      stream: null,
      statsTimer: null,
      sample: emptySample(),
      ...fields,
    };
    this.current = call;
    return call;
  }

  peerFor(call) {
    call.pc = createPeer(this.env, {
      iceServers: this.config.iceServers,
      audio: this.audio,
      onState: (state) => {
        if (state === 'failed' && call.id && !call.ended) {
          this.log.error('the media connection to callgate failed');
          this.sendHangup(call);
        }
      },
    });
    return call.pc;
  }

  async placeCall(call, headers) {
    try {
      call.stream = await openMicrophone(this.env, this.micDeviceId);
    } catch (error) {
      this.emit(EVENTS.MIC_ERROR, { msg: text(error.micKey, this.lang) });
      return this.finish(call, { originator: 'local', cause: 'mic_error', code: 0, msgKey: error.micKey });
    }
    if (call.ended) return stopStream(call.stream);
    if (call.hangupWanted) return this.finish(call, { originator: 'local', cause: 'cancelled', code: 0 });
    let sdp;
    try {
      sdp = await makeOffer(this.peerFor(call), call.stream);
    } catch (error) {
      this.log.error('cannot create the WebRTC offer', error);
      return this.finish(call, { originator: 'local', cause: 'media_setup_failed', code: 0, msgKey: 'media_setup_failed' });
    }
    if (call.ended) return;
    if (call.hangupWanted) return this.finish(call, { originator: 'local', cause: 'cancelled', code: 0 });
    const request = { type: 'call', to: call.number, sdp, call_uuid: call.uuid };
    if (Object.keys(headers).length) request.headers = headers;
    let ack;
    try {
      ack = await this.conn.request(request);
    } catch (error) {
      return this.finish(call, {
        originator: 'system',
        cause: error.code,
        code: 0,
        msg: describe({ errorCode: error.code }, this.lang),
      });
    }
    if (call.ended) return;
    call.id = ack.call_id;
    call.phase = 'calling';
    this.emit(EVENTS.OUTGOING_CALL, { direction: 'outbound', otherLegNumber: call.number, callId: call.uuid });
    if (call.hangupWanted) this.sendHangup(call);
    try {
      await call.pc.setRemoteDescription({ type: 'answer', sdp: ack.sdp });
    } catch (error) {
      if (call.ended) return;
      this.log.error("cannot apply callgate's SDP answer", error);
      this.sendHangup(call);
    }
  }

  async answerCall(call) {
    try {
      call.stream = await openMicrophone(this.env, this.micDeviceId);
    } catch (error) {
      this.emit(EVENTS.MIC_ERROR, { msg: text(error.micKey, this.lang) });
      if (!call.ended) {
        call.phase = 'rejecting';
        this.conn.request({ type: 'reject', call_id: call.id, reason: 'unavailable' }).catch((e) => this.callRequestFailed(call, e));
      }
      return;
    }
    if (call.ended) return stopStream(call.stream);
    let sdp;
    try {
      sdp = await makeAnswer(this.peerFor(call), call.offer, call.stream);
    } catch (error) {
      if (call.ended) return;
      this.log.error("cannot answer callgate's WebRTC offer", error);
      this.emit(EVENTS.ERROR, { msg: text('media_setup_failed', this.lang) });
      call.phase = 'rejecting';
      this.conn.request({ type: 'reject', call_id: call.id, reason: 'unavailable' }).catch((e) => this.callRequestFailed(call, e));
      return;
    }
    if (call.ended) return;
    this.conn.request({ type: 'answer', call_id: call.id, sdp }).catch((error) => this.callRequestFailed(call, error));
  }

  sendHangup(call) {
    this.conn.request({ type: 'hangup', call_id: call.id }).catch((error) => {
      if (call.ended) return;
      if (error.code === 'unknown_call') {
        this.finish(call, { originator: 'local', cause: 'normal_clearing', code: 0 });
      } else if (error.code !== 'not_connected') {
        this.requestFailed(error);
      }
    });
  }

  /**
   * Ends a call once: releases media and emits the single CALL_END. `quality` is callgate's
   * `call_ended.quality`, passed through as sent, and only when callgate sent one.
   */
  finish(call, { originator, cause, code, msg, msgKey, endedBy, quality }) {
    if (call.ended) return;
    call.ended = true;
    this.env.clearInterval(call.statsTimer);
    call.statsTimer = null;
    closePeer(call.pc, call.stream, this.audio);
    if (this.current === call) this.current = null;
    const message =
      msg || (msgKey ? text(msgKey, this.lang) : describe({ sipStatus: code, cause, endedBy }, this.lang));
    this.emit(EVENTS.CALL_END, {
      originator,
      cause,
      code,
      answered: call.answered,
      ...(quality ? { quality } : {}),
      msg: message,
      callId: call.uuid,
      direction: call.direction,
      otherLegNumber: call.number,
    });
  }

  startStats(call) {
    this.env.clearInterval(call.statsTimer);
    call.statsTimer = this.env.setInterval(() => {
      if (!call.pc || call.ended) return;
      call.pc.getStats().then(
        (report) => {
          if (call.ended) return;
          const { stat, sample } = latencyStat(call.sample, report.values());
          call.sample = sample;
          this.emit(EVENTS.LATENCY_STAT, stat);
        },
        () => {},
      );
    }, 1000);
  }

  /** Asks the app's `getToken` for a fresh token; null (and ERROR) when it fails. */
  async onTokenWanted() {
    try {
      const token = await this.getToken();
      if (!token) throw new Error('getToken returned no token');
      return String(token);
    } catch (error) {
      this.log.error('getToken failed', error);
      this.emit(EVENTS.ERROR, { msg: text('token_fetch_failed', this.lang), code: 'token_fetch_failed' });
      return null;
    }
  }

  /**
   * Before every reconnect in token mode: a fresh token, so the hello is not refused. False
   * when there is no token at all to log in with (getToken failed before the first login).
   */
  async onBeforeReconnect() {
    if (!this.getToken || this.config.extPwd || this.cleaned) return true;
    const token = await this.onTokenWanted();
    if (token && !this.cleaned) this.config.token = token;
    return Boolean(this.config.token);
  }

  /** callgate warned that the session's token expires soon: refresh it with `getToken`. */
  async onTokenExpiring(expiresAt) {
    this.emit(EVENTS.TOKEN_EXPIRING, { expiresAt });
    if (!this.getToken) return;
    const token = await this.onTokenWanted();
    if (token && !this.cleaned) await this.setToken(token);
  }

  onOpen(welcome, reconnected, attempts) {
    this.online = true;
    this.tokenRecovering = false;
    this.tokenExpiresAt = welcome.token_expires_at || null;
    this.sessionId = welcome.session_id;
    this.storeResumeToken(this.resume ? welcome.resume_token || null : null);
    const resumed = welcome.resumed || null;
    if (reconnected) this.emit(EVENTS.RECONNECTED, { attempts, resumed: Boolean(resumed) });
    this.emit(EVENTS.CONNECTED, {
      localAgent: this.localAgent,
      resumed: Boolean(resumed),
      ...(this.tokenExpiresAt ? { tokenExpiresAt: this.tokenExpiresAt } : {}),
    });
    this.restoreCalls(resumed ? resumed.calls : []);
    if (resumed && resumed.registered) {
      this.registered = true;
      this.emit(EVENTS.REGISTERED, { localAgent: this.localAgent, resumed: true });
    } else if (this.wantRegistered) {
      this.register();
    }
  }

  onDrop({ attempt, delay, code, reason }) {
    const wasOnline = this.online;
    this.online = false;
    this.registered = false;
    const call = this.current;
    if (call && !call.ended) {
      // callgate keeps a call it has named for the grace period: keep it here too (its audio
      // may even continue) and renegotiate once the session is resumed.
      if (this.resume && this.resumeToken && call.id) call.suspended = true;
      else this.finish(call, { originator: 'system', cause: 'websocket_closed', code: 0 });
    }
    if (wasOnline || attempt === 1) this.emit(EVENTS.DISCONNECTED, { code, reason });
    this.emit(EVENTS.RECONNECTING, { attempt, delay });
  }

  loadResumeToken() {
    try {
      const store = this.env.sessionStorage;
      return (store && store.getItem(this.resumeKey)) || null;
    } catch {
      return null;
    }
  }

  storeResumeToken(token) {
    this.resumeToken = token;
    try {
      const store = this.env.sessionStorage;
      if (!store) return;
      if (token) store.setItem(this.resumeKey, token);
      else store.removeItem(this.resumeKey);
    } catch {
      // storage full or forbidden: resuming after a reload is then not possible
    }
  }

  /**
   * After a welcome: the current call continues if callgate kept it (its audio is
   * renegotiated with a new peer connection) and ends otherwise; after a page reload a kept
   * call becomes the current call again (CALL_RESTORED). One call at a time, like the seed:
   * further kept calls are hung up. A kept ringing inbound call is offered again by callgate.
   */
  restoreCalls(kept) {
    const current = this.current;
    if (current && current.suspended) {
      current.suspended = false;
      const mine = kept.find((c) => c.call_id === current.id);
      if (!mine) {
        this.finish(current, { originator: 'system', cause: 'websocket_closed', code: 0 });
      } else if (current.hangupWanted) {
        this.sendHangup(current);
      } else if (mine.state !== 'incoming') {
        this.renegotiate(current);
      }
    }
    for (const c of kept) {
      if (this.current && this.current.id === c.call_id) continue;
      if (c.state === 'incoming') continue; // its incoming_call follows the welcome
      if (this.current) {
        this.conn.request({ type: 'hangup', call_id: c.call_id }).catch(() => {});
        continue;
      }
      const answered = c.state === 'answered';
      const call = this.newCall({
        uuid: c.call_uuid || c.call_id,
        id: c.call_id,
        direction: c.direction,
        number: c.peer,
        phase: answered ? 'active' : c.state === 'answering' ? 'answering' : 'calling',
        answered,
        held: c.held,
        muted: c.muted,
      });
      this.emit(EVENTS.CALL_RESTORED, {
        callId: call.uuid,
        direction: call.direction,
        otherLegNumber: call.number,
        answered,
        held: call.held,
        muted: call.muted,
      });
      this.renegotiate(call);
    }
  }

  /** Gives a kept call a new peer connection (the old one died with the page or network). */
  async renegotiate(call) {
    if (!call.stream) {
      try {
        call.stream = await openMicrophone(this.env, this.micDeviceId);
      } catch (error) {
        this.emit(EVENTS.MIC_ERROR, { msg: text(error.micKey, this.lang) });
        return this.sendHangup(call);
      }
    }
    if (call.ended) return stopStream(call.stream);
    setMicEnabled(call.stream, !call.muted);
    const old = call.pc;
    if (old) {
      old.ontrack = null;
      old.onconnectionstatechange = null;
      try {
        old.close();
      } catch {
        // already closed
      }
    }
    let sdp;
    try {
      sdp = await makeOffer(this.peerFor(call), call.stream);
    } catch (error) {
      this.log.error('cannot create the WebRTC offer', error);
      return this.sendHangup(call);
    }
    if (call.ended) return;
    let ack;
    try {
      ack = await this.conn.request({ type: 'renegotiate', call_id: call.id, sdp });
    } catch (error) {
      if (call.ended || error.code === 'not_connected') return; // the next resume retries
      return this.finish(call, { originator: 'system', cause: error.code, code: 0, msg: describe({ errorCode: error.code }, this.lang) });
    }
    if (call.ended) return;
    try {
      await call.pc.setRemoteDescription({ type: 'answer', sdp: ack.sdp });
    } catch (error) {
      if (call.ended) return;
      this.log.error("cannot apply callgate's SDP answer", error);
      return this.sendHangup(call);
    }
    if (call.answered) this.startStats(call);
  }

  onFatal(error) {
    this.online = false;
    if (error.code === 'session_replaced') {
      this.storeResumeToken(null);
      if (this.current) {
        this.finish(this.current, { originator: 'system', cause: 'session_replaced', code: 0, msgKey: 'session_replaced' });
      }
    }
    const tokenMode = this.tokenLogin;
    if (error.code === 'token_expired' || error.code === 'token_replayed') {
      // The session ended with its token (close 4002) or a hello's token was stale: a resume
      // cannot help; with getToken, log in again once with a fresh token.
      if (error.sessionEnded) this.storeResumeToken(null);
      if (this.getToken && !this.tokenRecovering && !this.cleaned) {
        this.tokenRecovering = true;
        this.emit(EVENTS.DISCONNECTED, { code: error.sessionEnded ? 4002 : 1000, reason: error.code });
        this.onTokenWanted().then((token) => {
          if (token && !this.cleaned) this.setToken(token);
        });
        return;
      }
    }
    // A gateway older than token mode refuses the `token` auth shape as invalid_message.
    let key = null;
    if (tokenMode && (error.code === 'invalid_message' || error.code === 'auth_mode_disabled')) key = 'token_unsupported';
    else if (tokenMode && error.code === 'auth_failed') key = 'token_invalid';
    this.emit(EVENTS.ERROR, {
      msg: key ? text(key, this.lang) : describe({ errorCode: error.code }, this.lang),
      code: error.code,
    });
    this.emit(EVENTS.DISCONNECTED, { code: error.sessionEnded ? 4002 : 1000, reason: error.code });
  }

  onMessage(msg) {
    switch (msg.type) {
      case 'registered':
        this.registered = true;
        return this.emit(EVENTS.REGISTERED, { localAgent: this.localAgent, expires: msg.expires });
      case 'unregistered':
        this.registered = false;
        return this.emit(EVENTS.UNREGISTERED, { localAgent: this.localAgent, reason: msg.reason });
      case 'registration_failed': {
        this.registered = false;
        const detail = [msg.sip_status, msg.reason].filter(Boolean).join(' ');
        return this.emit(EVENTS.REGISTER_FAILED, {
          msg: `${text('register_failed', this.lang)}${detail ? ': ' + detail : ''}`,
          code: msg.sip_status || 0,
          retrying: Boolean(msg.retrying),
        });
      }
      case 'incoming_call':
        return this.onIncoming(msg);
      case 'token_expiring':
        return this.onTokenExpiring(msg.expires_at);
      case 'token_expired':
        // No new call, transfer or registration is accepted; the calls in progress go on and
        // callgate closes the session (4002) after the last one.
        this.registered = false;
        return this.emit(EVENTS.TOKEN_EXPIRED, { expiresAt: msg.expires_at, activeCalls: msg.active_calls });
      case 'message_received':
        this.emit(EVENTS.MESSAGE_INCOMING, msg.text);
        return this.emit(EVENTS.MESSAGE_RECEIVED, {
          from: msg.from,
          displayName: msg.display_name,
          text: msg.text,
          contentType: msg.content_type,
        });
      case 'error':
        // An error tied to no pending request (e.g. the hello timeout).
        return this.emit(EVENTS.ERROR, { msg: describe({ errorCode: msg.code }, this.lang), code: msg.code });
      default:
        return this.onCallEvent(msg);
    }
  }

  onIncoming(msg) {
    if (this.current && this.current.id === msg.call_id) {
      // Offered again after a resume: the same call, still ringing.
      this.current.offer = msg.sdp;
      return;
    }
    if (this.current) {
      // One call at a time, like the seed: a second caller hears busy.
      this.conn.request({ type: 'reject', call_id: msg.call_id, reason: 'busy' }).catch(() => {});
      return;
    }
    const headers = msg.headers || {};
    const uuidHeader = Object.keys(headers).find((name) => name.toLowerCase() === 'x-call-uuid');
    const call = this.newCall({
      uuid: uuidHeader ? headers[uuidHeader] : msg.call_id,
      id: msg.call_id,
      direction: 'inbound',
      number: msg.from,
      displayName: msg.display_name,
      headers,
      offer: msg.sdp,
      phase: 'incoming',
    });
    this.emit(EVENTS.INCOMING_CALL, {
      direction: 'inbound',
      otherLegNumber: call.number,
      callId: call.uuid,
      displayName: call.displayName,
      calledNumber: msg.to,
      headers: { ...headers },
    });
  }

  onCallEvent(msg) {
    const call = this.current;
    if (!call || !msg.call_id || call.id !== msg.call_id) {
      this.log.debug('event for no current call', msg.type);
      return;
    }
    switch (msg.type) {
      case 'call_ringing':
        return this.emit(EVENTS.RINGING, { callId: call.uuid, code: msg.sip_status });
      case 'call_early_media':
        return this.emit(EVENTS.EARLY_MEDIA, { callId: call.uuid, code: msg.sip_status });
      case 'call_answered':
        if (call.answered) return;
        call.answered = true;
        call.phase = 'active';
        this.startStats(call);
        return this.emit(EVENTS.IN_CALL, { callId: call.uuid });
      case 'call_held':
        call.held = true;
        return this.emit(EVENTS.HOLD, { callId: call.uuid, by: msg.by });
      case 'call_resumed':
        call.held = false;
        return this.emit(EVENTS.IN_CALL, { callId: call.uuid, resumed: true, by: msg.by });
      case 'transfer_progress':
        this.emit(EVENTS.TRANSFER_PROGRESS, { callId: call.uuid, code: msg.sip_status, done: msg.done });
        if (msg.done && msg.sip_status >= 300) {
          this.emit(EVENTS.ERROR, { msg: `${text('transfer_failed', this.lang)} (${msg.sip_status})` });
        }
        return;
      case 'dtmf_received':
        return this.emit(EVENTS.DTMF_RECEIVED, { callId: call.uuid, digit: msg.digit });
      case 'call_ended':
        return this.finish(call, {
          originator: ENDED_BY[msg.ended_by] || 'system',
          cause: msg.cause,
          code: msg.sip_status || 0,
          endedBy: msg.ended_by,
          quality: msg.quality,
        });
      default:
        this.log.debug('unhandled message', msg.type);
    }
  }
}

SipCall.VERSION = VERSION;
SipCall.EVENTS = EVENTS;
SipCall.AutoCallTask = AutoCallTask;

export { AutoCallTask, describe as describeFailure };
