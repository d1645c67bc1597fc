// SipCall against a fake callgate: what it sends (checked against the signaling fixtures),
// which seed events it emits with which payloads, misuse, reconnects and media clean-up.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import SipCall, { extraHeaders, gatewayUrl, makeUuid, withResumeNode } from '../src/sipcall.js';
import { backoffDelay } from '../src/connection.js';
import { FakeWebSocket, FakePeerConnection, settle } from '../test-support/fakes.js';
import { connected, fixtures, serverFixture, placeCall, activeCall } from '../test-support/helpers.js';

/** Keys a client frame of `type` may carry: the union of that type's fixtures' keys. */
function allowedKeys(type) {
  const keys = new Set();
  for (const fixture of Object.values(fixtures('client'))) {
    if (fixture.type === type) Object.keys(fixture).forEach((k) => keys.add(k));
  }
  return keys;
}

/** Every frame the client sent has a fixture type and only that type's fields. */
function assertFramesMatchProtocol(ws) {
  for (const frame of ws.sent) {
    const allowed = allowedKeys(frame.type);
    assert.ok(allowed.size > 0, `${frame.type} is a protocol message`);
    for (const key of Object.keys(frame)) assert.ok(allowed.has(key), `${frame.type}.${key} is a protocol field`);
    assert.equal(typeof frame.request_id, 'number');
  }
}

