// The softphone bar: a login form, status, dial pad and call controls over one SipCall, with
// an incoming-call popup the CRM can fill with its customer card. Embeddable three ways:
// `mount(element, options)`, the `<callgate-phone>` custom element, or the page callgate
// serves at `/`. Renders into a shadow root; the SDK does all the talking to callgate.

import SipCall from '../src/sipcall.js';
import { text } from '../src/messages.js';
import { qualityBars } from '../src/stats.js';
import { uiStrings } from './i18n.js';
import { Tones } from './tones.js';
import { STYLE } from './style.js';

/** localStorage key of remembered credentials (only written when "remember me" is ticked). */
export const STORAGE_KEY = 'callgate.softphone.credentials';

/**
 * sessionStorage key of the logged-in agent of this tab: a reload logs in again at once, so
 * callgate's resume (the SDK keeps the resume token in sessionStorage too) finds the call
 * still up. Cleared by logout; never shared with other tabs.
 */
export const SESSION_KEY = 'callgate.softphone.session';

/** Where the script that defined the bar came from, so an embedded bar finds its callgate. */
const SCRIPT_ORIGIN = (() => {
  const script = typeof document !== 'undefined' && document.currentScript;
  if (!script || !script.src) return null;
  try {
    return new URL(script.src).host;
  } catch {
    return null;
  }
})();

const LANG_NAMES = { zh: '中文', en: 'English', vi: 'Tiếng Việt' };
const PAD = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];

const TEMPLATE = `
<div class="bar" part="bar">
  <header>
    <span class="dot" data-role="status-dot"></span>
    <span class="title" data-t="title"></span>
    <span class="spacer"></span>
    <select data-role="lang">${Object.entries(LANG_NAMES).map(([v, n]) => `<option value="${v}">${n}</option>`).join('')}</select>
  </header>
  <div class="statusline">
    <span data-role="status"></span>
    <span class="net" data-role="network"><i></i><i></i><i></i><i></i></span>
  </div>
  <form data-role="login-form">
    <label><span data-t="extension"></span><input data-role="ext" autocomplete="username" required></label>
    <label><span data-t="password"></span><input data-role="pwd" type="password" autocomplete="current-password" required></label>
    <label class="check"><input type="checkbox" data-role="remember"><span data-t="remember"></span></label>
    <button type="submit" class="primary" data-role="login" data-t="login"></button>
  </form>
  <section data-role="phone" hidden>
    <div class="callinfo" data-role="callinfo" hidden>
      <div data-role="peer"></div><div data-role="timer">00:00</div><div data-role="call-state"></div>
    </div>
    <div class="dialrow">
      <input data-role="number" inputmode="tel" autocomplete="off">
      <button class="green" data-role="call" data-t="call"></button>
      <button class="red" data-role="hangup" data-t="hangup" hidden></button>
    </div>
    <div class="pad" data-role="pad">${PAD.map((d) => `<button type="button" data-digit="${d}">${d}</button>`).join('')}</div>
    <div class="controls" data-role="controls" hidden>
      <button data-role="hold" aria-pressed="false"></button>
      <button data-role="mute" aria-pressed="false"></button>
      <button data-role="transfer-toggle" data-t="transfer" aria-pressed="false"></button>
    </div>
    <div class="transfer" data-role="transfer-row" hidden>
      <input data-role="transfer-number" inputmode="tel"><button data-role="transfer" data-t="transfer"></button>
    </div>
    <div class="settings">
      <span data-t="microphone"></span>
      <select data-role="mic-select"></select>
      <button data-role="mic-check" data-t="micCheck"></button>
      <meter data-role="mic-level" min="0" max="100" value="0" hidden></meter>
      <button data-role="logout" data-t="logout"></button>
    </div>
  </section>
  <div class="notice" data-role="notice" aria-live="polite"></div>
  <div class="popup" data-role="incoming" hidden>
    <div class="popup-title" data-t="incomingCall"></div>
    <div class="caller" data-role="caller"></div>
    <div data-role="caller-name"></div>
    <dl data-role="caller-headers"></dl>
    <div data-role="customer-card"></div>
    <div class="popup-actions">
      <button class="green" data-role="answer" data-t="answer"></button>
      <button class="red" data-role="reject" data-t="reject"></button>
    </div>
  </div>
  <audio data-role="remote-audio" autoplay></audio>
</div>`;

