// The real-browser test rig: the `callgate demo` binary on free loopback ports, a TCP proxy in
// front of its HTTP port (so a test can cut the WebSocket like a network would), a tone WAV
// for Chromium's fake microphone, and Debian's Chromium driven by playwright-core.

import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');

/** Frequency of the fake microphone's tone; the echo test looks for it in the remote audio. */
export const TONE_HZ = 440;

/** A 16-bit mono WAV of a sine tone (Chromium loops it as the microphone). */
export function writeToneWav(file, { hz = TONE_HZ, seconds = 2, rate = 48000, amplitude = 0.3 } = {}) {
  const samples = seconds * rate;
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++) {
    data.writeInt16LE(Math.round(Math.sin((2 * Math.PI * hz * i) / rate) * amplitude * 32767), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  writeFileSync(file, Buffer.concat([header, data]));
}

/** A loopback port free for both UDP and TCP (callgate's SIP listens on both). */
export async function freeSipPort() {
  for (let tries = 0; tries < 20; tries++) {
    const tcp = createServer();
    const port = await new Promise((resolve) => tcp.listen(0, '127.0.0.1', () => resolve(tcp.address().port)));
    const udp = createSocket('udp4');
    const ok = await new Promise((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise((resolve) => tcp.close(resolve));
    if (ok) {
      await new Promise((resolve) => udp.close(resolve));
      return port;
    }
  }
  throw new Error('no free SIP port');
}

/** The callgate binary: $CALLGATE_BIN, else target/debug/callgate (built by `cargo test`). */
export function callgateBinary() {
  const bin = process.env.CALLGATE_BIN || path.join(repoRoot, 'target', 'debug', 'callgate');
  if (!existsSync(bin)) {
    throw new Error(`${bin} is missing: run \`cargo build -p gateway --bin callgate\` first (or set CALLGATE_BIN)`);
  }
  return bin;
}

/**
 * Starts `callgate demo` on free loopback ports with JSON logs; resolves once it prints its
 * address. `logs` collects parsed stderr lines (the demo PBX logs the DTMF digits it hears).
 * `args` adds flags (e.g. `--auth-token-secret …` for token mode).
 */
export async function startGateway({ args = [] } = {}) {
  const sipPort = await freeSipPort();
  const child = spawn(
    callgateBinary(),
    [
      'demo',
      '--http-listen', '127.0.0.1:0',
      '--sip-listen', `127.0.0.1:${sipPort}`,
      '--pbx-addr', '127.0.0.1:0',
      '--webrtc-bind', '127.0.0.1:0',
      '--log-format', 'json',
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs = [];
  let errBuf = '';
  child.stderr.on('data', (chunk) => {
    errBuf += chunk;
    let nl;
    while ((nl = errBuf.indexOf('\n')) >= 0) {
      const line = errBuf.slice(0, nl);
      errBuf = errBuf.slice(nl + 1);
      try {
        logs.push(JSON.parse(line));
      } catch {
        logs.push({ raw: line });
      }
    }
  });
  const httpAddr = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`callgate did not start: ${out}`)), 15000);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/callgate listening on http:\/\/(\S+?)\//);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`callgate exited with ${code}: ${out}\n${logs.map((l) => JSON.stringify(l)).join('\n')}`));
    });
  });
  return {
    httpAddr,
    logs,
    /** SIGTERM and wait for the exit (callgate shuts down cleanly on it). */
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** A TCP proxy to `target`; `drop()` cuts every open connection at once, as a network would. */
export async function startProxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const sockets = new Set();
  const server = createServer((client) => {
    const upstream = connect(port, host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  const addr = await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address())));
  return {
    addr: `127.0.0.1:${addr.port}`,
    drop() {
      const count = sockets.size;
      for (const s of sockets) s.destroy();
      return count;
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Debian's Chromium, headless, with a fake microphone playing `toneWav`. */
export async function launchBrowser(toneWav) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: [
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      `--use-file-for-fake-audio-capture=${toneWav}`,
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--autoplay-policy=no-user-gesture-required',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A temporary directory with the tone WAV in it. */
export function toneFile() {
  const dir = mkdtempSync(path.join(tmpdir(), 'callgate-e2e-'));
  const file = path.join(dir, 'tone.wav');
  writeToneWav(file);
  return file;
}

/**
 * Opens the softphone page at `origin` in a fresh context and records every SDK event the
 * bar re-dispatches (`callgate-event`) in `window.__events`.
 */
export async function openPhone(browser, origin) {
  const context = await browser.newContext({ viewport: { width: 900, height: 720 } });
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (error) => consoleLines.push(`pageerror: ${error.message}`));
  await page.addInitScript(() => {
    window.__events = [];
    document.addEventListener('callgate-event', (e) => window.__events.push({ event: e.detail.event, data: e.detail.data }), true);
  });
  await page.goto(`http://${origin}/`);
  await page.waitForFunction(() => document.getElementById('phone') && document.getElementById('phone').phone);
  return { context, page, consoleLines };
}

/** Logs in through the form and waits for CONNECTED. */
export async function login(page, { ext = '1001', pwd = 'demo', lang, remember = false } = {}) {
  if (lang) await page.selectOption('callgate-phone [data-role=lang]', lang);
  await page.fill('callgate-phone [data-role=ext]', ext);
  await page.fill('callgate-phone [data-role=pwd]', pwd);
  await page.setChecked('callgate-phone [data-role=remember]', remember);
  await page.click('callgate-phone [data-role=login]');
  return waitEvent(page, 'CONNECTED');
}

/** Every recorded event. */
export async function events(page) {
  return page.evaluate(() => window.__events);
}

/**
 * Waits for the first `name` event at index >= `from` (so a test can wait for the next one)
 * and returns its data.
 */
export async function waitEvent(page, name, { from = 0, timeout = 15000 } = {}) {
  try {
    const handle = await page.waitForFunction(
      ([n, f]) => window.__events.slice(f).find((e) => e.event === n) || null,
      [name, from],
      { timeout, polling: 50 },
    );
    return (await handle.jsonValue()).data;
  } catch (error) {
    const seen = (await events(page)).map((e) => e.event).join(', ');
    throw new Error(`no ${name} within ${timeout} ms; events: ${seen}`);
  }
}

/** Number of events so far (a `from` for waitEvent). */
export async function eventCount(page) {
  return page.evaluate(() => window.__events.length);
}

/** Dials `number` through the bar's dial row. */
export async function dial(page, number) {
  await page.fill('callgate-phone [data-role=number]', number);
  await page.click('callgate-phone [data-role=call]');
}

/**
 * Measures the current call's received audio over `ms`: inbound-rtp packets before/after,
 * and what the bar's <audio> element is playing (RMS level and the dominant frequency).
 */
export async function measureRemoteAudio(page, ms = 1500) {
  return page.evaluate(async (window_ms) => {
    const host = document.getElementById('phone');
    const audio = host.shadowRoot.querySelector('[data-role=remote-audio]');
    const pc = host.phone.sipCall.getPeerConnection();
    const inbound = async () => {
      const report = await pc.getStats();
      for (const s of report.values()) if (s.type === 'inbound-rtp' && s.kind === 'audio') return s;
      return null;
    };
    const before = await inbound();
    const ctx = new AudioContext();
    await ctx.resume();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 4096;
    ctx.createMediaStreamSource(audio.srcObject).connect(analyser);
    await new Promise((r) => setTimeout(r, window_ms));
    const after = await inbound();
    const wave = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(wave);
    const rms = Math.sqrt(wave.reduce((sum, v) => sum + v * v, 0) / wave.length);
    const spectrum = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(spectrum);
    let peak = 0;
    for (let i = 1; i < spectrum.length; i++) if (spectrum[i] > spectrum[peak]) peak = i;
    const peakHz = (peak * ctx.sampleRate) / analyser.fftSize;
    await ctx.close();
    return {
      packetsBefore: before ? before.packetsReceived : 0,
      packetsAfter: after ? after.packetsReceived : 0,
      audioLevel: after ? after.audioLevel : 0,
      codec: after && after.codecId ? (await pc.getStats()).get(after.codecId).mimeType : null,
      rms,
      peakHz,
      paused: audio.paused,
      playing: Boolean(audio.srcObject) && audio.currentTime > 0,
    };
  }, ms);
}
