// The hand-written declarations match the code: every SipCall/AutoCallTask method and every
// event declared exists in the JavaScript and the other way round, and the declarations plus a
// seed-style usage file type-check with `tsc --strict` (the protocol types are generated from
// Rust and checked there, signaling/tests/it/typescript.rs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import SipCall, { AutoCallTask, EVENTS } from '../src/sipcall.js';
import * as softphone from '../bar/softphone.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dts = readFileSync(path.join(root, 'src', 'sipcall.d.ts'), 'utf8');

/** Method names declared in `class NAME { … }` (instance or static). */
function declaredMethods(className) {
  const body = dts.split(new RegExp(`class ${className}\\b[^{]*\\{`))[1].split(/\n\}/)[0];
  const instance = new Set();
  const statics = new Set();
  for (const m of body.matchAll(/^ {2}(static\s+)?([A-Za-z]\w*)(<[^>]*>)?\(/gm)) if (m[2] !== 'constructor') (m[1] ? statics : instance).add(m[2]);
  return { instance, statics };
}

function ownMethods(proto) {
  return new Set(
    Object.getOwnPropertyNames(proto).filter(
      (n) => n !== 'constructor' && typeof proto[n] === 'function' && !/^(on[A-Z]|emit$|misuse$|usable$|activeCall$|request|callRequest|createAudio|newCall|peerFor|placeCall|answerCall|sendHangup|finish$|startStats$|setStatus$|endTask$|pauseTask$|snapshot$|report$|loadResumeToken$|storeResumeToken$|restoreCalls$|renegotiate$)/.test(n),
    ),
  );
}

test('SipCall: declared methods are the public methods', () => {
  const { instance, statics } = declaredMethods('SipCall');
  assert.deepEqual([...instance].sort(), [...ownMethods(SipCall.prototype)].sort());
  assert.deepEqual([...statics].sort(), ['getMediaDeviceInfo', 'testMicrophone']);
  for (const name of statics) assert.equal(typeof SipCall[name], 'function');
});

test('AutoCallTask: declared methods are the public methods', () => {
  const { instance } = declaredMethods('AutoCallTask');
  assert.deepEqual([...instance].sort(), [...ownMethods(AutoCallTask.prototype)].sort());
});

test('every emitted event is declared in SipCallEvents and the other way round', () => {
  const block = dts.split('export interface SipCallEvents {')[1].split('\n}')[0];
  const declared = [...block.matchAll(/^ {2}([A-Z_]+):/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(EVENTS).sort());
});

test('softphone exports match bar/softphone.d.ts', () => {
  const bar = readFileSync(path.join(root, 'bar', 'softphone.d.ts'), 'utf8');
  const declared = [...bar.matchAll(/^export (?:function|const|class) (\w+)/gm)].map((m) => m[1]);
  declared.push(...[...bar.matchAll(/^export \{ (\w+) \}/gm)].map((m) => m[1]));
  assert.deepEqual(declared.sort(), Object.keys(softphone).sort());
});

test('the declarations and a seed-style usage type-check with tsc --strict', () => {
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const run = spawnSync(
    process.execPath,
    [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'es2022', '--moduleResolution', 'bundler', '--lib', 'es2022,dom', '--skipLibCheck', 'false', 'test/types/usage.ts'],
    { cwd: root, encoding: 'utf8' },
  );
  assert.equal(run.error, undefined, `tsc missing: run npm ci in web-client (${run.error})`);
  assert.equal(run.status, 0, run.stdout + run.stderr);
});