function formatDuration(seconds) {
  const m = Math.floor(seconds / 60);
  const s = seconds % 60;
  const h = Math.floor(m / 60);
  const mm = String(m % 60).padStart(2, '0');
  return `${h ? h + ':' : ''}${mm}:${String(s).padStart(2, '0')}`;
}

/** One softphone bar bound to one element. */
export class Softphone {
  /**
   * Renders into `root` (a ShadowRoot or element); `host` receives DOM events
   * (`callgate-event` with `{event, data}` for every SDK event, `callgate-incoming` with the
   * caller) so React/Vue wrappers can listen without touching the SDK.
   */
  constructor(host, root, options = {}) {
    this.host = host;
    this.root = root;
    this.options = options;
    this.lang = pick(options.lang);
    this.storage = options.storage === undefined ? safeLocalStorage() : options.storage;
    this.sessionStorage = options.sessionStorage === undefined ? safeSessionStorage() : options.sessionStorage;
    this.customerCard = options.customerCard || null;
    // Token mode: the CRM hands the bar a JWT (or a way to get fresh ones) instead of a SIP
    // password; the form then asks for nothing but the extension, and nothing secret is stored.
    this.tokenMode = Boolean(options.token || typeof options.getToken === 'function');
    this.tones = new Tones();
    this.sip = null;
    this.state = { conn: 'disconnected', call: null, notice: '', noticeKind: 'info', bars: null };
    this.timer = null;
    root.innerHTML = `<style>${STYLE}</style>${TEMPLATE}`;
    this.el = (role) => root.querySelector(`[data-role="${role}"]`);
    this.bind();
    this.loadCredentials();
    this.applyLanguage();
    this.render();
    const session = this.loadSession();
    const secret = this.tokenMode || options.extPwd;
    if (options.extNo && secret && options.autoLogin) this.login(options.extNo, options.extPwd, false);
    else if (session) this.login(session.extNo, session.extPwd, this.el('remember').checked);
  }

  /** The SipCall of the logged-in agent (null before login), for integrators who need more. */
  get sipCall() {
    return this.sip;
  }

  /**
   * Logs in: connects to callgate as `extNo` and, unless told otherwise, registers. In token
   * mode `extPwd` is ignored: the SDK logs in with `options.token` / `options.getToken`.
   */
  login(extNo, extPwd, remember) {
    if (this.sip) this.sip.cleanSDK();
    const secret = this.tokenMode ? { token: true } : { extPwd };
    this.saveCredentials(remember ? { extNo, ...secret } : null);
    this.saveSession({ extNo, ...secret });
    const o = this.options;
    const where = o.url || o.host ? { url: o.url, host: o.host, port: o.port, proto: o.proto, path: o.path } : defaultServer();
    this.state.conn = 'connecting';
    this.notice('');
    this.sip = new SipCall({
      ...where,
      extNo,
      ...(this.tokenMode ? { token: o.token, getToken: o.getToken } : { extPwd }),
      autoRegister: o.autoRegister !== false,
      lang: this.lang,
      debug: o.debug,
      iceServers: o.iceServers,
      audioElement: this.el('remote-audio'),
      stateEventListener: (event, data) => this.onEvent(event, data),
    });
    this.render();
  }

  /** Logs out: ends any call and closes the connection (callgate then unregisters). */
  logout() {
    if (this.sip) this.sip.cleanSDK();
    this.saveSession(null);
    this.sip = null;
    this.tones.stop();
    this.stopTimer();
    this.state = { conn: 'disconnected', call: null, notice: '', noticeKind: 'info', bars: null };
    this.render();
  }

  /** Switches the bar's and the SDK's language ('zh', 'en' or 'vi'). */
  setLanguage(lang) {
    this.lang = pick(lang);
    if (this.sip) this.sip.setLanguage(this.lang);
    this.applyLanguage();
    this.render();
  }

  /**
   * Sets the CRM hook for the incoming-call popup: `fn(caller)` receives
   * `{otherLegNumber, displayName, headers, callId}` and returns a Node, an HTML string, or a
   * Promise of either, shown under the caller's number.
   */
  setCustomerCard(fn) {
    this.customerCard = typeof fn === 'function' ? fn : null;
  }

