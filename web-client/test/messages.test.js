// The one message table: every callgate error code and call_ended cause has words in zh, en and
// vi, the seed's outbound error table is covered with its Vietnamese wording, and lookups pick
// the most specific identifier.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { CAUSE_KEYS, ERROR_CODE_KEYS, LOCAL_ERROR_KEYS, LANGUAGES, allKeys, describe, messageKey, pickLanguage, text } from '../src/messages.js';
import { repoRoot } from '../test-support/helpers.js';

/** ErrorCode literals from the declarations generated from the Rust enum. */
function errorCodesFromProtocol() {
  const dts = readFileSync(path.join(repoRoot, 'web-client', 'src', 'protocol.d.ts'), 'utf8');
  const block = dts.split('export type ErrorCode =')[1].split(';')[0];
  return [...block.matchAll(/"([a-z_]+)"/g)].map((m) => m[1]);
}

/** The cause column of docs/protocol.md's call_ended table. */
function causesFromDocs() {
  const doc = readFileSync(path.join(repoRoot, 'docs', 'protocol.md'), 'utf8');
  const table = doc.split('| cause | meaning |')[1].split('\n\n')[0];
  return [...table.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]);
}

test('every callgate error code has an entry', () => {
  const codes = errorCodesFromProtocol();
  assert.ok(codes.length >= 20, `found ${codes.length} codes`);
  assert.deepEqual(codes.filter((c) => !ERROR_CODE_KEYS[c]), []);
  assert.deepEqual(Object.keys(ERROR_CODE_KEYS).filter((c) => !codes.includes(c)), [], 'no stale codes');
});

test('every documented call_ended cause has an entry', () => {
  const causes = causesFromDocs();
  assert.ok(causes.length >= 20, `found ${causes.length} causes`);
  assert.deepEqual(causes.filter((c) => !CAUSE_KEYS[c]), []);
});

test('every entry is worded in zh, en and vi, and every mapping names an entry', () => {
  const keys = allKeys();
  for (const key of keys) {
    for (const lang of LANGUAGES) assert.ok(text(key, lang).length > 0, `${key}.${lang}`);
    assert.notEqual(text(key, 'zh'), text(key, 'en'), `${key} is translated to zh`);
  }
  for (const key of [...Object.values(CAUSE_KEYS), ...Object.values(ERROR_CODE_KEYS), ...Object.values(LOCAL_ERROR_KEYS)]) {
    assert.ok(keys.includes(key), `${key} exists`);
  }
});

test("the seed's outbound error table, with its Vietnamese wording", () => {
  const vi = (failure) => describe(failure, 'vi');
  assert.equal(vi({ sipStatus: 404 }), 'Không kết nối được đến số thuê bao');
  assert.equal(vi({ sipStatus: 486, cause: 'busy' }), 'Khách hàng đang bận');
  assert.equal(vi({ sipStatus: 408, cause: 'timeout' }), 'Khách hàng không nghe máy hoặc có lỗi xảy ra');
  assert.equal(vi({ sipStatus: 403, cause: 'forbidden' }), 'Đầu số này chưa được thanh toán cước');
  assert.equal(vi({ sipStatus: 487 }), 'Khách hàng không nghe máy');
  assert.equal(vi({ sipStatus: 480, cause: 'unavailable' }), 'Thuê bao khách hàng tạm thời không liên lạc được');
  assert.equal(vi({ sipStatus: 499, cause: 'sip_error' }), 'Có lỗi xảy ra');
  assert.match(vi({ cause: 'media_failed' }), /^Không thể kết nối được đến thiết bị nghe gọi của tư vấn viên/);
  assert.match(vi({ errorCode: 'too_many_calls' }), /Tư vấn viên đang bận/);
  assert.equal(vi({ cause: 'auth_failed', sipStatus: 407 }), 'Không có quyền gọi ra. Liên hệ Admin để cấu hình');
});

test('lookups prefer the error code, then the SIP status, then the cause', () => {
  assert.equal(messageKey({ errorCode: 'too_many_calls', sipStatus: 486 }), 'agent_busy');
  assert.equal(messageKey({ sipStatus: 404, cause: 'sip_error' }), 'sip_404');
  assert.equal(messageKey({ cause: 'no_answer' }), 'sip_487');
  assert.equal(messageKey({ sipStatus: 502, cause: 'server_error' }), 'sip_5xx');
  assert.equal(messageKey({ sipStatus: 599 }), 'sip_5xx');
  assert.equal(messageKey({ cause: 'no_such_cause' }), 'other');
  assert.equal(messageKey({ cause: 'cancelled', sipStatus: 487, endedBy: 'agent' }), 'cancelled', "the agent's own cancel");
  assert.equal(messageKey({ cause: 'cancelled', sipStatus: 487, endedBy: 'remote' }), 'sip_487');
  assert.equal(messageKey({ cause: 'normal_clearing', sipStatus: 200 }), 'normal_clearing');
  assert.equal(text('no_such_key', 'vi'), 'Có lỗi xảy ra');
});

test('the bar\'s own words exist in zh, en and vi', async () => {
  const { uiKeys, uiEntry } = await import('../bar/i18n.js');
  for (const key of uiKeys()) {
    for (const lang of LANGUAGES) assert.ok(uiEntry(key)[lang], `${key}.${lang}`);
  }
});

test('language picking: configured, then browser locale, then English', () => {
  assert.equal(pickLanguage('vi', 'zh-CN'), 'vi');
  assert.equal(pickLanguage(undefined, 'zh-CN'), 'zh');
  assert.equal(pickLanguage('fr', 'de-DE'), 'en');
  assert.equal(pickLanguage('VI-vn'), 'vi');
});
