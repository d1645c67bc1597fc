// Token login end to end: `callgate demo` in token mode (HS256 secret, a credentials file,
// password mode off), the SDK in Chromium logging in with JWTs minted here the way a CRM
// backend would (node:crypto HMAC), registering and calling the demo PBX's echo. An expired
// token is surfaced as `token_expired` and `setToken` logs in again; a page-supplied SIP
// password is refused; callgate's logs never carry the token or the SIP password. Tokens of a
// few seconds: `getToken` keeps a session alive through `token_expiring` → `refresh_token`;
// without it the token runs out during a call, which goes on until hung up, and then the
// session closes (4002). The softphone bar in token mode logs in with `getToken` and keeps no
// token in the tab's storage.
//
// Run: cargo build -p gateway --bin callgate && (cd web-client && npm ci && node --test e2e/)

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { launchBrowser, startGateway, toneFile } from './harness.js';

const SECRET = 'e2e-token-secret-of-at-least-32-bytes';
const SIP_PASSWORD = 'looked-up-by-callgate';

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT, as the CRM backend mints it. */
function mint(claims, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${signature}`;
}

const now = () => Math.floor(Date.now() / 1000);

describe('token login in Chromium against callgate demo in token mode', { timeout: 90000 }, () => {
  let gateway;
  let browser;
  let context;

  before(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'callgate-token-'));
    const credentials = path.join(dir, 'credentials.toml');
    writeFileSync(credentials, `"1001" = "${SIP_PASSWORD}"\n`);
    gateway = await startGateway({
      args: [
        '--auth-token-secret', SECRET,
        '--auth-credentials-file', credentials,
        '--auth-password-mode', 'false',
        // Sessions end at their token's exp (the short-token tests below).
        '--auth-token-leeway-secs', '0',
      ],
    });
    browser = await launchBrowser(toneFile());
    context = await browser.newContext();
  });

  after(async () => {
    if (context) await context.close().catch(() => {});
    if (browser) await browser.close();
    if (gateway) await gateway.stop();
  });

  /** A page with the SDK module loaded and `window.start(config)` creating a SipCall. */
  async function sdkPage() {
    const page = await context.newPage();
    await page.goto(`http://${gateway.httpAddr}/`);
    await page.evaluate(async () => {
      const { default: SipCall } = await import('/sdk/sipcall.mjs');
      window.__events = [];
      window.start = (config) => {
        window.__sdk = new SipCall({
          url: `ws://${location.host}/ws`,
          lang: 'en',
          ...config,
          stateEventListener: (event, data) => window.__events.push({ event, data }),
        });
      };
    });
    return page;
  }

  async function waitFor(page, name, from = 0) {
    try {
      const handle = await page.waitForFunction(
        ([n, f]) => window.__events.slice(f).find((e) => e.event === n) || null,
        [name, from],
        { timeout: 15000, polling: 50 },
      );
      return (await handle.jsonValue()).data;
    } catch {
      const seen = await page.evaluate(() => window.__events.map((e) => e.event).join(', '));
      throw new Error(`no ${name}; events: ${seen}`);
    }
  }

  test('a minted token logs in, registers and calls; the SIP password never reaches the page', async () => {
    const page = await sdkPage();
    const token = mint({ sub: '1001', exp: now() + 300, dial: ['echo'] });
    await page.evaluate((t) => window.start({ extNo: '1001', token: t, autoRegister: true }), token);
    await waitFor(page, 'CONNECTED');
    await waitFor(page, 'REGISTERED');
    await page.evaluate(() => window.__sdk.call('echo'));
    await waitFor(page, 'IN_CALL');
    await page.evaluate(() => window.__sdk.hangup());
    await waitFor(page, 'CALL_END');
    await page.evaluate(() => window.__sdk.cleanSDK());

    const logs = JSON.stringify(gateway.logs);
    assert.ok(logs.includes('session opened'), 'the login is logged');
    assert.ok(!logs.includes(token.split('.')[2]), 'the token is never logged');
    assert.ok(!logs.includes(SIP_PASSWORD), 'the SIP password is never logged');
    await page.close();
  });

  test('an expired token gives ERROR token_expired; setToken with a fresh one logs in', async () => {
    const page = await sdkPage();
    const expired = mint({ sub: '1001', exp: now() - 3600 });
    await page.evaluate((t) => window.start({ extNo: '1001', token: t }), expired);
    const error = await waitFor(page, 'ERROR');
    assert.equal(error.code, 'token_expired');
    assert.match(error.msg, /expired/);
    const from = await page.evaluate(() => window.__events.length);
    await page.evaluate((t) => window.__sdk.setToken(t), mint({ sub: '1001', exp: now() + 300 }));
    await waitFor(page, 'CONNECTED', from);
    await page.evaluate(() => window.__sdk.cleanSDK());
    await page.close();
  });

  test('a forged token and a page-supplied password are refused with their codes', async () => {
    const page = await sdkPage();
    const forged = mint({ sub: '1001', exp: now() + 300 }, 'not-the-crm-secret-but-just-as-long!!');
    await page.evaluate((t) => window.start({ extNo: '1001', token: t }), forged);
    const error = await waitFor(page, 'ERROR');
    assert.equal(error.code, 'auth_failed');
    assert.match(error.msg, /token is invalid/);
    await page.evaluate(() => window.__sdk.cleanSDK());

    const from = await page.evaluate(() => window.__events.length);
    await page.evaluate(() => window.start({ extNo: '1001', extPwd: 'guess' }));
    const refused = await waitFor(page, 'ERROR', from);
    assert.equal(refused.code, 'auth_mode_disabled');
    await page.evaluate(() => window.__sdk.cleanSDK());
    await page.close();
  });

  test('getToken refreshes a short-lived session before its token runs out', async () => {
    const page = await sdkPage();
    await page.exposeFunction('mintShortToken', () => mint({ sub: '1001', exp: now() + 4 }));
    await page.evaluate(() => window.start({ extNo: '1001', getToken: () => window.mintShortToken() }));
    const connected = await waitFor(page, 'CONNECTED');
    assert.ok(connected.tokenExpiresAt > now() - 5, 'the welcome tells the expiry');
    await waitFor(page, 'TOKEN_EXPIRING');
    const refreshed = await waitFor(page, 'TOKEN_REFRESHED');
    assert.ok(refreshed.expiresAt >= connected.tokenExpiresAt);
    // Past the first token's exp the session still places calls.
    await page.waitForTimeout(Math.max(0, (connected.tokenExpiresAt + 1 - now()) * 1000));
    await page.evaluate(() => window.__sdk.call('echo'));
    await waitFor(page, 'IN_CALL');
    await page.evaluate(() => window.__sdk.hangup());
    await waitFor(page, 'CALL_END');
    const events = await page.evaluate(() => window.__events.map((e) => e.event));
    assert.ok(!events.includes('TOKEN_EXPIRED'), events.join(', '));
    await page.evaluate(() => window.__sdk.cleanSDK());
    await page.close();
  });

  test('the softphone bar logs in with getToken, asks only for the extension and stores no token', async () => {
    const page = await context.newPage();
    await page.exposeFunction('mintToken', () => mint({ sub: '1001', exp: now() + 300 }));
    await page.goto(`http://${gateway.httpAddr}/`);
    await page.evaluate(async () => {
      const { mount } = await import('/sdk/softphone.mjs');
      window.__events = [];
      const host = document.createElement('div');
      host.id = 'tokenbar';
      document.body.appendChild(host);
      window.__bar = mount(host, {
        url: `ws://${location.host}/ws`,
        lang: 'en',
        extNo: '1001',
        getToken: () => window.mintToken(),
        autoLogin: true,
        onEvent: (event, data) => window.__events.push({ event, data }),
      });
    });
    await waitFor(page, 'REGISTERED');
    const form = () => page.evaluate(() => {
      const root = document.getElementById('tokenbar').shadowRoot;
      const pwd = root.querySelector('[data-role=pwd]');
      return {
        formHidden: root.querySelector('[data-role=login-form]').hidden,
        pwdHidden: pwd.closest('label').hidden,
        pwdRequired: pwd.required,
        ext: root.querySelector('[data-role=ext]').value,
      };
    });
    assert.deepEqual(await form(), { formHidden: true, pwdHidden: true, pwdRequired: false, ext: '1001' });
    const kept = await page.evaluate(() => sessionStorage.getItem('callgate.softphone.session'));
    assert.deepEqual(JSON.parse(kept), { extNo: '1001', token: true }, 'the tab keeps the extension, no token');

    // A call through the bar's own controls.
    await page.fill('#tokenbar [data-role=number]', 'echo');
    await page.click('#tokenbar [data-role=call]');
    await waitFor(page, 'IN_CALL');
    await page.click('#tokenbar [data-role=hangup]');
    await waitFor(page, 'CALL_END');

    // Logged out, the form offers the extension only; submitting it logs in with a new token.
    await page.evaluate(() => window.__bar.logout());
    assert.deepEqual(await form(), { formHidden: false, pwdHidden: true, pwdRequired: false, ext: '1001' });
    const from = await page.evaluate(() => window.__events.length);
    await page.click('#tokenbar [data-role=login]');
    await waitFor(page, 'REGISTERED', from);
    await page.evaluate(() => window.__bar.destroy());

    // The CRM's token endpoint fails: the bar says so and goes back to its form.
    const failedFrom = await page.evaluate(() => window.__events.length);
    await page.evaluate(async () => {
      const { mount } = await import('/sdk/softphone.mjs');
      window.__bar = mount(document.getElementById('tokenbar'), {
        url: `ws://${location.host}/ws`,
        lang: 'en',
        extNo: '1001',
        getToken: () => Promise.reject(new Error('CRM down')),
        autoLogin: true,
        sessionStorage: null,
        onEvent: (event, data) => window.__events.push({ event, data }),
      });
    });
    const error = await waitFor(page, 'ERROR', failedFrom);
    assert.equal(error.code, 'token_fetch_failed');
    await page.waitForFunction(() => !document.getElementById('tokenbar').shadowRoot.querySelector('[data-role=login-form]').hidden);
    const notice = await page.evaluate(() => document.getElementById('tokenbar').shadowRoot.querySelector('[data-role=notice]').textContent);
    assert.equal(notice, error.msg);
    await page.evaluate(() => window.__bar.destroy());
    await page.close();
  });

  test('without a refresh the call outlives the token, then the session closes with 4002', async () => {
    const page = await sdkPage();
    const token = mint({ sub: '1001', exp: now() + 4 });
    await page.evaluate((t) => window.start({ extNo: '1001', token: t }), token);
    await waitFor(page, 'CONNECTED');
    await page.evaluate(() => window.__sdk.call('echo'));
    await waitFor(page, 'IN_CALL');
    const expired = await waitFor(page, 'TOKEN_EXPIRED');
    assert.equal(expired.activeCalls, 1);
    const during = await page.evaluate(() => window.__events.map((e) => e.event));
    assert.ok(!during.includes('CALL_END'), `the call is not cut: ${during.join(', ')}`);
    const from = await page.evaluate(() => window.__events.length);
    await page.evaluate(() => window.__sdk.hangup());
    await waitFor(page, 'CALL_END', from);
    const disconnected = await waitFor(page, 'DISCONNECTED', from);
    assert.equal(disconnected.code, 4002);
    await page.evaluate(() => window.__sdk.cleanSDK());
    await page.close();
  });
});