  /** Removes the bar and releases the connection, the microphone and the audio device. */
  destroy() {
    this.logout();
    this.tones.close();
    this.root.innerHTML = '';
  }

  // ---- wiring ----------------------------------------------------------------------------

  bind() {
    this.el('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.tones.ctx(); // unlock audio within the user gesture
      this.login(this.el('ext').value.trim(), this.el('pwd').value, this.el('remember').checked);
    });
    this.el('lang').addEventListener('change', (e) => this.setLanguage(e.target.value));
    this.el('call').addEventListener('click', () => this.dial());
    this.el('number').addEventListener('keydown', (e) => e.key === 'Enter' && this.dial());
    this.el('hangup').addEventListener('click', () => this.sip && this.sip.hangup());
    this.el('answer').addEventListener('click', () => this.sip && this.sip.answer());
    this.el('reject').addEventListener('click', () => this.sip && this.sip.reject('decline'));
    this.el('hold').addEventListener('click', () => {
      const call = this.state.call;
      if (this.sip && call) call.held ? this.sip.unhold() : this.sip.hold();
    });
    this.el('mute').addEventListener('click', () => {
      const call = this.state.call;
      if (this.sip && call) call.muted ? this.sip.unmute() : this.sip.mute();
    });
    this.el('transfer-toggle').addEventListener('click', () => {
      this.el('transfer-row').hidden = !this.el('transfer-row').hidden;
      this.el('transfer-toggle').setAttribute('aria-pressed', String(!this.el('transfer-row').hidden));
    });
    this.el('transfer').addEventListener('click', () => {
      if (this.sip) this.sip.transfer(this.el('transfer-number').value.trim());
    });
    this.el('pad').addEventListener('click', (e) => {
      const digit = e.target && e.target.dataset && e.target.dataset.digit;
      if (digit) this.press(digit);
    });
    this.el('mic-check').addEventListener('click', () => this.micCheck());
    this.el('mic-select').addEventListener('change', (e) => this.sip && this.sip.setMicrophone(e.target.value));
    this.el('logout').addEventListener('click', () => this.logout());
  }

  dial() {
    if (!this.sip) return;
    const number = this.el('number').value.trim();
    const extra = typeof this.options.extraParam === 'function' ? this.options.extraParam(number) : this.options.extraParam;
    const uuid = this.sip.call(number, extra || {});
    if (!uuid) return;
    this.state.call = { direction: 'outbound', number, phase: 'calling', held: false, muted: false, answeredAt: null, uuid };
    this.render();
  }

  press(digit) {
    this.tones.key(digit);
    const call = this.state.call;
    if (call && call.answeredAt) {
      this.sip.sendDtmf(digit);
    } else if (!call) {
      const input = this.el('number');
      input.value += digit;
    }
  }

  async micCheck() {
    const meter = this.el('mic-level');
    meter.hidden = false;
    this.notice(uiStrings(this.lang).micSpeak);
    let peak = 0;
    const test = await SipCall.testMicrophone((level) => {
      meter.value = level;
      peak = Math.max(peak, level);
    }, { lang: this.lang });
    if (test.error) {
      meter.hidden = true;
      return this.notice(test.error, 'error');
    }
    setTimeout(() => {
      test.yes();
      meter.hidden = true;
      const words = uiStrings(this.lang);
      this.notice(peak > 3 ? words.micOk : words.micSilent, peak > 3 ? 'info' : 'error');
      this.fillDevices();
    }, 3000);
  }

  async fillDevices() {
    const select = this.el('mic-select');
    const devices = (await SipCall.getMediaDeviceInfo()).filter((d) => d.kind === 'audioinput');
    const chosen = select.value;
    select.innerHTML = '';
    const def = document.createElement('option');
    def.value = '';
    def.textContent = uiStrings(this.lang).defaultDevice;
    select.append(def);
    devices.forEach((d, i) => {
      if (!d.deviceId || d.deviceId === 'default') return;
      const option = document.createElement('option');
      option.value = d.deviceId;
      option.textContent = d.label || `${uiStrings(this.lang).microphone} ${i + 1}`;
      select.append(option);
    });
    select.value = chosen;
  }

  onEvent(event, data) {
    this.host.dispatchEvent(new CustomEvent('callgate-event', { detail: { event, data }, bubbles: true, composed: true }));
    if (typeof this.options.onEvent === 'function') {
      try {
        this.options.onEvent(event, data);
      } catch (error) {
        console.error('[softphone] onEvent threw', error);
      }
    }
    const s = this.state;
    switch (event) {
      case 'CONNECTED':
        s.conn = 'connected';
        this.fillDevices();
        break;
      case 'REGISTERED':
        s.conn = 'registered';
        break;
      case 'UNREGISTERED':
        s.conn = 'connected';
        break;
      case 'REGISTER_FAILED':
        s.conn = 'connected';
        this.notice(data.msg, 'error');
        break;
      case 'RECONNECTING':
        s.conn = 'reconnecting';
        break;
      case 'DISCONNECTED':
        // RECONNECTING follows at once when the SDK retries; a final refusal stays here.
        s.conn = 'disconnected';
        break;
      case 'ERROR':
        this.notice(data.msg, 'error');
        if (s.conn === 'connecting') {
          // The gateway refused the login for good: back to the form.
          this.sip.cleanSDK();
          this.sip = null;
          s.conn = 'disconnected';
        }
        break;
      case 'MIC_ERROR':
        this.notice(data.msg, 'error');
        break;
      case 'OUTGOING_CALL':
        if (s.call) s.call.phase = 'calling';
        break;
      case 'RINGING':
        if (s.call && s.call.direction === 'outbound') {
          s.call.phase = 'ringing';
          this.tones.ringback();
        }
        break;
      case 'EARLY_MEDIA':
        if (s.call) s.call.phase = 'early';
        this.tones.stop();
        break;
      case 'CALL_RESTORED':
        // The page reloaded mid-call and callgate kept the call.
        s.call = {
          direction: data.direction,
          number: data.otherLegNumber,
          phase: data.answered ? 'active' : 'calling',
          held: data.held,
          muted: data.muted,
          answeredAt: data.answered ? Date.now() : null,
          uuid: data.callId,
        };
        if (data.answered) this.startTimer();
        break;
      case 'INCOMING_CALL':
        s.call = { direction: 'inbound', number: data.otherLegNumber, displayName: data.displayName, headers: data.headers, phase: 'incoming', held: false, muted: false, answeredAt: null, uuid: data.callId };
        this.tones.ringtone();
        this.showCustomerCard(data);
        this.host.dispatchEvent(new CustomEvent('callgate-incoming', { detail: data, bubbles: true, composed: true }));
        break;
      case 'IN_CALL':
        this.tones.stop();
        if (s.call) {
          s.call.phase = 'active';
          s.call.held = false;
          if (!s.call.answeredAt) s.call.answeredAt = Date.now();
          this.startTimer();
        }
        break;
      case 'HOLD':
        if (s.call) s.call.held = true;
        break;
      case 'MUTE':
        if (s.call) s.call.muted = true;
        break;
      case 'UNMUTE':
        if (s.call) s.call.muted = false;
        break;
      case 'LATENCY_STAT':
        s.bars = qualityBars(data);
        s.stat = data;
        break;
      case 'TRANSFER_PROGRESS':
        this.notice(`${uiStrings(this.lang).transfer}: ${data.code}`);
        break;
      case 'MESSAGE_RECEIVED':
        this.notice(`${uiStrings(this.lang).message} ${data.from}: ${data.text}`);
        break;
      case 'CALL_END': {
        this.tones.stop();
        this.stopTimer();
        const took = s.call && s.call.answeredAt ? ` · ${formatDuration(Math.round((Date.now() - s.call.answeredAt) / 1000))}` : '';
        const ok = ['normal_clearing', 'transferred', 'cancelled'].includes(data.cause);
        this.notice(`${data.msg}${took}`, ok ? 'info' : 'error');
        s.call = null;
        s.bars = null;
        this.el('transfer-row').hidden = true;
        this.el('customer-card').innerHTML = '';
        break;
      }
      default:
        break;
    }
    this.render();
  }

  async showCustomerCard(caller) {
    const slot = this.el('customer-card');
    slot.innerHTML = '';
    if (!this.customerCard) return;
    try {
      const card = await this.customerCard(caller);
      if (!this.state.call || this.state.call.uuid !== caller.callId) return;
      if (typeof card === 'string') slot.innerHTML = card;
      else if (card && typeof card === 'object' && 'nodeType' in card) slot.append(card);
    } catch (error) {
      console.error('[softphone] customerCard threw', error);
    }
  }

  startTimer() {
    this.stopTimer();
    this.timer = setInterval(() => this.renderTimer(), 1000);
  }

  stopTimer() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  notice(message, kind = 'info') {
    this.state.notice = message || '';
    this.state.noticeKind = kind;
    this.render();
  }

  // ---- rendering -------------------------------------------------------------------------

  applyLanguage() {
    const words = uiStrings(this.lang);
    for (const node of this.root.querySelectorAll('[data-t]')) node.textContent = words[node.dataset.t];
    this.el('number').placeholder = words.numberPlaceholder;
    this.el('transfer-number').placeholder = words.transferTo;
    this.el('lang').value = this.lang;
    this.el('network').title = words.network;
  }

  renderTimer() {
    const call = this.state.call;
    const seconds = call && call.answeredAt ? Math.floor((Date.now() - call.answeredAt) / 1000) : 0;
    this.el('timer').textContent = formatDuration(seconds);
  }

  render() {
    const words = uiStrings(this.lang);
    const s = this.state;
    const loggedIn = Boolean(this.sip);
    const call = s.call;
    this.el('login-form').hidden = loggedIn;
    this.el('phone').hidden = !loggedIn;
    this.el('status-dot').dataset.state = s.conn;
    const status = {
      connecting: words.connecting,
      connected: this.options.autoRegister === false ? words.connected : words.notRegistered,
      registered: words.registered,
      reconnecting: words.reconnecting,
      disconnected: words.disconnected,
    }[s.conn];
    this.el('status').textContent = loggedIn && this.sip.localAgent ? `${this.sip.localAgent} · ${status}` : status;
    const net = this.el('network');
    net.dataset.bars = s.bars === null || s.bars === undefined ? '' : String(s.bars);
    net.title = s.stat
      ? `${words.network}: ${s.stat.latencyTime} ms, ↑${(s.stat.upLossRate * 100).toFixed(1)}% ↓${(s.stat.downLossRate * 100).toFixed(1)}%`
      : words.network;
    net.hidden = !call;

    const incoming = call && call.phase === 'incoming';
    this.el('incoming').hidden = !incoming;
    if (incoming) {
      this.el('caller').textContent = call.number;
      this.el('caller-name').textContent = call.displayName || '';
      const dl = this.el('caller-headers');
      dl.innerHTML = '';
      for (const [name, value] of Object.entries(call.headers || {})) {
        const dt = document.createElement('dt');
        dt.textContent = name;
        const dd = document.createElement('dd');
        dd.textContent = value;
        dl.append(dt, dd);
      }
    }
    this.el('callinfo').hidden = !call || incoming;
    if (call) {
      this.el('peer').textContent = call.displayName ? `${call.displayName} (${call.number})` : call.number;
      const phase = call.held
        ? words.onHold
        : { calling: words.calling, ringing: words.ringing, early: words.earlyMedia, active: words.inCall, incoming: words.incomingCall }[call.phase];
      this.el('call-state').textContent = call.muted ? `${phase} · ${words.muted}` : phase;
      this.renderTimer();
    }
    this.el('call').hidden = Boolean(call);
    this.el('call').disabled = !(s.conn === 'connected' || s.conn === 'registered');
    this.el('hangup').hidden = !call;
    this.el('number').disabled = Boolean(call);
    const answered = Boolean(call && call.answeredAt);
    this.el('controls').hidden = !answered;
    if (!answered) this.el('transfer-row').hidden = true;
    const hold = this.el('hold');
    hold.textContent = call && call.held ? words.resume : words.hold;
    hold.setAttribute('aria-pressed', String(Boolean(call && call.held)));
    const mute = this.el('mute');
    mute.textContent = call && call.muted ? words.unmute : words.mute;
    mute.setAttribute('aria-pressed', String(Boolean(call && call.muted)));
    const notice = this.el('notice');
    notice.textContent = s.notice;
    notice.dataset.kind = s.noticeKind;
  }

  // ---- remember me (the seed's saveCredentials / loadCredentials) ------------------------

  saveCredentials(credentials) {
    if (!this.storage) return;
    try {
      if (credentials) this.storage.setItem(STORAGE_KEY, JSON.stringify(credentials));
      else this.storage.removeItem(STORAGE_KEY);
    } catch {
      // storage full or blocked: remembering is best effort
    }
  }

  saveSession(session) {
    if (!this.sessionStorage) return;
    try {
      if (session) this.sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
      else this.sessionStorage.removeItem(SESSION_KEY);
    } catch {
      // blocked storage: a reload then shows the login form
    }
  }

  loadSession() {
    if (!this.sessionStorage) return null;
    try {
      const saved = JSON.parse(this.sessionStorage.getItem(SESSION_KEY) || 'null');
      // A login of the other mode (the page changed how it logs in) is not replayed.
      const usable = saved && saved.extNo && (this.tokenMode ? saved.token === true : saved.extPwd);
      return usable ? saved : null;
    } catch {
      return null;
    }
  }

  loadCredentials() {
    this.el('ext').value = this.options.extNo || '';
    this.el('pwd').value = this.options.extPwd || '';
    const pwdLabel = this.el('pwd').closest('label');
    if (pwdLabel) pwdLabel.hidden = this.tokenMode;
    this.el('pwd').required = !this.tokenMode;
    if (!this.storage) return;
    try {
      const saved = JSON.parse(this.storage.getItem(STORAGE_KEY) || 'null');
      if (saved && saved.extNo) {
        this.el('ext').value = saved.extNo;
        if (!this.tokenMode) this.el('pwd').value = saved.extPwd || '';
        this.el('remember').checked = true;
      }
    } catch {
      // unreadable entry: start empty
    }
  }
}

