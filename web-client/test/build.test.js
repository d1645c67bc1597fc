// The committed bundles callgate serves (include_str! in gateway/src/http.rs) are exactly what
// build.mjs makes from the sources, they load in both forms, and package.json points at files
// that exist.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { outputs } from '../build.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('dist/ is up to date with the sources (run `node web-client/build.mjs` after editing src/ or bar/)', () => {
  for (const { file, text } of outputs()) {
    assert.ok(existsSync(file), `${path.relative(root, file)} exists`);
    assert.ok(readFileSync(file, 'utf8') === text, `${path.relative(root, file)} is stale: run node web-client/build.mjs`);
  }
});

test('the classic scripts define their globals without a module system', () => {
  const context = vm.createContext({ console });
  vm.runInContext(readFileSync(path.join(root, 'dist', 'sipcall.js'), 'utf8'), context);
  assert.equal(typeof context.SipCall, 'function');
  assert.equal(typeof context.SipCall.AutoCallTask, 'function');
  assert.equal(context.SipCall.EVENTS.CALL_END, 'CALL_END');
  const bar = vm.createContext({ console });
  vm.runInContext(readFileSync(path.join(root, 'dist', 'softphone.js'), 'utf8'), bar);
  assert.equal(typeof bar.CallgateSoftphone.mount, 'function');
  assert.equal(typeof bar.CallgateSoftphone.SipCall, 'function');
});

test('the ES module bundle has SipCall as default export and the same named exports as the source', async () => {
  const bundled = await import(pathToFileURL(path.join(root, 'dist', 'sipcall.mjs')).href);
  const source = await import(pathToFileURL(path.join(root, 'src', 'sipcall.js')).href);
  assert.equal(typeof bundled.default, 'function');
  assert.equal(bundled.default.VERSION, source.VERSION);
  assert.deepEqual(Object.keys(bundled).sort(), Object.keys(source).sort());
});

test('package.json: no runtime dependencies, and every export and type path exists', () => {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.equal(pkg.dependencies, undefined, 'no runtime dependencies');
  const targets = [pkg.main, pkg.module, pkg.browser, pkg.types];
  const walk = (v) => (typeof v === 'string' ? targets.push(v) : Object.values(v).forEach(walk));
  walk(pkg.exports);
  for (const target of targets.filter((t) => !t.includes('*'))) {
    assert.ok(existsSync(path.join(root, target)), `${target} exists`);
    const top = target.replace(/^\.\//, '').split('/')[0];
    assert.ok(pkg.files.some((f) => f.replace(/\/$/, '') === top) || top === 'package.json', `${target} is published`);
  }
});
