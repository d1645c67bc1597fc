// Shared set-up for the SipCall unit tests: a SipCall on fakes that records its events, and the
// protocol fixtures from the signaling crate (the same JSON the Rust tests round-trip).

import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import SipCall from '../src/sipcall.js';
import { fakeEnv, FakeWebSocket, settle } from './fakes.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');

/** Every fixture of one side ('client' or 'server'), parsed, by file name without .json. */
export function fixtures(side) {
  const dir = path.join(repoRoot, 'signaling', 'fixtures', side);
  const out = {};
  for (const file of readdirSync(dir)) {
    if (file.endsWith('.json')) out[file.slice(0, -5)] = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
  }
  return out;
}

/** A server fixture with fields replaced (e.g. the call_id of the call under test). */
export function serverFixture(name, patch = {}) {
  return { ...fixtures('server')[name], ...patch };
}

/** A SipCall on fakes, connected and welcomed unless `connect: false`. */
export async function connected(config = {}, { connect = true } = {}) {
  const { env, clock, mediaDevices } = fakeEnv(config.env);
  const events = [];
  const sip = new SipCall({
    host: 'callgate.test',
    port: 8080,
    extNo: '1001',
    extPwd: 's3cret',
    lang: 'en',
    ...config,
    env,
  });
  sip.on('event', (event, data) => events.push({ event, data }));
  await settle();
  if (connect) {
    FakeWebSocket.last().welcome();
    await settle();
  }
  return {
    sip,
    env,
    clock,
    mediaDevices,
    events,
    ws: () => FakeWebSocket.last(),
    /** Events named `name`, in order. */
    named: (name) => events.filter((e) => e.event === name).map((e) => e.data),
    names: () => events.map((e) => e.event),
  };
}

/** Places an outbound call through to the ack; returns the uuid and the gateway call id. */
export async function placeCall(t, number = 'echo', extra = {}) {
  const uuid = t.sip.call(number, extra);
  await settle();
  const callId = 'c-test-1';
  t.ws().ack('call', { call_id: callId, sdp: 'v=0\r\nanswer-from-callgate\r\n', call_uuid: uuid });
  await settle();
  return { uuid, callId };
}

/** Places and answers a call. */
export async function activeCall(t, number = 'echo') {
  const placed = await placeCall(t, number);
  t.ws().serverSend({ type: 'call_answered', call_id: placed.callId });
  await settle();
  return placed;
}
