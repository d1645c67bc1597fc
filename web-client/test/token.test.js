// Token sessions in the SDK against a fake callgate: setToken on a live session sends
// refresh_token, callgate's token_expiring makes the SDK ask the app's getToken, token_expired
// and the 4002 close end the session without a resume, and getToken supplies the token of
// every (re)connect.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { FakeWebSocket, settle } from '../test-support/fakes.js';
import { connected, activeCall } from '../test-support/helpers.js';

const TOKEN_CONFIG = { extPwd: undefined, token: 'jwt-1' };

/** Answers the last refresh_token with token_refreshed. */
function refreshed(ws, expiresAt) {
  ws.serverSend({ type: 'token_refreshed', request_id: ws.lastOf('refresh_token').request_id, expires_at: expiresAt });
}

test('setToken on a live session sends refresh_token; TOKEN_REFRESHED or ERROR with the code', async () => {
  const t = await connected(TOKEN_CONFIG, { connect: false });
  t.ws().welcome({ token_expires_at: 1900000000 });
  await settle();
  assert.deepEqual(t.named('CONNECTED'), [{ localAgent: '1001', resumed: false, tokenExpiresAt: 1900000000 }]);

  const ok = t.sip.setToken('jwt-2');
  await settle();
  assert.deepEqual(
    { ...t.ws().lastOf('refresh_token'), request_id: 0 },
    { type: 'refresh_token', token: 'jwt-2', request_id: 0 },
  );
  refreshed(t.ws(), 1900000300);
  assert.equal(await ok, true);
  assert.deepEqual(t.named('TOKEN_REFRESHED'), [{ expiresAt: 1900000300 }]);
  assert.equal(FakeWebSocket.all.length, 1, 'no reconnect for a refresh');

  const mismatch = t.sip.setToken('jwt-of-1002');
  await settle();
  t.ws().refuse('refresh_token', 'token_mismatch', "the token's subject is not this session's extension");
  assert.equal(await mismatch, false);
  const error = t.named('ERROR').pop();
  assert.equal(error.code, 'token_mismatch');
  assert.match(error.msg, /another extension/);
  assert.equal(t.sip.getState().connected, true, 'the session goes on with its old token');
});

test('a password session never sends refresh_token', async () => {
  const t = await connected();
  assert.equal(await t.sip.setToken('jwt-x'), false);
  assert.equal(t.ws().sent.filter((m) => m.type === 'refresh_token').length, 0);
});

test('token_expiring: TOKEN_EXPIRING, then getToken is asked and its token is sent as refresh_token', async () => {
  let asked = 0;
  const t = await connected({ ...TOKEN_CONFIG, getToken: async () => `jwt-fresh-${++asked}` }, { connect: false });
  t.ws().welcome({ token_expires_at: 1900000000 });
  await settle();
  t.ws().serverSend({ type: 'token_expiring', expires_at: 1900000000 });
  await settle();
  assert.deepEqual(t.named('TOKEN_EXPIRING'), [{ expiresAt: 1900000000 }]);
  assert.equal(asked, 1);
  assert.equal(t.ws().lastOf('refresh_token').token, 'jwt-fresh-1');
  refreshed(t.ws(), 1900000300);
  await settle();
  assert.deepEqual(t.named('TOKEN_REFRESHED'), [{ expiresAt: 1900000300 }]);
});

test('a failing getToken is an ERROR token_fetch_failed and the session goes on', async () => {
  const t = await connected(
    {
      ...TOKEN_CONFIG,
      getToken: async () => {
        throw new Error('CRM down');
      },
    },
    { connect: false },
  );
  t.ws().welcome({ token_expires_at: 1900000000 });
  await settle();
  t.ws().serverSend({ type: 'token_expiring', expires_at: 1900000000 });
  await settle();
  assert.equal(t.named('ERROR').pop().code, 'token_fetch_failed');
  assert.equal(t.ws().sent.filter((m) => m.type === 'refresh_token').length, 0);
  assert.equal(t.sip.getState().connected, true);
});