function pick(lang) {
  const candidates = [lang, typeof navigator !== 'undefined' && navigator.language];
  for (const c of candidates) {
    const short = String(c || '').slice(0, 2).toLowerCase();
    if (['zh', 'en', 'vi'].includes(short)) return short;
  }
  return 'en';
}

function safeSessionStorage() {
  try {
    return globalThis.sessionStorage || null;
  } catch {
    return null;
  }
}

function safeLocalStorage() {
  try {
    return globalThis.localStorage || null;
  } catch {
    return null;
  }
}

/** callgate's address when none is configured: the script's origin, else the page's. */
function defaultServer() {
  const secure = typeof location !== 'undefined' && location.protocol === 'https:';
  const host = SCRIPT_ORIGIN || (typeof location !== 'undefined' ? location.host : '127.0.0.1:8080');
  return { url: `${secure ? 'wss' : 'ws'}://${host}/ws` };
}

/**
 * Renders a softphone bar into `target` (in a shadow root, so page CSS does not leak in) and
 * returns its controller. Options: `url` or `host`/`port`/`proto`/`path` (default: where the
 * script came from), `lang`, `extNo`/`extPwd` (prefill; with `autoLogin` log in at once),
 * `token`/`getToken` (token mode: the form asks only for the extension), `autoRegister`
 * (default true), `customerCard(caller)`, `onEvent(event, data)`,
 * `extraParam` (object or `number => object` for outbound X- headers), `storage`.
 */
export function mount(target, options = {}) {
  const root = target.shadowRoot || (target.attachShadow ? target.attachShadow({ mode: 'open' }) : target);
  return new Softphone(target, root, options);
}

/**
 * Registers `<callgate-phone>` (attributes: `server` = ws(s) URL, `lang`, `extension`,
 * `auto-register="false"`); its `phone` property is the Softphone controller.
 */
export function defineElement(name = 'callgate-phone') {
  if (typeof customElements === 'undefined' || customElements.get(name)) return;
  class CallgatePhone extends HTMLElement {
    connectedCallback() {
      if (this.phone) return;
      this.phone = mount(this, {
        url: this.getAttribute('server') || undefined,
        lang: this.getAttribute('lang') || undefined,
        extNo: this.getAttribute('extension') || undefined,
        autoRegister: this.getAttribute('auto-register') !== 'false',
      });
    }

    disconnectedCallback() {
      if (this.phone) this.phone.destroy();
      this.phone = null;
    }
  }
  customElements.define(name, CallgatePhone);
}

defineElement();

export { SipCall, text as messageText };
