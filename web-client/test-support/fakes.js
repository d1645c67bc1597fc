// Test doubles for the browser APIs SipCall uses: a scriptable WebSocket that plays
// callgate, a peer connection, a microphone and a manual clock. Injected through
// `config.env`, so no global is touched.

/** A manual clock: timers fire only when the test advances time. */
export class FakeClock {
  constructor() {
    this.now = 0;
    this.nextId = 1;
    this.timers = new Map();
  }

  setTimeout = (fn, ms) => this.add(fn, ms, false);
  setInterval = (fn, ms) => this.add(fn, ms, true);
  clearTimeout = (id) => this.timers.delete(id);
  clearInterval = (id) => this.timers.delete(id);

  add(fn, ms, repeat) {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.now + (ms || 0), every: repeat ? Math.max(1, ms) : 0 });
    return id;
  }

  /** Runs every timer due within `ms`, in time order, letting promises settle between them. */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (!next || t.at < next.at)) [nextId, next] = [id, t];
      if (!next) break;
      this.now = next.at;
      if (next.every) next.at += next.every;
      else this.timers.delete(nextId);
      next.fn();
      await settle();
    }
    this.now = end;
  }

  /** Delays of pending one-shot timers (to inspect reconnect back-off). */
  pendingDelays() {
    return [...this.timers.values()].filter((t) => !t.every).map((t) => t.at - this.now);
  }
}

/** Lets every queued promise callback run. */
export async function settle() {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A WebSocket whose far end is the test. Every instance is recorded in `FakeWebSocket.all`. */
export class FakeWebSocket {
  static all = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    this.closed = null;
    // Like callgate, answer keepalive pings unless a test wants a silent gateway.
    this.answerPings = true;
    FakeWebSocket.all.push(this);
  }

  static reset() {
    FakeWebSocket.all = [];
  }

  static last() {
    return FakeWebSocket.all[FakeWebSocket.all.length - 1];
  }

  send(text) {
    if (this.readyState !== 1) throw new Error('InvalidStateError: not open');
    const frame = JSON.parse(text);
    this.sent.push(frame);
    if (frame.type === 'ping' && this.answerPings) {
      queueMicrotask(() => this.readyState === 1 && this.serverSend({ type: 'ack', request_id: frame.request_id }));
    }
  }

  close(code = 1000, reason = '') {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closed = { code, reason };
    if (this.onclose) this.onclose({ code, reason });
  }

  // ---- the gateway's side ----

  serverOpen() {
    this.readyState = 1;
    if (this.onopen) this.onopen({});
  }

  serverSend(msg) {
    if (this.onmessage) this.onmessage({ data: JSON.stringify(msg) });
  }

  /** The gateway closes the socket with a close frame. */
  serverClose(code, reason = '') {
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason });
  }

  /** The network drops the socket (no close frame from either side). */
  serverDrop() {
    this.readyState = 3;
    if (this.onclose) this.onclose({ code: 1006, reason: '' });
  }

  /** The last frame the client sent of `type` (asserts it exists). */
  lastOf(type) {
    const found = this.sent.filter((m) => m.type === type).pop();
    if (!found) throw new Error(`no ${type} frame sent; sent: ${this.sent.map((m) => m.type).join(', ')}`);
    return found;
  }

  /** Replies `ack` to the last request of `type`, with extra fields. */
  ack(type, extra = {}) {
    this.serverSend({ type: 'ack', request_id: this.lastOf(type).request_id, ...extra });
  }

  /** Replies `error` to the last request of `type`. */
  refuse(type, code, message = code) {
    this.serverSend({ type: 'error', request_id: this.lastOf(type).request_id, code, message });
  }

  /** Opens and welcomes the client (answers its hello); `extra` adds welcome fields (resume). */
  welcome(extra = {}) {
    if (this.readyState !== 1) this.serverOpen();
    const hello = this.lastOf('hello');
    this.serverSend({ type: 'welcome', request_id: hello.request_id, protocol: 1, session_id: 's-test', server: 'callgate/test', ...extra });
  }
}

/** A microphone track. */
export class FakeTrack {
  constructor() {
    this.kind = 'audio';
    this.enabled = true;
    this.stopped = false;
  }

  stop() {
    this.stopped = true;
  }
}

/** A MediaStream of fake tracks. */
export class FakeStream {
  constructor(tracks = [new FakeTrack()]) {
    this.tracks = tracks;
  }

  getTracks() {
    return this.tracks;
  }

  getAudioTracks() {
    return this.tracks.filter((t) => t.kind === 'audio');
  }
}

/** navigator.mediaDevices: grants a fake stream or fails with a DOMException-like name. */
export class FakeMediaDevices {
  constructor() {
    this.failWith = null;
    this.streams = [];
    this.requests = [];
  }

  async getUserMedia(constraints) {
    this.requests.push(constraints);
    if (this.failWith) {
      const error = new Error(this.failWith);
      error.name = this.failWith;
      throw error;
    }
    const stream = new FakeStream();
    this.streams.push(stream);
    return stream;
  }

  async enumerateDevices() {
    return [{ kind: 'audioinput', deviceId: 'mic-1', label: 'Fake mic' }];
  }
}

/** An RTCPeerConnection that records what SipCall does with it. */
export class FakePeerConnection {
  static all = [];

  constructor(config) {
    this.config = config;
    this.tracks = [];
    this.local = null;
    this.remote = null;
    this.closed = false;
    this.stats = [];
    this.failRemote = false;
    FakePeerConnection.all.push(this);
  }

  static reset() {
    FakePeerConnection.all = [];
  }

  static last() {
    return FakePeerConnection.all[FakePeerConnection.all.length - 1];
  }

  addTrack(track, stream) {
    this.tracks.push({ track, stream });
  }

  async createOffer() {
    return { type: 'offer', sdp: 'v=0\r\nfake-offer\r\n' };
  }

  async createAnswer() {
    return { type: 'answer', sdp: 'v=0\r\nfake-answer\r\n' };
  }

  async setLocalDescription(desc) {
    this.local = desc;
  }

  get localDescription() {
    return this.local;
  }

  async setRemoteDescription(desc) {
    if (this.failRemote) throw new Error('InvalidAccessError');
    this.remote = desc;
  }

  async getStats() {
    return new Map(this.stats.map((s) => [s.id || s.type, s]));
  }

  close() {
    this.closed = true;
  }
}

/** sessionStorage: survives a simulated page reload when the same instance is passed again. */
export class FakeStorage {
  constructor() {
    this.items = new Map();
  }

  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }

  setItem(key, value) {
    this.items.set(key, String(value));
  }

  removeItem(key) {
    this.items.delete(key);
  }
}

/** Builds the `env` for a SipCall under test, with fresh fakes. */
export function fakeEnv(overrides = {}) {
  FakeWebSocket.reset();
  FakePeerConnection.reset();
  const clock = new FakeClock();
  const mediaDevices = new FakeMediaDevices();
  let uuid = 0;
  const env = {
    WebSocket: FakeWebSocket,
    RTCPeerConnection: FakePeerConnection,
    MediaStream: FakeStream,
    mediaDevices,
    document: null,
    language: 'en-US',
    sessionStorage: new FakeStorage(),
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    setInterval: clock.setInterval,
    clearInterval: clock.clearInterval,
    random: () => 0.5,
    randomUUID: () => `00000000-0000-4000-8000-${String(++uuid).padStart(12, '0')}`,
    ...overrides,
  };
  return { env, clock, mediaDevices };
}