test('token_expired: TOKEN_EXPIRED, the call goes on; the 4002 close ends the session without a resume', async () => {
  const t = await connected(TOKEN_CONFIG, { connect: false });
  t.ws().welcome({ resume_token: 'node-a.t1', token_expires_at: 1900000000 });
  await settle();
  const { callId } = await activeCall(t);
  t.ws().serverSend({ type: 'token_expired', expires_at: 1900000000, active_calls: 1 });
  await settle();
  assert.deepEqual(t.named('TOKEN_EXPIRED'), [{ expiresAt: 1900000000, activeCalls: 1 }]);
  assert.equal(t.named('CALL_END').length, 0, 'the call is not cut');

  t.ws().serverSend({ type: 'call_ended', call_id: callId, ended_by: 'remote', cause: 'normal_clearing', reason: 'bye', answered: true });
  t.ws().serverClose(4002, 'token expired');
  await settle();
  assert.equal(t.named('CALL_END').length, 1);
  assert.equal(t.named('ERROR').pop().code, 'token_expired');
  assert.deepEqual(t.named('DISCONNECTED').pop(), { code: 4002, reason: 'token_expired' });
  assert.equal(t.env.sessionStorage.getItem('callgate.resume.1001'), null, 'nothing left to resume');
  await t.clock.advance(60000);
  assert.equal(FakeWebSocket.all.length, 1, 'no reconnect loop without a fresh token');
  t.sip.setToken('jwt-2');
  assert.equal(FakeWebSocket.all.length, 2, 'setToken logs in again');
  t.ws().serverOpen();
  const hello = t.ws().lastOf('hello');
  assert.equal(hello.auth.token, 'jwt-2');
  assert.equal(hello.resume_token, undefined);
});

test('with getToken the 4002 close logs in again with a fresh token, once', async () => {
  let asked = 0;
  const t = await connected({ ...TOKEN_CONFIG, getToken: async () => `jwt-fresh-${++asked}` }, { connect: false });
  t.ws().welcome({ resume_token: 'node-a.t1', token_expires_at: 1900000000 });
  await settle();
  t.ws().serverClose(4002, 'token expired');
  await settle();
  assert.equal(asked, 1);
  assert.equal(FakeWebSocket.all.length, 2, 'a new session is opened');
  t.ws().serverOpen();
  const hello = t.ws().lastOf('hello');
  assert.equal(hello.auth.token, 'jwt-fresh-1');
  assert.equal(hello.resume_token, undefined);
  // The CRM hands out a stale token: refused again, now final.
  t.ws().refuse('hello', 'token_expired');
  await settle();
  assert.equal(t.named('ERROR').pop().code, 'token_expired');
  await t.clock.advance(60000);
  assert.equal(FakeWebSocket.all.length, 2, 'no loop');
});

test('getToken supplies the first token and a fresh one before every reconnect', async () => {
  let asked = 0;
  const t = await connected({ extPwd: undefined, getToken: async () => `jwt-${++asked}` }, { connect: false });
  await settle();
  t.ws().serverOpen();
  assert.equal(t.ws().lastOf('hello').auth.token, 'jwt-1');
  t.ws().welcome({ resume_token: 'node-a.t1' });
  await settle();
  t.ws().serverDrop();
  await settle();
  await t.clock.advance(60000);
  assert.equal(FakeWebSocket.all.length, 2);
  t.ws().serverOpen();
  const hello = t.ws().lastOf('hello');
  assert.equal(hello.auth.token, 'jwt-2', 'the reconnect asked for a fresh token');
  assert.equal(hello.resume_token, 'node-a.t1', 'and still resumes');
});

test('single-use tokens: a token_replayed hello is retried once with a fresh token from getToken', async () => {
  let asked = 0;
  const t = await connected({ ...TOKEN_CONFIG, getToken: async () => `jwt-fresh-${++asked}` }, { connect: false });
  t.ws().serverOpen();
  t.ws().refuse('hello', 'token_replayed', 'this token was used before');
  await settle();
  assert.equal(asked, 1);
  assert.equal(FakeWebSocket.all.length, 2);
  t.ws().welcome();
  await settle();
  assert.equal(t.ws().lastOf('hello').auth.token, 'jwt-fresh-1');
  assert.equal(t.sip.getState().connected, true);
});

test('getToken failing before the first login retries with back-off instead of sending no token', async () => {
  let calls = 0;
  const t = await connected(
    {
      extPwd: undefined,
      getToken: async () => {
        calls += 1;
        if (calls === 1) throw new Error('CRM down');
        return 'jwt-late';
      },
    },
    { connect: false },
  );
  await settle();
  assert.equal(FakeWebSocket.all.length, 0, 'no socket without a token');
  assert.equal(t.named('ERROR').pop().code, 'token_fetch_failed');
  assert.equal(t.named('RECONNECTING').length, 1);
  await t.clock.advance(60000);
  assert.equal(FakeWebSocket.all.length, 1);
  t.ws().serverOpen();
  assert.equal(t.ws().lastOf('hello').auth.token, 'jwt-late');
});
