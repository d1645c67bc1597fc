// End to end in a real browser: Debian's Chromium (headless, fake microphone playing a 440 Hz
// tone) loads the softphone bar from `callgate demo`, logs in through the form and calls the
// demo PBX. Audio is checked where it is heard: RTP counters of the peer connection and the
// level and pitch of what the bar's <audio> element plays.
//
// Run: cargo build -p gateway --bin callgate && (cd web-client && npm ci && node --test e2e/)
// UPDATE_SCREENSHOT=1 also refreshes docs/softphone-bar.png.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import {
  TONE_HZ,
  dial,
  eventCount,
  events,
  launchBrowser,
  login,
  measureRemoteAudio,
  openPhone,
  repoRoot,
  startGateway,
  startProxy,
  toneFile,
  waitEvent,
} from './harness.js';

/**
 * Gateway features these tests need that callgate does not have yet; a test names its
 * feature and is skipped while the entry is set. Delete the entry when the feature lands.
 */
const PENDING = {};

const BAR = 'callgate-phone';

describe('softphone bar and SDK in Chromium against callgate demo', { timeout: 200000 }, () => {
  let gateway;
  let proxy;
  let browser;
  const pages = [];

  before(async () => {
    gateway = await startGateway();
    proxy = await startProxy(gateway.httpAddr);
    browser = await launchBrowser(toneFile());
  });

  after(async () => {
    for (const { context } of pages) await context.close().catch(() => {});
    if (browser) await browser.close();
    if (proxy) await proxy.stop();
    if (gateway) await gateway.stop();
  });

  /** A fresh page on the bar, logged in, through the proxy. */
  async function phone(options) {
    const opened = await openPhone(browser, proxy.addr);
    pages.push(opened);
    await login(opened.page, options);
    return opened;
  }

  /** Calls `number` and waits for IN_CALL; returns the OUTGOING_CALL data. */
  async function echoCall(page, number = 'echo') {
    const from = await eventCount(page);
    await dial(page, number);
    const outgoing = await waitEvent(page, 'OUTGOING_CALL', { from });
    await waitEvent(page, 'IN_CALL', { from });
    return outgoing;
  }

  async function hangUp(page) {
    const from = await eventCount(page);
    await page.click(`${BAR} [data-role=hangup]`);
    return waitEvent(page, 'CALL_END', { from });
  }

  test('the SDK is served as an ES module and as a classic script', async () => {
    const { page } = await openPhone(browser, proxy.addr).then((o) => (pages.push(o), o));
    const result = await page.evaluate(async () => {
      const mod = await import('/sdk/sipcall.mjs');
      await new Promise((resolve, reject) => {
        const script = document.createElement('script');
        script.src = '/sdk/sipcall.js';
        script.onload = resolve;
        script.onerror = reject;
        document.head.append(script);
      });
      return {
        moduleDefault: typeof mod.default,
        moduleVersion: mod.default.VERSION,
        classicGlobal: typeof window.SipCall,
        classicTask: typeof window.SipCall.AutoCallTask,
        element: typeof customElements.get('callgate-phone'),
      };
    });
    assert.deepEqual(result, {
      moduleDefault: 'function',
      moduleVersion: '0.1.0',
      classicGlobal: 'function',
      classicTask: 'function',
      element: 'function',
    });
  });

  test('echo: OUTGOING_CALL, IN_CALL, the echoed tone really plays, LATENCY_STAT, hang up → CALL_END', async () => {
    const { page } = await phone();
    const outgoing = await echoCall(page);
    assert.equal(outgoing.direction, 'outbound');
    assert.equal(outgoing.otherLegNumber, 'echo');
    assert.match(outgoing.callId, /^[0-9a-f-]{36}$/);

    const audio = await measureRemoteAudio(page);
    assert.ok(audio.packetsAfter > audio.packetsBefore + 20, `RTP keeps arriving: ${JSON.stringify(audio)}`);
    assert.match(audio.codec, /audio\/(PCMU|PCMA)/i, 'G.711 end to end');
    assert.ok(audio.audioLevel > 0.01, `inbound audio level: ${audio.audioLevel}`);
    assert.ok(audio.playing && !audio.paused, 'the <audio> element plays');
    assert.ok(audio.rms > 0.01, `the <audio> element is not silent: rms ${audio.rms}`);
    assert.ok(Math.abs(audio.peakHz - TONE_HZ) < 30, `it plays our ${TONE_HZ} Hz tone back: ${audio.peakHz} Hz`);

    const stats = (await events(page)).filter((e) => e.event === 'LATENCY_STAT').map((e) => e.data);
    assert.ok(stats.length >= 1, 'LATENCY_STAT every second');
    for (const s of stats) {
      assert.deepEqual(Object.keys(s).sort(), ['downAudioLevel', 'downLossRate', 'latencyTime', 'upAudioLevel', 'upLossRate']);
    }
    assert.ok(stats.some((s) => s.downAudioLevel > 0), 'LATENCY_STAT sees the echo');
    const bars = await page.locator(`${BAR} [data-role=network]`).getAttribute('data-bars');
    assert.match(bars, /^[1-4]$/, 'network-quality indicator lit on loopback');
    assert.match(await page.locator(`${BAR} [data-role=call-state]`).textContent(), /In call/);
    assert.match(await page.locator(`${BAR} [data-role=timer]`).textContent(), /^00:0\d$/);

    // The README's picture of the bar in a call.
    const shot = await page.locator(BAR).screenshot({
      path: process.env.UPDATE_SCREENSHOT
        ? path.join(repoRoot, 'docs', 'softphone-bar.png')
        : (mkdirSync(path.join(repoRoot, 'target', 'e2e'), { recursive: true }), path.join(repoRoot, 'target', 'e2e', 'softphone-bar.png')),
    });
    assert.ok(shot.length > 5000, 'a real picture');

    const end = await hangUp(page);
    assert.deepEqual(
      { originator: end.originator, cause: end.cause, code: end.code, answered: end.answered, callId: end.callId },
      { originator: 'local', cause: 'normal_clearing', code: 0, answered: true, callId: outgoing.callId },
    );
    assert.equal(await page.evaluate(() => document.getElementById('phone').phone.sipCall.getPeerConnection()), null);
  });

  test("callgate keeps the browser leg itself: Chromium's consent checks answered, RTCP reports both ways", async () => {
    const { page } = await phone();
    await echoCall(page);
    // Once Chromium's RTP passed the keys of its handshake, callgate lets str0m go and
    // answers consent checks and exchanges RTCP reports itself. Chromium counts a response
    // only when its MESSAGE-INTEGRITY verifies; it builds remote-outbound-rtp from our
    // sender reports and remote-inbound-rtp (with a round trip once our block echoes its
    // sender report) from our report blocks, which it must decrypt first.
    const seen = await page.evaluate(async () => {
      const pc = document.getElementById('phone').phone.sipCall.getPeerConnection();
      const sample = async () => {
        const out = { responses: 0, rtt: null, ourPacketsSent: 0, reportsReceived: 0, state: pc.connectionState };
        for (const s of (await pc.getStats()).values()) {
          if (s.type === 'candidate-pair' && s.nominated) out.responses = Math.max(out.responses, s.responsesReceived || 0);
          if (s.type === 'remote-inbound-rtp' && s.kind === 'audio' && typeof s.roundTripTime === 'number') out.rtt = s.roundTripTime;
          if (s.type === 'remote-outbound-rtp' && s.kind === 'audio') {
            out.ourPacketsSent = s.packetsSent || 0;
            out.reportsReceived = s.reportsSent || 0;
          }
        }
        return out;
      };
      const first = await sample();
      let last = first;
      for (let i = 0; i < 60; i++) {
        await new Promise((r) => setTimeout(r, 250));
        last = await sample();
        if (last.rtt !== null && last.responses >= first.responses + 3 && last.reportsReceived >= 2) break;
      }
      return { first, last };
    });
    assert.equal(seen.last.state, 'connected', JSON.stringify(seen));
    assert.ok(seen.last.responses >= seen.first.responses + 3, `consent checks answered: ${JSON.stringify(seen)}`);
    assert.ok(seen.last.rtt !== null && seen.last.rtt < 1, `Chromium read our receiver reports: ${JSON.stringify(seen)}`);
    assert.ok(seen.last.ourPacketsSent > 50, `our sender reports count what we sent: ${JSON.stringify(seen)}`);
    const audio = await measureRemoteAudio(page, 500);
    assert.ok(audio.packetsAfter > audio.packetsBefore + 10, `RTP keeps arriving: ${JSON.stringify(audio)}`);
    await hangUp(page);
  });

  test('busy: CALL_END with 486 and the localized message, shown in the bar', async () => {
    const { page } = await phone({ lang: 'vi' });
    const from = await eventCount(page);
    await dial(page, 'busy');
    const end = await waitEvent(page, 'CALL_END', { from });
    assert.equal(end.code, 486);
    assert.equal(end.cause, 'busy');
    assert.equal(end.originator, 'remote');
    assert.equal(end.answered, false);
    assert.equal(end.msg, 'Khách hàng đang bận');
    assert.equal(await page.locator(`${BAR} [data-role=notice]`).textContent(), 'Khách hàng đang bận');
  });

  test('noanswer: RINGING plays ringback; hanging up cancels → CALL_END cancelled, ringback stops', async () => {
    const { page } = await phone();
    const from = await eventCount(page);
    await dial(page, 'noanswer');
    await waitEvent(page, 'OUTGOING_CALL', { from });
    const ringing = await waitEvent(page, 'RINGING', { from });
    assert.equal(ringing.code, 180);
    const ringback = () => page.evaluate(() => document.getElementById('phone').phone.tones.loop !== null);
    assert.equal(await ringback(), true, 'ringback tone loops while the far end rings');
    assert.match(await page.locator(`${BAR} [data-role=call-state]`).textContent(), /Ringing/);
    const end = await hangUp(page);
    assert.deepEqual([end.originator, end.cause, end.answered, end.msg], ['local', 'cancelled', false, 'Call cancelled']);
    assert.equal(await ringback(), false);
  });

  test('microphone test hears the fake microphone and the device picker lists it', async () => {
    const { page } = await phone();
    await page.click(`${BAR} [data-role=mic-check]`);
    await page.waitForFunction(
      () => /Microphone works|No sound/.test(document.getElementById('phone').shadowRoot.querySelector('[data-role=notice]').textContent),
      null,
      { timeout: 8000 },
    );
    assert.equal(await page.locator(`${BAR} [data-role=notice]`).textContent(), 'Microphone works');
    const options = await page.locator(`${BAR} [data-role=mic-select] option`).allTextContents();
    assert.ok(options.length >= 2, `default plus the fake device: ${options}`);
  });

  test('a dropped WebSocket gives DISCONNECTED and RECONNECTING, then RECONNECTED', async () => {
    const { page } = await phone();
    const from = await eventCount(page);
    assert.ok(proxy.drop() > 0, 'the page had a connection to cut');
    const reconnecting = await waitEvent(page, 'RECONNECTING', { from });
    assert.equal(reconnecting.attempt, 1);
    await waitEvent(page, 'DISCONNECTED', { from });
    await waitEvent(page, 'RECONNECTED', { from, timeout: 10000 });
    await waitEvent(page, 'CONNECTED', { from });
    // The new session works: a call goes through.
    await echoCall(page);
    await hangUp(page);
  });

  test('a page reload mid-call: the bar logs in again, CALL_RESTORED, and the echoed tone plays again', async () => {
    const { page } = await phone({ ext: '1006' });
    const outgoing = await echoCall(page);
    const before = await measureRemoteAudio(page, 1000);
    assert.ok(before.rms > 0.01, `audio before the reload: ${JSON.stringify(before)}`);

    await page.reload();
    await page.waitForFunction(() => document.getElementById('phone') && document.getElementById('phone').phone);
    const connected = await waitEvent(page, 'CONNECTED');
    assert.equal(connected.resumed, true, 'callgate kept the session');
    const restored = await waitEvent(page, 'CALL_RESTORED');
    assert.deepEqual(
      { callId: restored.callId, direction: restored.direction, otherLegNumber: restored.otherLegNumber, answered: restored.answered },
      { callId: outgoing.callId, direction: 'outbound', otherLegNumber: 'echo', answered: true },
    );
    assert.match(await page.locator(`${BAR} [data-role=call-state]`).textContent(), /In call/);
    await page.waitForFunction(
      () => {
        const pc = document.getElementById('phone').phone.sipCall.getPeerConnection();
        return pc && pc.connectionState === 'connected';
      },
      null,
      { timeout: 10000 },
    );
    const after = await measureRemoteAudio(page);
    assert.ok(after.packetsAfter > after.packetsBefore + 20, `RTP flows on the new peer connection: ${JSON.stringify(after)}`);
    assert.ok(after.rms > 0.01, `the <audio> element is not silent: rms ${after.rms}`);
    assert.ok(Math.abs(after.peakHz - TONE_HZ) < 30, `our ${TONE_HZ} Hz tone comes back: ${after.peakHz} Hz`);
    assert.equal((await events(page)).filter((e) => e.event === 'CALL_END').length, 0);

    const end = await hangUp(page);
    assert.deepEqual([end.cause, end.originator, end.callId], ['normal_clearing', 'local', outgoing.callId]);
  });

  test('remember me is opt-in: credentials are stored only when ticked, and prefill the form', async () => {
    const { page } = await phone({ ext: '1004', pwd: 'pw-1004' });
    assert.equal(await page.evaluate(() => localStorage.getItem('callgate.softphone.credentials')), null);
    await page.click(`${BAR} [data-role=logout]`);
    await login(page, { ext: '1005', pwd: 'pw-1005', remember: true });
    // A reload keeps the tab logged in (sessionStorage); logging out forgets that.
    await page.reload();
    await page.waitForFunction(() => document.getElementById('phone').phone);
    await waitEvent(page, 'CONNECTED');
    await page.click(`${BAR} [data-role=logout]`);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('callgate.softphone.session')), null);
    await page.reload();
    await page.waitForFunction(() => document.getElementById('phone').phone);
    assert.equal(await page.inputValue(`${BAR} [data-role=ext]`), '1005');
    assert.equal(await page.inputValue(`${BAR} [data-role=pwd]`), 'pw-1005');
    assert.equal(await page.isChecked(`${BAR} [data-role=remember]`), true);
    await login(page, { ext: '1005', pwd: 'pw-1005', remember: false });
    assert.equal(await page.evaluate(() => localStorage.getItem('callgate.softphone.credentials')), null, 'unticking forgets');
  });

  test('register → REGISTERED', { skip: PENDING.register }, async () => {
    const { page } = await phone();
    const registered = await waitEvent(page, 'REGISTERED');
    assert.equal(registered.localAgent, '1001');
    assert.ok(registered.expires > 0);
    assert.match(await page.locator(`${BAR} [data-role=status]`).textContent(), /Registered/);
  });

  test('DTMF from the keypad reaches the PBX', { skip: PENDING.dtmf }, async () => {
    const { page } = await phone({ ext: '1002' });
    await echoCall(page);
    for (const digit of ['4', '7', '#']) {
      await page.click(`${BAR} [data-digit="${digit}"]`);
      await page.waitForTimeout(350);
    }
    const heard = async () =>
      gateway.logs.filter((l) => l.fields && l.fields.message === 'dtmf received').map((l) => l.fields.digit).join('');
    const deadline = Date.now() + 5000;
    while (!(await heard()).includes('47#') && Date.now() < deadline) await page.waitForTimeout(100);
    assert.match(await heard(), /47#/, 'the demo PBX logged the digits');
    await hangUp(page);
  });

  test('hold and resume: HOLD, then IN_CALL and the audio comes back', { skip: PENDING.hold }, async () => {
    const { page } = await phone();
    await echoCall(page);
    let from = await eventCount(page);
    await page.click(`${BAR} [data-role=hold]`);
    const held = await waitEvent(page, 'HOLD', { from });
    assert.equal(held.by, 'agent');
    assert.match(await page.locator(`${BAR} [data-role=call-state]`).textContent(), /On hold/);
    from = await eventCount(page);
    await page.click(`${BAR} [data-role=hold]`);
    const resumed = await waitEvent(page, 'IN_CALL', { from });
    assert.equal(resumed.resumed, true);
    const audio = await measureRemoteAudio(page, 1000);
    assert.ok(audio.packetsAfter > audio.packetsBefore + 10, `audio flows after resume: ${JSON.stringify(audio)}`);
    await hangUp(page);
  });

  test('mute and unmute: MUTE, the echo goes quiet, UNMUTE', { skip: PENDING.mute }, async () => {
    const { page } = await phone();
    await echoCall(page);
    let from = await eventCount(page);
    await page.click(`${BAR} [data-role=mute]`);
    await waitEvent(page, 'MUTE', { from });
    await page.waitForTimeout(500);
    const muted = await measureRemoteAudio(page, 800);
    assert.ok(muted.rms < 0.01, `nothing of our voice comes back while muted: rms ${muted.rms}`);
    from = await eventCount(page);
    await page.click(`${BAR} [data-role=mute]`);
    await waitEvent(page, 'UNMUTE', { from });
    await page.waitForTimeout(500);
    const unmuted = await measureRemoteAudio(page, 800);
    assert.ok(unmuted.rms > 0.01, `the echo is back: rms ${unmuted.rms}`);
    await hangUp(page);
  });

  test('callback → INCOMING_CALL popup → answer → audio', { skip: PENDING.inbound }, async () => {
    const { page } = await phone({ ext: '1003' });
    await waitEvent(page, 'REGISTERED');
    await page.evaluate(() =>
      document.getElementById('phone').phone.setCustomerCard((caller) => `<b data-role="crm-card">Customer of ${caller.otherLegNumber}</b>`),
    );
    const from = await eventCount(page);
    await dial(page, 'callback');
    await waitEvent(page, 'CALL_END', { from, timeout: 10000 });
    const incoming = await waitEvent(page, 'INCOMING_CALL', { from, timeout: 10000 });
    assert.equal(incoming.direction, 'inbound');
    assert.equal(incoming.otherLegNumber, 'callback');
    const popup = page.locator(`${BAR} [data-role=incoming]`);
    await popup.waitFor({ state: 'visible' });
    assert.equal(await page.locator(`${BAR} [data-role=caller]`).textContent(), 'callback');
    assert.equal(await page.locator(`${BAR} [data-role=crm-card]`).textContent(), 'Customer of callback');
    const ringtone = () => page.evaluate(() => document.getElementById('phone').phone.tones.loop !== null);
    assert.equal(await ringtone(), true, 'the ringtone plays while the popup is up');
    mkdirSync(path.join(repoRoot, 'target', 'e2e'), { recursive: true });
    await page.locator(BAR).screenshot({ path: path.join(repoRoot, 'target', 'e2e', 'incoming-popup.png') });
    const answeredFrom = await eventCount(page);
    await page.click(`${BAR} [data-role=answer]`);
    await waitEvent(page, 'IN_CALL', { from: answeredFrom });
    assert.equal(await ringtone(), false);
    assert.equal(await popup.isVisible(), false);
    const audio = await measureRemoteAudio(page, 1000);
    assert.ok(audio.packetsAfter > audio.packetsBefore + 10, `audio on the answered inbound call: ${JSON.stringify(audio)}`);
    assert.ok(audio.audioLevel > 0.01, `inbound audio level: ${audio.audioLevel}`);
    const end = await hangUp(page);
    assert.deepEqual([end.originator, end.answered, end.direction], ['local', true, 'inbound']);
  });

  test('blind transfer → TRANSFER_PROGRESS 100 then 200 → CALL_END transferred; the PBX got the REFER', async () => {
    const { page } = await phone();
    const outgoing = await echoCall(page);
    const demoLog = (message) => gateway.logs.filter((l) => l.fields && l.fields.message === message).map((l) => l.fields);
    const refersBefore = demoLog('REFER accepted').length;
    const from = await eventCount(page);
    await page.click(`${BAR} [data-role=transfer-toggle]`);
    await page.fill(`${BAR} [data-role=transfer-number]`, '1003');
    await page.click(`${BAR} [data-role=transfer]`);
    const end = await waitEvent(page, 'CALL_END', { from });
    assert.deepEqual(
      { originator: end.originator, cause: end.cause, code: end.code, answered: end.answered, callId: end.callId },
      { originator: 'local', cause: 'transferred', code: 0, answered: true, callId: outgoing.callId },
    );
    const seen = (await events(page)).slice(from);
    const progress = seen.filter((e) => e.event === 'TRANSFER_PROGRESS').map((e) => e.data);
    assert.deepEqual(progress, [
      { callId: outgoing.callId, code: 100, done: false },
      { callId: outgoing.callId, code: 200, done: true },
    ]);
    assert.ok(
      seen.findIndex((e) => e.event === 'TRANSFER_PROGRESS') < seen.findIndex((e) => e.event === 'CALL_END'),
      'progress is reported before the call ends',
    );
    assert.equal(seen.filter((e) => e.event === 'ERROR').length, 0, 'a successful transfer is no error');
    // The demo PBX logged the REFER (number masked) and its 200 OK sipfrag.
    const refers = demoLog('REFER accepted').slice(refersBefore);
    assert.equal(refers.length, 1, `one REFER reached the PBX: ${JSON.stringify(refers)}`);
    assert.deepEqual([refers[0].to, refers[0].attended, refers[0].sipfrag], ['*003', false, 200]);
    const deadline = Date.now() + 5000;
    while (!demoLog('transfer finished').some((f) => f.sipfrag === 200) && Date.now() < deadline) await page.waitForTimeout(50);
    assert.ok(demoLog('transfer finished').some((f) => f.sipfrag === 200), 'the PBX sent the final NOTIFY');
    assert.equal(await page.locator(`${BAR} [data-role=transfer-row]`).isHidden(), true, 'the bar closed the transfer row');
    assert.equal(await page.evaluate(() => document.getElementById('phone').phone.sipCall.getPeerConnection()), null);
  });

  test('transfer to a busy target: TRANSFER_PROGRESS 486 and ERROR, the call goes on', async () => {
    const { page } = await phone();
    const outgoing = await echoCall(page);
    const from = await eventCount(page);
    await page.evaluate(() => document.getElementById('phone').phone.sipCall.transfer('busy'));
    const error = await waitEvent(page, 'ERROR', { from });
    assert.match(error.msg, /486/);
    const progress = (await events(page)).slice(from).filter((e) => e.event === 'TRANSFER_PROGRESS').map((e) => e.data);
    assert.deepEqual(progress, [
      { callId: outgoing.callId, code: 100, done: false },
      { callId: outgoing.callId, code: 486, done: true },
    ]);
    const audio = await measureRemoteAudio(page, 800);
    assert.ok(audio.packetsAfter > audio.packetsBefore + 10, `the call still carries audio: ${JSON.stringify(audio)}`);
    const end = await hangUp(page);
    assert.deepEqual([end.originator, end.cause, end.callId], ['local', 'normal_clearing', outgoing.callId]);
  });

  test('the pages logged no errors', () => {
    const problems = pages.flatMap((p) => p.consoleLines.filter((l) => /^(error|pageerror)/.test(l)));
    // A refused WebSocket during the drop test is expected noise from the browser itself.
    assert.deepEqual(problems.filter((l) => !/WebSocket/.test(l)), []);
  });
});

// Keep the file self-checking: the README and CI reference this screenshot path.
test('docs/softphone-bar.png exists and is a PNG', () => {
  const png = readFileSync(path.join(repoRoot, 'docs', 'softphone-bar.png'));
  assert.equal(png.subarray(1, 4).toString(), 'PNG');
});