test('hello carries the extension credentials and the URL comes from host/port/proto/path', async () => {
  const t = await connected({ autoRegister: false });
  const ws = t.ws();
  assert.equal(ws.url, 'ws://callgate.test:8080/ws');
  const hello = ws.lastOf('hello');
  assert.deepEqual(hello.auth, { mode: 'sip_credentials', extension: '1001', password: 's3cret' });
  assert.equal(hello.protocol, 1);
  assert.match(hello.user_agent, /^sipcall\.js\//);
  assert.deepEqual(t.named('CONNECTED'), [{ localAgent: '1001', resumed: false }]);
  assert.deepEqual(t.named('REGISTERED'), []);
  assertFramesMatchProtocol(ws);
});

test('gatewayUrl follows the seed: wss for proto, default ports omitted, IPv6 bracketed', () => {
  assert.equal(gatewayUrl({ host: 'pbx.example', port: 443, proto: true }), 'wss://pbx.example/ws');
  assert.equal(gatewayUrl({ host: 'pbx.example', port: '8443', proto: true, path: 'phone' }), 'wss://pbx.example:8443/phone');
  assert.equal(gatewayUrl({ host: '::1', port: 8080 }), 'ws://[::1]:8080/ws');
  assert.equal(gatewayUrl({ url: 'ws://x/y', host: 'ignored' }), 'ws://x/y');
});

test('autoRegister registers after welcome; registered and registration_failed map to seed events', async () => {
  const t = await connected({ autoRegister: true });
  const ws = t.ws();
  ws.ack('register');
  ws.serverSend(serverFixture('registered'));
  await settle();
  assert.deepEqual(t.named('REGISTERED'), [{ localAgent: '1001', expires: 300 }]);
  assert.equal(t.sip.getState().registered, true);

  ws.serverSend(serverFixture('registration_failed'));
  await settle();
  const [failed] = t.named('REGISTER_FAILED');
  assert.equal(failed.code, 403);
  assert.equal(failed.retrying, false);
  assert.match(failed.msg, /Registration failed: 403 Forbidden/);
  assertFramesMatchProtocol(ws);
});

test('a gateway without registration answers unknown_type: REGISTER_FAILED says to upgrade', async () => {
  const t = await connected({ autoRegister: true });
  t.ws().refuse('register', 'unknown_type');
  await settle();
  const [failed] = t.named('REGISTER_FAILED');
  assert.match(failed.msg, /does not support this request/);
});

test('unregister sends unregister and unregistered gives UNREGISTERED', async () => {
  const t = await connected({ autoRegister: true });
  t.ws().ack('register');
  t.ws().serverSend(serverFixture('registered'));
  await settle();
  t.sip.unregister();
  await settle();
  t.ws().ack('unregister');
  t.ws().serverSend(serverFixture('unregistered'));
  await settle();
  assert.deepEqual(t.named('UNREGISTERED'), [{ localAgent: '1001', reason: 'requested' }]);
  t.sip.unregister();
  assert.match(t.named('ERROR').pop().msg, /Not registered/);
});

test('outbound call: offer, call_uuid and X- headers out; OUTGOING_CALL, RINGING, IN_CALL, CALL_END in', async () => {
  const t = await connected();
  const uuid = t.sip.call('echo', { businessId: 'order-4711', outNumber: '02812345678' });
  assert.match(uuid, /^[0-9a-f-]{36}$/);
  await settle();
  const ws = t.ws();
  const frame = ws.lastOf('call');
  assert.equal(frame.to, 'echo');
  assert.equal(frame.sdp, 'v=0\r\nfake-offer\r\n');
  assert.equal(frame.call_uuid, uuid);
  assert.deepEqual(frame.headers, { 'X-Business-Id': 'order-4711', 'X-Out-Number': '02812345678' });
  const pc = FakePeerConnection.last();
  assert.equal(pc.tracks.length, 1, 'the microphone track is sent');

  ws.ack('call', { call_id: 'c-1', sdp: 'v=0\r\nanswer\r\n', call_uuid: uuid });
  await settle();
  assert.deepEqual(t.named('OUTGOING_CALL'), [{ direction: 'outbound', otherLegNumber: 'echo', callId: uuid }]);
  assert.deepEqual(pc.remote, { type: 'answer', sdp: 'v=0\r\nanswer\r\n' });

  ws.serverSend(serverFixture('call_ringing', { call_id: 'c-1' }));
  ws.serverSend(serverFixture('call_answered', { call_id: 'c-1' }));
  await settle();
  assert.deepEqual(t.named('RINGING'), [{ callId: uuid, code: 180 }]);
  assert.deepEqual(t.named('IN_CALL'), [{ callId: uuid }]);

  t.sip.hangup();
  await settle();
  assert.equal(ws.lastOf('hangup').call_id, 'c-1');
  ws.ack('hangup');
  ws.serverSend({ type: 'call_ended', call_id: 'c-1', ended_by: 'agent', cause: 'normal_clearing', reason: 'BYE', answered: true });
  await settle();
  const [end] = t.named('CALL_END');
  assert.deepEqual(
    { originator: end.originator, cause: end.cause, code: end.code, answered: end.answered, callId: end.callId },
    { originator: 'local', cause: 'normal_clearing', code: 0, answered: true, callId: uuid },
  );
  assert.equal(end.msg, 'Call ended');
  assert.ok(pc.closed, 'peer connection closed');
  assert.ok(t.mediaDevices.streams[0].tracks.every((track) => track.stopped), 'microphone released');
  assert.equal(t.sip.getState().call, null);
  assertFramesMatchProtocol(ws);
});

test('busy: CALL_END carries 486, the cause, and the localized text in each language', async () => {
  for (const [lang, expected] of [
    ['en', 'The customer is busy (486)'],
    ['vi', 'Khách hàng đang bận'],
    ['zh', '对方忙（486）'],
  ]) {
    const t = await connected({ lang });
    const { uuid, callId } = await placeCall(t, 'busy');
    t.ws().serverSend(serverFixture('call_ended_busy', { call_id: callId }));
    await settle();
    // No `quality` key at all when callgate sent none.
    assert.deepEqual(t.named('CALL_END'), [
      { originator: 'remote', cause: 'busy', code: 486, answered: false, msg: expected, callId: uuid, direction: 'outbound', otherLegNumber: 'busy' },
    ]);
  }
});

test("CALL_END passes callgate's call quality through as sent, next to the cause", async () => {
  const t = await connected();
  const { uuid, callId } = await activeCall(t, '1002');
  const fixture = serverFixture('call_ended', { call_id: callId });
  assert.ok(fixture.quality, 'the call_ended fixture carries quality');
  t.ws().serverSend(fixture);
  await settle();
  assert.deepEqual(t.named('CALL_END'), [
    {
      originator: 'local',
      cause: 'normal_clearing',
      code: 0,
      answered: true,
      quality: fixture.quality,
      msg: 'Call ended',
      callId: uuid,
      direction: 'outbound',
      otherLegNumber: '1002',
    },
  ]);
  const { quality } = t.named('CALL_END')[0];
  assert.deepEqual(Object.keys(quality).sort(), ['mos', 'sip', 'webrtc']);
  assert.deepEqual(Object.keys(quality.webrtc).sort(), ['jitter_ms', 'lost', 'packets', 'rtt_ms']);
  assert.equal(quality.mos, 4.38);
  assert.equal(quality.sip.lost, 0);
});

test('CALL_END has no quality when the call ends in the browser (the connection drops)', async () => {
  const t = await connected();
  await activeCall(t);
  t.ws().serverDrop();
  await settle();
  const [end] = t.named('CALL_END');
  assert.equal(end.cause, 'websocket_closed');
  assert.ok(!('quality' in end));
});

test('a call callgate refuses ends with one CALL_END worded from the error code, without OUTGOING_CALL', async () => {
  const t = await connected();
  t.sip.call('1002');
  await settle();
  t.ws().refuse('call', 'too_many_calls');
  await settle();
  assert.deepEqual(t.named('OUTGOING_CALL'), []);
  const [end] = t.named('CALL_END');
  assert.equal(end.cause, 'too_many_calls');
  assert.equal(end.answered, false);
  assert.match(end.msg, /Agent busy/);
  assert.ok(FakePeerConnection.last().closed);
});

test('misuse emits ERROR with a clear message and never throws', async () => {
  const offline = await connected({}, { connect: false });
  assert.equal(offline.sip.call('echo'), null);
  assert.match(offline.named('ERROR').pop().msg, /Not connected/);

  const t = await connected();
  assert.doesNotThrow(() => t.sip.answer());
  assert.match(t.named('ERROR').pop().msg, /no ringing call/);
  t.sip.hold();
  assert.match(t.named('ERROR').pop().msg, /no answered call/);
  t.sip.hangup();
  assert.match(t.named('ERROR').pop().msg, /no call/);
  t.sip.sendDtmf('1');
  assert.match(t.named('ERROR').pop().msg, /no answered call/);
  t.sip.call('');
  assert.match(t.named('ERROR').pop().msg, /Enter a number/);

  await placeCall(t);
  assert.equal(t.sip.call('1002'), null);
  assert.match(t.named('ERROR').pop().msg, /already in progress/);
  assert.equal(t.ws().sent.filter((m) => m.type === 'call').length, 1, 'the second call was not sent');
  t.sip.hold();
  assert.match(t.named('ERROR').pop().msg, /no answered call/, 'hold before answer is refused locally');
  t.sip.answer();
  assert.match(t.named('ERROR').pop().msg, /no ringing call/, 'an outbound call cannot be answered');
});

test('extraParam values over 100 characters or with line breaks are refused before dialing', async () => {
  const t = await connected();
  assert.equal(t.sip.call('echo', { businessId: 'x'.repeat(101) }), null);
  assert.equal(t.sip.call('echo', { businessId: 'a\r\nVia: evil' }), null);
  assert.equal(t.named('ERROR').length, 2);
  assert.match(t.named('ERROR')[0].msg, /100 characters/);
  assert.deepEqual(extraHeaders({ businessId: 'x'.repeat(100), 'X-Raw': 'v', skip: null }).headers, {
    'X-Business-Id': 'x'.repeat(100),
    'X-Raw': 'v',
  });
  assert.equal(extraHeaders({ 'bad name!': 'v' }).error, 'invalid_header');
});

test('hangup before the microphone is open cancels locally without sending call', async () => {
  const t = await connected();
  const uuid = t.sip.call('echo');
  t.sip.hangup();
  await settle();
  assert.deepEqual(t.ws().sent.filter((m) => m.type === 'call'), []);
  const [end] = t.named('CALL_END');
  assert.equal(end.cause, 'cancelled');
  assert.equal(end.callId, uuid);
  assert.ok(t.mediaDevices.streams[0].tracks[0].stopped);
});

test('hangup after call was sent but before the ack sends hangup as soon as the ack names the call', async () => {
  const t = await connected();
  t.sip.call('echo');
  await settle();
  t.sip.hangup();
  assert.deepEqual(t.ws().sent.filter((m) => m.type === 'hangup'), []);
  t.ws().ack('call', { call_id: 'c-9', sdp: 'v=0\r\n' });
  await settle();
  assert.equal(t.ws().lastOf('hangup').call_id, 'c-9');
});

test('LATENCY_STAT arrives every second in a call with the seed fields, and stops at CALL_END', async () => {
  const t = await connected();
  const { callId } = await activeCall(t);
  const pc = FakePeerConnection.last();
  pc.stats = [
    { id: 'T', type: 'transport', selectedCandidatePairId: 'P' },
    { id: 'P', type: 'candidate-pair', currentRoundTripTime: 0.042, nominated: true, state: 'succeeded' },
    { id: 'I', type: 'inbound-rtp', kind: 'audio', packetsReceived: 50, packetsLost: 0, audioLevel: 0.25 },
    { id: 'O', type: 'outbound-rtp', kind: 'audio', packetsSent: 50 },
    { id: 'R', type: 'remote-inbound-rtp', kind: 'audio', packetsLost: 0, roundTripTime: 0.05, fractionLost: 0 },
    { id: 'M', type: 'media-source', kind: 'audio', audioLevel: 0.5 },
  ];
  await t.clock.advance(1000);
  assert.deepEqual(t.named('LATENCY_STAT'), [
    { latencyTime: 42, upLossRate: 0, downLossRate: 0, upAudioLevel: 0.5, downAudioLevel: 0.25 },
  ]);
  pc.stats[2] = { id: 'I', type: 'inbound-rtp', kind: 'audio', packetsReceived: 95, packetsLost: 5, audioLevel: 0.1 };
  await t.clock.advance(1000);
  assert.equal(t.named('LATENCY_STAT')[1].downLossRate, 0.1, '5 lost of 50 in the last second');
  t.ws().serverSend({ type: 'call_ended', call_id: callId, ended_by: 'remote', cause: 'normal_clearing', reason: 'BYE', answered: true });
  await settle();
  await t.clock.advance(3000);
  assert.equal(t.named('LATENCY_STAT').length, 2);
});

test('incoming call: INCOMING_CALL with caller, headers and UUID; answer applies the offer and sends the answer', async () => {
  const t = await connected();
  const incoming = serverFixture('incoming_call', { headers: { 'X-Customer-Id': '4711', 'X-Call-UUID': 'crm-uuid-1' } });
  t.ws().serverSend(incoming);
  await settle();
  assert.deepEqual(t.named('INCOMING_CALL'), [
    {
      direction: 'inbound',
      otherLegNumber: '+15550100',
      callId: 'crm-uuid-1',
      displayName: 'ACME Support',
      calledNumber: '1001',
      headers: { 'X-Customer-Id': '4711', 'X-Call-UUID': 'crm-uuid-1' },
    },
  ]);
  t.sip.answer();
  await settle();
  const pc = FakePeerConnection.last();
  assert.deepEqual(pc.remote, { type: 'offer', sdp: incoming.sdp });
  const answer = t.ws().lastOf('answer');
  assert.deepEqual({ call_id: answer.call_id, sdp: answer.sdp }, { call_id: incoming.call_id, sdp: 'v=0\r\nfake-answer\r\n' });
  t.ws().ack('answer');
  t.ws().serverSend({ type: 'call_answered', call_id: incoming.call_id });
  await settle();
  assert.deepEqual(t.named('IN_CALL'), [{ callId: 'crm-uuid-1' }]);

  t.ws().serverSend(serverFixture('incoming_call', { call_id: 'c-second' }));
  await settle();
  const reject = t.ws().lastOf('reject');
  assert.deepEqual({ call_id: reject.call_id, reason: reject.reason }, { call_id: 'c-second', reason: 'busy' });
  assert.equal(t.named('INCOMING_CALL').length, 1, 'a second caller is refused busy while in a call');
  assertFramesMatchProtocol(t.ws());
});

test('hangup of a ringing inbound call rejects it; reject() passes the reason', async () => {
  const t = await connected();
  t.ws().serverSend(serverFixture('incoming_call'));
  await settle();
  t.sip.hangup();
  assert.equal(t.ws().lastOf('reject').reason, 'busy');
  t.ws().serverSend({ type: 'call_ended', call_id: 'c-9a0b1c2d', ended_by: 'agent', cause: 'declined', sip_status: 486, reason: 'Busy Here', answered: false });
  await settle();
  t.ws().serverSend(serverFixture('incoming_call', { call_id: 'c-2' }));
  await settle();
  t.sip.reject('decline');
  assert.deepEqual(t.ws().lastOf('reject'), { type: 'reject', call_id: 'c-2', reason: 'decline', request_id: t.ws().lastOf('reject').request_id });
});

test('hold and unhold: requests out, HOLD on call_held, IN_CALL on call_resumed, double hold refused', async () => {
  const t = await connected();
  const { callId, uuid } = await activeCall(t);
  t.sip.hold();
  assert.equal(t.ws().lastOf('hold').call_id, callId);
  t.ws().ack('hold');
  t.ws().serverSend({ type: 'call_held', call_id: callId, by: 'agent' });
  await settle();
  assert.deepEqual(t.named('HOLD'), [{ callId: uuid, by: 'agent' }]);
  t.sip.hold();
  assert.match(t.named('ERROR').pop().msg, /already on hold/);
  t.sip.unhold();
  assert.equal(t.ws().lastOf('unhold').call_id, callId);
  t.ws().serverSend(serverFixture('call_resumed', { call_id: callId }));
  await settle();
  assert.deepEqual(t.named('IN_CALL').pop(), { callId: uuid, resumed: true, by: 'agent' });
  t.sip.unhold();
  assert.match(t.named('ERROR').pop().msg, /not on hold/);
});

test('mute disables the mic track and asks callgate; MUTE/UNMUTE on the acks; a refusal restores the track', async () => {
  const t = await connected();
  const { callId } = await activeCall(t);
  const track = t.mediaDevices.streams[0].tracks[0];
  t.sip.mute();
  assert.equal(track.enabled, false);
  assert.equal(t.ws().lastOf('mute').call_id, callId);
  t.ws().ack('mute');
  await settle();
  assert.equal(t.named('MUTE').length, 1);
  t.sip.unmute();
  t.ws().ack('unmute');
  await settle();
  assert.equal(track.enabled, true);
  assert.equal(t.named('UNMUTE').length, 1);
  t.sip.mute();
  t.ws().refuse('mute', 'invalid_state');
  await settle();
  assert.equal(track.enabled, true);
  assert.match(t.named('ERROR').pop().msg, /does not fit the call state/);
});

test('transfer, DTMF and messages send the documented requests and map the events', async () => {
  const t = await connected();
  const { callId, uuid } = await activeCall(t);
  t.sip.sendDtmf('12a#');
  assert.deepEqual({ ...t.ws().lastOf('dtmf'), request_id: 0 }, { type: 'dtmf', call_id: callId, digits: '12A#', request_id: 0 });
  t.sip.sendDtmf('12x');
  assert.match(t.named('ERROR').pop().msg, /Invalid keys/);

  t.ws().serverSend(serverFixture('dtmf_received', { call_id: callId }));
  t.sip.transfer('1003');
  assert.equal(t.ws().lastOf('transfer').to, '1003');
  t.ws().serverSend(serverFixture('transfer_progress', { call_id: callId }));
  t.ws().serverSend({ type: 'call_ended', call_id: callId, ended_by: 'agent', cause: 'transferred', reason: 'transferred', answered: true });
  await settle();
  assert.deepEqual(t.named('DTMF_RECEIVED'), [{ callId: uuid, digit: '5' }]);
  assert.deepEqual(t.named('TRANSFER_PROGRESS'), [{ callId: uuid, code: 200, done: true }]);
  assert.equal(t.named('CALL_END')[0].cause, 'transferred');
  assert.equal(t.named('CALL_END')[0].msg, 'Call transferred');

  t.sip.sendMessage('1002', 'customer 4711 is on line 2');
  assert.deepEqual({ to: t.ws().lastOf('message').to, text: t.ws().lastOf('message').text }, { to: '1002', text: 'customer 4711 is on line 2' });
  t.ws().serverSend(serverFixture('message_received'));
  await settle();
  assert.deepEqual(t.named('MESSAGE_INCOMING'), ['call me back']);
  assert.deepEqual(t.named('MESSAGE_RECEIVED'), [{ from: '1002', displayName: undefined, text: 'call me back', contentType: 'text/plain;charset=UTF-8' }]);
  assertFramesMatchProtocol(t.ws());
});

test('a dropped socket ends the call, emits DISCONNECTED and RECONNECTING, then reconnects and re-registers', async () => {
  const t = await connected({ autoRegister: true });
  t.ws().ack('register');
  t.ws().serverSend(serverFixture('registered'));
  await settle();
  await activeCall(t);
  const first = t.ws();
  first.serverDrop();
  await settle();
  const end = t.named('CALL_END').pop();
  assert.equal(end.cause, 'websocket_closed');
  assert.equal(end.originator, 'system');
  assert.deepEqual(t.named('RECONNECTING'), [{ attempt: 1, delay: 375 }]);
  assert.equal(t.named('DISCONNECTED').length, 1);
  assert.equal(t.sip.getState().connected, false);

  await t.clock.advance(374);
  assert.equal(FakeWebSocket.all.length, 1, 'no retry before the back-off delay');
  await t.clock.advance(1);
  assert.equal(FakeWebSocket.all.length, 2);
  t.ws().serverDrop();
  await settle();
  assert.deepEqual(t.named('RECONNECTING').pop(), { attempt: 2, delay: 750 });
  assert.equal(t.named('DISCONNECTED').length, 1, 'DISCONNECTED once per outage');
  await t.clock.advance(750);
  t.ws().welcome();
  await settle();
  assert.deepEqual(t.named('RECONNECTED'), [{ attempts: 2, resumed: false }]);
  assert.equal(t.named('CONNECTED').length, 2);
  assert.equal(t.ws().sent.filter((m) => m.type === 'register').length, 1, 're-registers after reconnecting');
});

const KEPT_CALL = (callId, uuid, state = 'answered') => ({
  call_id: callId,
  call_uuid: uuid,
  direction: 'outbound',
  peer: 'echo',
  state,
  held: false,
  remote_held: false,
  muted: false,
});

test('resume: a dropped socket keeps the call, the hello presents the token, the audio is renegotiated', async () => {
  const t = await connected({ autoRegister: true }, { connect: false });
  t.ws().welcome({ resume_token: 'node-a.t1', node: 'node-a' });
  await settle();
  t.ws().ack('register');
  t.ws().serverSend(serverFixture('registered'));
  await settle();
  const { uuid, callId } = await activeCall(t);
  const firstPeer = FakePeerConnection.last();
  t.ws().serverDrop();
  await settle();
  assert.deepEqual(t.named('CALL_END'), [], 'the call is kept while callgate keeps it');
  assert.equal(firstPeer.closed, false, 'its audio may go on');
  assert.equal(t.named('RECONNECTING').length, 1);
  t.sip.hold();
  assert.equal(t.ws().sent.filter((m) => m.type === 'hold').length, 0, 'no requests while offline');

  await t.clock.advance(375);
  assert.equal(t.ws().url, 'ws://callgate.test:8080/ws?node=node-a', 'back to the node that keeps the call');
  t.ws().serverOpen();
  await settle();
  assert.equal(t.ws().lastOf('hello').resume_token, 'node-a.t1');
  t.ws().welcome({ resume_token: 'node-a.t2', node: 'node-a', resumed: { registered: true, calls: [KEPT_CALL(callId, uuid)] } });
  await settle();
  assert.deepEqual(t.named('RECONNECTED'), [{ attempts: 1, resumed: true }]);
  assert.deepEqual(t.named('REGISTERED').pop(), { localAgent: '1001', resumed: true });
  assert.equal(t.ws().sent.filter((m) => m.type === 'register').length, 0, 'the registration survived');
  const renegotiate = t.ws().lastOf('renegotiate');
  assert.equal(renegotiate.call_id, callId);
  assert.match(renegotiate.sdp, /fake-offer/);
  assert.equal(firstPeer.closed, true, 'the old peer connection is replaced');
  t.ws().ack('renegotiate', { call_id: callId, sdp: 'v=0\r\nanswer-2\r\n' });
  await settle();
  assert.equal(FakePeerConnection.last().remote.sdp, 'v=0\r\nanswer-2\r\n');
  assert.deepEqual(t.named('CALL_END'), []);
  assert.equal(t.env.sessionStorage.getItem('callgate.resume.1001'), 'node-a.t2', 'the rotated token is kept');
  assert.equal(t.sip.getState().call.callId, uuid);
  assertFramesMatchProtocol(t.ws());
});

test('resume: a session callgate did not keep ends the call with websocket_closed', async () => {
  const t = await connected({}, { connect: false });
  t.ws().welcome({ resume_token: 'node-a.t1', node: 'node-a' });
  await settle();
  const { uuid } = await activeCall(t);
  t.ws().serverDrop();
  await settle();
  await t.clock.advance(375);
  t.ws().welcome({ resume_token: 'node-a.t3', node: 'node-a' });
  await settle();
  const end = t.named('CALL_END').pop();
  assert.deepEqual([end.cause, end.originator, end.callId], ['websocket_closed', 'system', uuid]);
  assert.deepEqual(t.named('RECONNECTED'), [{ attempts: 1, resumed: false }]);
});

test('resume: hanging up while offline is sent once the session is back', async () => {
  const t = await connected({}, { connect: false });
  t.ws().welcome({ resume_token: 'node-a.t1' });
  await settle();
  const { uuid, callId } = await activeCall(t);
  t.ws().serverDrop();
  await settle();
  t.sip.hangup();
  await t.clock.advance(375);
  t.ws().welcome({ resume_token: 'node-a.t2', resumed: { registered: false, calls: [KEPT_CALL(callId, uuid)] } });
  await settle();
  assert.equal(t.ws().lastOf('hangup').call_id, callId);
  assert.equal(t.ws().sent.filter((m) => m.type === 'renegotiate').length, 0);
});

test('resume after a reload: the stored token resumes, the kept call is restored and renegotiated; cleanSDK forgets it', async () => {
  const first = await connected({}, { connect: false });
  first.ws().welcome({ resume_token: 'node-a.t1', node: 'node-a' });
  await settle();
  const { uuid, callId } = await activeCall(first);
  const storage = first.env.sessionStorage;
  // The page reloads: a new SipCall in the same tab (same sessionStorage).
  const t = await connected({ env: { sessionStorage: storage } }, { connect: false });
  t.ws().serverOpen();
  await settle();
  assert.equal(t.ws().lastOf('hello').resume_token, 'node-a.t1');
  t.ws().welcome({ resume_token: 'node-a.t2', resumed: { registered: false, calls: [KEPT_CALL(callId, uuid)] } });
  await settle();
  assert.deepEqual(t.named('CONNECTED'), [{ localAgent: '1001', resumed: true }]);
  assert.deepEqual(t.named('CALL_RESTORED'), [
    { callId: uuid, direction: 'outbound', otherLegNumber: 'echo', answered: true, held: false, muted: false },
  ]);
  assert.equal(t.ws().lastOf('renegotiate').call_id, callId);
  t.ws().ack('renegotiate', { call_id: callId, sdp: 'v=0\r\nanswer-2\r\n' });
  await settle();
  t.sip.hold();
  assert.equal(t.ws().lastOf('hold').call_id, callId, 'the restored call is the current call');
  t.sip.cleanSDK();
  assert.equal(storage.getItem('callgate.resume.1001'), null);
});

test('resume: resume:false sends no token and stores none', async () => {
  const t = await connected({ resume: false }, { connect: false });
  t.ws().welcome({ resume_token: 'node-a.t1' });
  await settle();
  assert.equal(t.env.sessionStorage.getItem('callgate.resume.1001'), null);
  await activeCall(t);
  t.ws().serverDrop();
  await settle();
  assert.equal(t.named('CALL_END').pop().cause, 'websocket_closed');
  await t.clock.advance(375);
  t.ws().serverOpen();
  await settle();
  assert.equal(t.ws().lastOf('hello').resume_token, undefined);
});

test('back-off grows exponentially, is capped, and jitters within [half, full] of the step', () => {
  const opts = (random) => ({ base: 500, max: 30000, random: () => random });
  assert.deepEqual([1, 2, 3, 4].map((n) => backoffDelay(n, opts(1))), [500, 1000, 2000, 4000]);
  assert.deepEqual([1, 2, 3].map((n) => backoffDelay(n, opts(0))), [250, 500, 1000]);
  assert.equal(backoffDelay(20, opts(1)), 30000);
  assert.equal(backoffDelay(20, opts(0)), 15000);
});

test('a keepalive ping that gets no reply replaces the socket', async () => {
  const t = await connected({ pingInterval: 5000, requestTimeout: 2000 });
  await t.clock.advance(5000);
  assert.equal(t.named('RECONNECTING').length, 0, 'an answered ping keeps the socket');
  t.ws().answerPings = false;
  await t.clock.advance(5000);
  const ping = t.ws().lastOf('ping');
  assert.equal(typeof ping.request_id, 'number');
  await t.clock.advance(2000);
  assert.ok(FakeWebSocket.all[0].closed, 'the silent socket is closed');
  assert.equal(t.named('RECONNECTING').length, 1);
  await t.clock.advance(1000);
  assert.equal(FakeWebSocket.all.length, 2);
});

test('a slow reply to an ordinary request rejects it without dropping the socket; message waits out SIP Timer F', async () => {
  const t = await connected({ requestTimeout: 2000 });
  await activeCall(t);
  t.sip.hold();
  await t.clock.advance(2000);
  assert.match(t.named('ERROR').pop().msg, /did not answer in time/);
  assert.equal(t.named('RECONNECTING').length, 0);
  t.sip.sendMessage('1002', 'hi');
  await t.clock.advance(32000);
  assert.equal(t.named('ERROR').length, 1, 'a MESSAGE may take the PBX 32 s');
  t.ws().refuse('message', 'pbx_refused', 'PBX answered 404');
  await settle();
  assert.match(t.named('ERROR').pop().msg, /refused the request/);
});

test('a refused hello is final: ERROR with the reason, DISCONNECTED, and no reconnect loop', async () => {
  const t = await connected({}, { connect: false });
  const ws = t.ws();
  ws.serverOpen();
  ws.refuse('hello', 'auth_failed');
  await settle();
  assert.match(t.named('ERROR').pop().msg, /Login failed/);
  assert.equal(t.named('DISCONNECTED').length, 1);
  await t.clock.advance(120000);
  assert.equal(FakeWebSocket.all.length, 1);
});

test('token auth is sent as the hello auth and a v1 gateway refusal says token login is unsupported', async () => {
  const t = await connected({ extPwd: undefined, token: 'jwt-abc' }, { connect: false });
  const ws = t.ws();
  ws.serverOpen();
  assert.deepEqual(ws.lastOf('hello').auth, { mode: 'token', extension: '1001', token: 'jwt-abc' });
  ws.refuse('hello', 'invalid_message', 'unknown variant `token`, expected `sip_credentials`');
  await settle();
  assert.match(t.named('ERROR').pop().msg, /does not accept token login/);
});

test('token_expired is surfaced with its code and setToken logs in again with the fresh token', async () => {
  const t = await connected({ extPwd: undefined, token: 'jwt-old' }, { connect: false });
  const ws = t.ws();
  ws.serverOpen();
  ws.refuse('hello', 'token_expired', 'the token has expired');
  await settle();
  const error = t.named('ERROR').pop();
  assert.equal(error.code, 'token_expired');
  assert.match(error.msg, /token has expired/);
  await t.clock.advance(120000);
  assert.equal(FakeWebSocket.all.length, 1, 'no reconnect loop with an expired token');
  t.sip.setToken('jwt-new');
  assert.equal(FakeWebSocket.all.length, 2, 'setToken connects again');
  const next = t.ws();
  next.serverOpen();
  assert.deepEqual(next.lastOf('hello').auth, { mode: 'token', extension: '1001', token: 'jwt-new' });
});

test('a forged token reads as an invalid token; a lookup failure is retried with back-off', async () => {
  const t = await connected({ extPwd: undefined, token: 'jwt-abc' }, { connect: false });
  const ws = t.ws();
  ws.serverOpen();
  ws.refuse('hello', 'credentials_unavailable', 'the SIP credential lookup failed');
  await settle();
  await t.clock.advance(60000);
  assert.ok(FakeWebSocket.all.length >= 2, 'a passing refusal is retried');
  const next = t.ws();
  next.serverOpen();
  next.refuse('hello', 'auth_failed', 'the token signature is invalid');
  await settle();
  assert.match(t.named('ERROR').pop().msg, /login token is invalid/);
});

test('cleanSDK closes the socket for good, ends the call once and silences every listener', async () => {
  const t = await connected();
  await activeCall(t);
  const ws = t.ws();
  t.sip.cleanSDK();
  assert.deepEqual(ws.closed, { code: 1000, reason: 'stopped' });
  assert.equal(t.named('CALL_END').length, 1);
  const before = t.events.length;
  assert.equal(t.sip.call('echo'), null);
  await t.clock.advance(60000);
  assert.equal(FakeWebSocket.all.length, 1, 'no reconnect after cleanSDK');
  assert.equal(t.events.length, before, 'no event after cleanSDK');
});

test('an incomplete config is reported as ERROR and opens no socket', async () => {
  const t = await connected({ extNo: '' }, { connect: false });
  assert.equal(FakeWebSocket.all.length, 0);
  assert.match(t.named('ERROR')[0].msg, /Incomplete configuration/);
});

test('a denied microphone gives MIC_ERROR and ends the call attempt with CALL_END', async () => {
  const t = await connected({ lang: 'zh' });
  t.mediaDevices.failWith = 'NotAllowedError';
  const uuid = t.sip.call('echo');
  await settle();
  assert.deepEqual(t.named('MIC_ERROR'), [{ msg: '麦克风权限被禁用，请设置允许使用麦克风' }]);
  const [end] = t.named('CALL_END');
  assert.equal(end.callId, uuid);
  assert.equal(end.cause, 'mic_error');
  assert.deepEqual(t.ws().sent.filter((m) => m.type === 'call'), []);
  t.mediaDevices.failWith = 'NotFoundError';
  assert.equal(await t.sip.micCheck(), false);
  assert.match(t.named('MIC_ERROR').pop().msg, /未检测到麦克风/);
  t.mediaDevices.failWith = null;
  assert.equal(await t.sip.micCheck(), true);
});

test('listeners: stateEventListener, on("event"), on(name) and off; a throwing listener harms no one', async () => {
  const seen = [];
  const t = await connected({ stateEventListener: (event) => seen.push(`state:${event}`) }, { connect: false });
  const named = (data) => seen.push(`named:${data.localAgent}`);
  t.sip.on('CONNECTED', () => {
    throw new Error('listener bug');
  });
  t.sip.on('CONNECTED', named);
  const originalError = console.error;
  console.error = () => {};
  try {
    t.ws().welcome();
    await settle();
    t.sip.off('CONNECTED', named);
    t.ws().serverDrop();
    await t.clock.advance(1000);
    t.ws().welcome();
    await settle();
  } finally {
    console.error = originalError;
  }
  assert.deepEqual(seen.filter((s) => s === 'state:CONNECTED' || s.startsWith('named')), [
    'state:CONNECTED',
    'named:1001',
    'state:CONNECTED',
  ]);
  assert.ok(t.names().includes('RECONNECTED'));
});

test('call UUIDs are v4 even without crypto.randomUUID (plain-http pages)', () => {
  const uuid = makeUuid({ randomUUID: null, getRandomValues: null, random: () => 0.999 });
  assert.match(uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test('static helpers: getMediaDeviceInfo lists nothing without mediaDevices; AutoCallTask is attached', async () => {
  assert.deepEqual(await SipCall.getMediaDeviceInfo(), []);
  assert.equal(typeof SipCall.AutoCallTask, 'function');
  const result = await SipCall.testMicrophone(() => {}, { lang: 'vi', env: { mediaDevices: undefined } });
  assert.match(result.error, /micro/);
});

test('withResumeNode adds the node of the token once, keeps other parameters, ignores odd tokens', () => {
  assert.equal(withResumeNode('wss://gw.example/ws', 'node-a.abc'), 'wss://gw.example/ws?node=node-a');
  assert.equal(withResumeNode('wss://gw.example/ws?tenant=7', 'node-b.abc'), 'wss://gw.example/ws?tenant=7&node=node-b');
  assert.equal(withResumeNode('wss://gw.example/ws?node=old', 'node-c.abc'), 'wss://gw.example/ws?node=node-c');
  assert.equal(withResumeNode('wss://gw.example/ws', null), 'wss://gw.example/ws');
  assert.equal(withResumeNode('wss://gw.example/ws', '<script>.x'), 'wss://gw.example/ws');
});

test('resume: a session taken over by another connection (4001) ends here without reconnecting', async () => {
  const t = await connected({}, { connect: false });
  t.ws().welcome({ resume_token: 'node-a.t1' });
  await settle();
  const { uuid } = await activeCall(t);
  t.ws().serverClose(4001, 'replaced by a resumed connection');
  await settle();
  const end = t.named('CALL_END').pop();
  assert.deepEqual([end.cause, end.callId], ['session_replaced', uuid]);
  assert.match(end.msg, /another page or device/);
  assert.equal(t.named('ERROR').pop().code, 'session_replaced');
  assert.equal(t.named('RECONNECTING').length, 0);
  await t.clock.advance(60000);
  assert.equal(FakeWebSocket.all.length, 1, 'no reconnect');
  assert.equal(t.env.sessionStorage.getItem('callgate.resume.1001'), null);
});
