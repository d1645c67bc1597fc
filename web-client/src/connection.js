// The WebSocket to callgate: the hello/welcome handshake, request ids and their single reply,
// keepalive pings, and reconnection with capped, jittered exponential back-off. It knows the
// protocol's envelope only; what the messages mean is SipCall's business.

/** Protocol version this SDK speaks (signaling::PROTOCOL_VERSION). */
export const PROTOCOL_VERSION = 1;

/** Defaults for reconnecting and keepalive, in milliseconds. */
export const CONNECTION_DEFAULTS = {
  reconnectBaseDelay: 500,
  reconnectMaxDelay: 30000,
  pingInterval: 20000,
  requestTimeout: 10000,
};

/** Close code callgate sends on a socket whose session another connection resumed. */
export const CLOSE_REPLACED = 4001;

/**
 * Close code callgate sends when a token session ends because its token expired without a
 * refresh (after its last call ended): the session is gone, resuming it cannot work.
 */
export const CLOSE_TOKEN_EXPIRED = 4002;

/** Error codes of a refused hello after which reconnecting cannot help. */
const FATAL_HELLO_CODES = new Set([
  'auth_failed',
  'token_expired',
  'token_replayed',
  'auth_mode_disabled',
  'unsupported_protocol',
  'invalid_message',
  'unknown_type',
  'bad_json',
]);

/** A refused request: the gateway's `error` reply, or a local reason (`not_connected`, …). */
export class RequestError extends Error {
  /** Keeps callgate's stable code next to its English detail. */
  constructor(code, message, callId, sessionEnded = false) {
    super(message || code);
    this.name = 'RequestError';
    this.code = code;
    this.callId = callId;
    // True when callgate ended the session itself (close 4002), not a refused request.
    this.sessionEnded = sessionEnded;
  }
}

/**
 * Delay before reconnect attempt `attempt` (1, 2, …): exponential from `base`, capped at
 * `max`, with "equal jitter" (half fixed, half random) so a gateway restart is not hit by
 * every agent at the same instant while no agent waits longer than the cap.
 */
export function backoffDelay(attempt, { base, max, random }) {
  const exp = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}

/**
 * One logical connection to callgate that survives socket drops. Callbacks:
 * `onOpen(welcome, reconnected, attempts)`, `onMessage(msg)` for events,
 * `onDrop({attempt, delay, code, reason})` when a socket is lost and a retry is scheduled,
 * `onFatal(error)` when the gateway refuses the hello for good.
 */
export class Connection {
  /**
   * `hello()` builds the hello body each time (credentials may change between attempts); `url`
   * may be a function too (the resume node is added once known).
   */
  constructor({ url, env, hello, beforeReconnect, onOpen, onMessage, onDrop, onFatal, options = {}, log }) {
    this.url = url;
    this.env = env;
    this.hello = hello;
    // Awaited before every reconnect (e.g. to fetch a fresh login token); may be absent.
    this.beforeReconnect = beforeReconnect;
    this.onOpen = onOpen;
    this.onMessage = onMessage;
    this.onDrop = onDrop;
    this.onFatal = onFatal;
    this.options = { ...CONNECTION_DEFAULTS };
    for (const [key, value] of Object.entries(options)) {
      if (value !== undefined && value !== null) this.options[key] = value;
    }
    this.log = log;
    this.ws = null;
    this.open = false;
    this.stopped = false;
    this.everOpened = false;
    this.attempt = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.retryTimer = null;
    this.pingTimer = null;
  }

  /** Opens the first socket; with `prepare`, after `beforeReconnect` (no token yet). */
  start({ prepare = false } = {}) {
    if (prepare) this.connectPrepared();
    else this.connect();
  }

  /** Connects again after a refused hello stopped it (new credentials); no-op while running. */
  restart() {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  /** True once the gateway has welcomed this socket. */
  isOpen() {
    return this.open;
  }

  /**
   * Sends one request and resolves with its `ack`/`welcome`/`token_refreshed`, or rejects with a RequestError
   * for its `error` reply, a timeout, or a lost socket. Never throws synchronously.
   */
  request(body, { beforeWelcome = false } = {}) {
    if (this.stopped || !this.ws || (!this.open && !beforeWelcome)) {
      return Promise.reject(new RequestError('not_connected', 'not connected to callgate'));
    }
    const request_id = this.nextId++;
    const frame = { ...body, request_id };
    // `message` is answered only after the PBX's final response (SIP Timer F: 32 s).
    const timeout = body.type === 'message' ? Math.max(this.options.requestTimeout, 40000) : this.options.requestTimeout;
    return new Promise((resolve, reject) => {
      const timer = this.env.setTimeout(() => {
        this.pending.delete(request_id);
        reject(new RequestError('timeout', `no reply to ${body.type} within ${timeout} ms`));
        // callgate answers ping and hello at once: silence there means the socket is dead.
        if (body.type === 'ping' || body.type === 'hello') this.drop('request timeout');
      }, timeout);
      this.pending.set(request_id, { resolve, reject, timer, type: body.type });
      try {
        this.ws.send(JSON.stringify(frame));
        const shown = body.type === 'hello' ? { ...frame, auth: '<redacted>' } : body.type === 'refresh_token' ? { ...frame, token: '<redacted>' } : frame;
        this.log.debug('→', shown);
      } catch (error) {
        this.env.clearTimeout(timer);
        this.pending.delete(request_id);
        reject(new RequestError('not_connected', String(error && error.message)));
      }
    });
  }

  /** Closes for good: no reconnect, every pending request rejected. */
  stop() {
    this.stopped = true;
    this.env.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.teardown('stopped');
  }

  /** Closes the current socket as if the network dropped it (keepalive timeout), then retries. */
  drop(reason) {
    if (this.stopped || !this.ws) return;
    const ws = this.ws;
    this.teardown(reason);
    try {
      ws.close(4000, reason);
    } catch {
      // already closing
    }
    this.scheduleRetry(1006, reason);
  }

  /**
   * Awaits `beforeReconnect` (a failure is logged, not fatal), then connects; when it says
   * there is nothing to log in with (false), retries later with the usual back-off.
   */
  async connectPrepared() {
    let ready = true;
    if (this.beforeReconnect) {
      try {
        ready = (await this.beforeReconnect()) !== false;
      } catch (error) {
        this.log.error('preparing the reconnect failed', error);
      }
    }
    if (this.stopped || this.ws || this.retryTimer) return;
    if (ready) this.connect();
    else this.scheduleRetry(1006, 'no login token');
  }

  connect() {
    let ws;
    try {
      ws = new this.env.WebSocket(typeof this.url === 'function' ? this.url() : this.url);
    } catch (error) {
      this.log.error('cannot open the WebSocket', error);
      this.scheduleRetry(1006, String(error && error.message));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.request(this.hello(), { beforeWelcome: true }).then(
        (welcome) => {
          if (this.ws !== ws) return;
          const reconnected = this.everOpened;
          const attempts = this.attempt;
          this.open = true;
          this.everOpened = true;
          this.attempt = 0;
          this.schedulePing();
          this.onOpen(welcome, reconnected, attempts);
        },
        (error) => {
          if (this.ws !== ws) return;
          if (FATAL_HELLO_CODES.has(error.code)) {
            this.stopped = true;
            this.teardown('hello refused');
            try {
              ws.close(1000, 'hello refused');
            } catch {
              // already closing
            }
            this.onFatal(error);
          } else if (error.code !== 'timeout' && error.code !== 'not_connected') {
            // A passing refusal (credentials_unavailable, shutting_down, …): back off, retry.
            this.drop(`hello refused: ${error.code}`);
          }
        },
      );
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.receive(event.data);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      if (event && event.code === CLOSE_REPLACED) {
        // Another connection resumed this session (a duplicated tab, another device): it has
        // the calls now; reconnecting would only take them back and forth.
        this.stopped = true;
        this.teardown('replaced');
        this.onFatal(new RequestError('session_replaced', 'another connection took this session over'));
        return;
      }
      if (event && event.code === CLOSE_TOKEN_EXPIRED) {
        // The token ran out without a refresh and the last call has ended: the session is
        // gone; only a fresh token opens a new one.
        this.stopped = true;
        this.teardown('token expired');
        this.onFatal(new RequestError('token_expired', 'the session ended: its login token expired', undefined, true));
        return;
      }
      this.teardown('socket closed');
      if (!this.stopped) this.scheduleRetry(event && event.code, event && event.reason);
    };
    ws.onerror = () => {
      // onclose follows and decides.
    };
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(String(data));
    } catch {
      this.log.error('callgate sent a frame that is not JSON', data);
      return;
    }
    this.log.debug('←', msg);
    const waiter = msg.request_id !== undefined && this.pending.get(msg.request_id);
    if (waiter && (msg.type === 'ack' || msg.type === 'welcome' || msg.type === 'token_refreshed' || msg.type === 'error')) {
      this.pending.delete(msg.request_id);
      this.env.clearTimeout(waiter.timer);
      if (msg.type === 'error') waiter.reject(new RequestError(msg.code, msg.message, msg.call_id));
      else waiter.resolve(msg);
      return;
    }
    this.onMessage(msg);
  }

  teardown(reason) {
    const wasOpen = this.open || this.ws !== null;
    this.open = false;
    this.env.clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
      if (this.stopped) {
        try {
          this.ws.close(1000, reason);
        } catch {
          // already closed
        }
      }
    }
    this.ws = null;
    for (const [, waiter] of this.pending) {
      this.env.clearTimeout(waiter.timer);
      waiter.reject(new RequestError('not_connected', `connection lost (${reason})`));
    }
    this.pending.clear();
    return wasOpen;
  }

  scheduleRetry(code, reason) {
    if (this.stopped || this.retryTimer) return;
    this.attempt += 1;
    const delay = backoffDelay(this.attempt, {
      base: this.options.reconnectBaseDelay,
      max: this.options.reconnectMaxDelay,
      random: this.env.random,
    });
    this.retryTimer = this.env.setTimeout(() => {
      this.retryTimer = null;
      if (!this.stopped) this.connectPrepared();
    }, delay);
    this.onDrop({ attempt: this.attempt, delay, code, reason });
  }

  schedulePing() {
    this.env.clearInterval(this.pingTimer);
    this.pingTimer = this.env.setInterval(() => {
      // A lost reply rejects with `timeout` and drop() replaces the socket.
      this.request({ type: 'ping' }).catch(() => {});
    }, this.options.pingInterval);
  }
}
