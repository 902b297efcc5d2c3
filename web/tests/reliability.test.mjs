// Reliability against hostile input and engine failure, in headless Chromium (like
// browser.test.mjs): the model URL is same-origin only, a load can be cancelled (mid-download
// and inside the engine) and reports progress, the content hash is verified by default, a load
// that cannot fit is refused before copying, and every failure in the worker (a throwing step,
// ranking step or event, an abort or a real out-of-memory inside the engine) becomes an error in
// the UI with the app still working: an engine failure replaces the engine with a fresh one.
// The faults are injected through the worker's __injectFault op, which exists only when the
// page is opened with ?testhooks (SelfCond.create({testHooks: true})).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openPage, waitFor, demoModel, browserSkip } from './harness.mjs';

const model = demoModel;
const skip = browserSkip();
const T = 180_000;
const MODEL = '../demo/models/selfcond-mini-30m.scm';
const generating = () => !document.querySelector('.caret') && !document.querySelector('#generate').disabled;

// Generates `n` tokens in the app and checks both columns finished.
async function generateOk(page, n = 8) {
  await page.fill('#max-tokens', String(n));
  await page.click('#generate');
  await waitFor(page, generating, null, { timeout: T });
  assert.match(await page.textContent('#meta-base'), new RegExp(`^${n} tokens`));
  assert.match(await page.textContent('#meta-cond'), new RegExp(`^${n} tokens`));
}

for (const isolated of [false, true]) {
  describe(`reliability, ${isolated ? 'cross-origin isolated (threaded build)' : 'single-threaded build'}`, { skip }, () => {
    let server, browser;
    before(async () => {
      server = await startServer({ isolated });
      browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      server?.stop();
    });

    test('?model= on another origin is refused with a visible error and never fetched', { skip: isolated ? 'checked once' : false }, async () => {
      for (const url of ['https://example.com/x.scm', '//example.com/x.scm']) {
        const requested = [];
        const ctxListener = (r) => requested.push(r.url());
        browser.context.on('request', ctxListener);
        const { page, problems } = await openPage(browser.context, `${server.url}?nosw&model=${encodeURIComponent(url)}`, T);
        browser.context.off('request', ctxListener);
        assert.match(await page.textContent('#banner-text'),
          /model failed to load .*refused to load https?:\/\/example\.com\/x\.scm: its origin https?:\/\/example\.com is not this page's \(http:\/\/127\.0\.0\.1:\d+\)/);
        assert.equal(await page.isDisabled('#generate'), true);
        assert.equal(await page.isVisible('#load-model'), true);
        assert.deepEqual(requested.filter((u) => new URL(u).hostname === 'example.com'), []);
        assert.deepEqual(problems, []);  // refused before fetch: no CSP violation either
        await page.close();
      }
    });

    test('the library refuses cross-origin URLs unless allowedOrigins lists them', { skip: isolated ? 'checked once' : false }, async () => {
      const page = await browser.context.newPage();
      await page.goto(`${server.url}bench.html`);
      const r = await page.evaluate(async (MODEL) => {
        const { SelfCond, checkUrl } = await import('./lib/selfcond.js');
        const sc = await SelfCond.create();
        const msg = (p) => p.then(() => 'resolved', (e) => e.message);
        try {
          return {
            model: await msg(sc.loadModel('https://example.com/m.scm')),
            experts: await msg(sc.loadExperts('https://example.com/t.json')),
            data: await msg(sc.loadModel('data:application/octet-stream;base64,AAAA')),
            allowed: checkUrl('https://models.example.org/m.scm', ['https://models.example.org/']).href,
            any: checkUrl('https://x.example/m.scm', '*').href,
            own: checkUrl(MODEL).origin === location.origin,
          };
        } finally {
          sc.terminate();
        }
      }, MODEL);
      await page.close();
      assert.match(r.model, /refused to load https:\/\/example\.com\/m\.scm: its origin https:\/\/example\.com is not this page's/);
      assert.match(r.experts, /refused to load https:\/\/example\.com\/t\.json/);
      assert.match(r.data, /refused to load data:.*its origin null/);
      assert.equal(r.allowed, 'https://models.example.org/m.scm');
      assert.equal(r.any, 'https://x.example/m.scm');
      assert.equal(r.own, true);
    });

    test('Cancel stops the model download; loading again works', { skip: isolated ? 'checked once' : false }, async () => {
      const page = await browser.context.newPage();
      // 2 MB/s: the 31 MB model takes ~15 s, long enough to cancel mid-way.
      const cdp = await browser.context.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: 2e6, uploadThroughput: -1 });
      // ?nocache: the download itself is under test, not a copy an earlier test left in the store.
      await page.goto(`${server.url}?nosw&nocache`);
      await waitFor(page, () => /Downloading the model… [1-9]/.test(document.querySelector('#status-text').textContent), null, { timeout: T });
      assert.equal(await page.isVisible('#loadbar'), true);
      const fill = await page.$eval('#loadbar-fill', (e) => parseFloat(e.style.width));
      assert.ok(fill < 90, `download nearly done before cancel (${fill}%)`);
      await page.click('#load-cancel');
      await page.waitForSelector('#banner:not([hidden])', { timeout: T });
      assert.match(await page.textContent('#banner-text'), /Loading the model was cancelled/);
      assert.equal(await page.textContent('#status-text'), 'Loading cancelled');
      assert.equal(await page.isHidden('#loadbar'), true);
      assert.equal(await page.isDisabled('#generate'), true);
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
      await page.click('#load-model');
      await waitFor(page, () => /^Ready/.test(document.querySelector('#status-text').textContent), null, { timeout: T });
      assert.equal(await page.isHidden('#banner'), true);
      assert.equal(await page.isHidden('#load-model'), true);
      await generateOk(page);
      await page.close();
    });

    test('library: cancel inside the engine, progress phases, verify by default, refuse what cannot fit', async () => {
      const page = await browser.context.newPage();
      await page.goto(`${server.url}bench.html`);
      const r = await page.evaluate(async (MODEL) => {
        const { SelfCond } = await import('./lib/selfcond.js');
        const sc = await SelfCond.create({ testHooks: true });
        const outcome = (p) => p.then((x) => ({ ok: true, x }), (e) => ({ ok: false, name: e.name, message: e.message, code: e.code }));
        try {
          const bytes = new Uint8Array(await (await fetch(MODEL)).arrayBuffer());
          const out = {};
          // Aborted before the call: rejected at once.
          out.pre = await outcome(sc.loadModel(bytes, { signal: AbortSignal.abort() }));
          // Aborted once the bytes are on their way to the engine: the worker drops the load.
          const phases = [];
          const ac = new AbortController();
          const p = sc.loadModel(bytes, { signal: ac.signal, onProgress: (x) => phases.push(x.phase) });
          ac.abort();
          out.cancelled = await outcome(p);
          out.afterCancel = await sc.memory();
          // Progress from a URL: download, then the engine's phase. Verified by default.
          const seen = [];
          out.info = await sc.loadModel(MODEL, { onProgress: (x) => seen.push(x.phase) });
          out.phases = [...new Set(seen)];
          out.tokens = (await sc.generate({ prompt: 'The game', maxTokens: 4, seed: 1 }).done).tokens;
          // A corrupted file (one bit in the weights) is refused by default, loads with verify: false.
          const bad = bytes.slice();
          bad[bad.length >> 1] ^= 0x10;
          out.corrupt = await outcome(sc.loadModel(bad));
          out.modelAfterCorrupt = sc.model;
          out.unverified = await outcome(sc.loadModel(bad, { verify: false }));
          // A load that cannot fit (the limit lowered by the test hook) is refused before the
          // copy: the (fresh) engine's memory does not grow.
          await sc._injectFault({ kind: 'maxMemory', bytes: 100 * 1048576 });
          out.tooBig = await outcome(sc.loadModel(bytes));
          out.memTooBig = await sc.memory();
          await sc._injectFault({ kind: 'maxMemory', bytes: 0 });
          out.again = await outcome(sc.loadModel(bytes));
          out.tokensAgain = (await sc.generate({ prompt: 'The game', maxTokens: 4, seed: 1 }).done).tokens;
          return out;
        } finally {
          sc.terminate();
        }
      }, MODEL);
      await page.close();
      assert.deepEqual([r.pre.ok, r.pre.name], [false, 'AbortError']);
      assert.deepEqual([r.cancelled.ok, r.cancelled.name], [false, 'AbortError'], JSON.stringify(r.cancelled));
      assert.match(r.cancelled.message, /loading the model was cancelled/);
      assert.equal(r.afterCancel.fileBytes, 0);
      assert.deepEqual(r.phases, ['download', 'load']);
      assert.equal(r.info.verified, true);
      assert.ok(r.info.loadMs > 0);
      assert.equal(r.tokens, 4);
      assert.equal(r.corrupt.ok, false);
      assert.match(r.corrupt.message, /loading the model failed: content hash mismatch: .*\(file corrupted or modified\)/);
      assert.equal(r.corrupt.code, 'data_loss');  // the C API's status, by name
      assert.equal(r.modelAfterCorrupt, null);  // the old model was replaced, the new one refused
      assert.equal(r.unverified.ok, true, r.unverified.message);
      assert.equal(r.unverified.x.verified, false);
      assert.equal(r.tooBig.ok, false);
      assert.match(r.tooBig.message, /the model file \(30\.6 MiB\) does not fit in WebAssembly memory: loading needs about 61\.1 MiB .* at most 100\.0 MiB/);
      assert.ok(r.memTooBig.wasmBytes <= 64 * 1048576, `memory grew to ${r.memTooBig.wasmBytes} before refusing`);
      assert.equal(r.again.ok, true, r.again.message);
      assert.equal(r.tokensAgain, 4);
    });

    test('faults in the worker surface in the UI and the app keeps working', async () => {
      const { page, problems } = await openPage(browser.context, `${server.url}?nosw&testhooks`, T);
      assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
      const inject = (f) => page.evaluate((f) => window.selfcondApp.sc._injectFault(f), f);
      const banner = async () => {
        await page.waitForSelector('#banner:not([hidden])', { timeout: T });
        const text = await page.textContent('#banner-text');
        await page.click('#banner-close');
        return text;
      };

      // A step that throws fails its own generation only: the other column finishes.
      await inject({ where: 'step', kind: 'error' });
      await page.fill('#max-tokens', '8');
      await page.click('#generate');
      await waitFor(page, generating, null, { timeout: T });
      assert.match(await banner(), /^Generation failed: injected fault in step$/);
      const metas = [await page.textContent('#meta-base'), await page.textContent('#meta-cond')];
      assert.deepEqual(metas.map((m) => (m === 'error' ? 'error' : /^8 tokens/.test(m) ? 'ok' : m)).sort(), ['error', 'ok']);
      assert.equal(await page.$$eval('.error-text', (e) => e.map((x) => x.textContent)).then((t) => t.join()), 'injected fault in step');
      // A token event that cannot be sent fails that generation too.
      await inject({ where: 'post', kind: 'error' });
      await page.click('#generate');
      await waitFor(page, generating, null, { timeout: T });
      assert.match(await banner(), /^Generation failed: injected fault in post$/);
      // A request that throws on arrival is answered with the error.
      await inject({ where: 'message', kind: 'error' });
      const msg = await page.evaluate(() => window.selfcondApp.sc.tokenize('x').then(() => 'resolved', (e) => e.message));
      assert.equal(msg, 'injected fault in message');
      await generateOk(page);

      // A real allocation failure inside the engine during a step: the engine is replaced, every
      // running generation fails with the reason, the page never sees a bare number or a raw
      // 'Aborted()', and the memory is a fresh instance's.
      const before = await page.evaluate(() => window.selfcondApp.sc.memory());
      await inject({ where: 'step', kind: 'oom' });
      await page.click('#generate');
      await waitFor(page, () => !document.querySelector('.caret') &&
        /Engine restarted/.test(document.querySelector('#status-text').textContent), null, { timeout: T });
      const oom = await banner();
      assert.match(oom, /engine ran out of memory \(RuntimeError: Aborted\(\) without a message, .*wasm memory \d+ MiB of at most 4096 MiB\); restarted, reload the model/);
      assert.doesNotMatch(oom, /^\d+$|Build with -s ASSERTIONS/);
      assert.equal(await page.textContent('#meta-base'), 'error');
      assert.equal(await page.textContent('#meta-cond'), 'error');
      assert.equal(await page.isDisabled('#generate'), true);
      assert.equal(await page.isDisabled('#rank'), true);
      assert.equal(await page.isVisible('#load-model'), true);
      const after = await page.evaluate(() => window.selfcondApp.sc.memory());
      assert.equal(after.fileBytes, 0);
      assert.ok(after.wasmBytes < before.wasmBytes, `wasm memory ${after.wasmBytes} after the restart, ${before.wasmBytes} before`);
      const info = await page.evaluate(() => window.selfcondApp.sc._call('info'));
      assert.equal(info.restarts, 1);
      // Load again, generate again.
      await page.click('#load-model');
      await waitFor(page, () => /^Ready/.test(document.querySelector('#status-text').textContent), null, { timeout: T });
      assert.deepEqual(await page.$$eval('#concept option', (o) => o.map((x) => x.value)), ['football', 'woman', 'man']);
      await generateOk(page);

      // An abort during a ranking step: same recovery, the ranking reports it.
      await inject({ where: 'rankStep', kind: 'abort' });
      await page.click('#rank');
      await waitFor(page, () => /Engine restarted/.test(document.querySelector('#status-text').textContent), null, { timeout: T });
      await waitFor(page, () => /Ranking/.test(document.querySelector('#banner-text').textContent), null, { timeout: T });
      assert.match(await banner(), /^Ranking “cooking” failed: engine aborted \(RuntimeError: Aborted\(injected fault in rankStep\); wasm memory \d+ MiB of at most 4096 MiB\); restarted, reload the model$/);
      await page.click('#load-model');
      await waitFor(page, () => /^Ready/.test(document.querySelector('#status-text').textContent), null, { timeout: T });
      await page.click('#rank');
      await page.waitForSelector('#downloads:not([hidden])', { timeout: T });
      await generateOk(page);
      await page.close();
      // The page handled all of it: warnings, no errors, no uncaught exceptions.
      assert.deepEqual(problems, []);
    });

    test('the fault hook is off unless asked for', { skip: isolated ? 'checked once' : false }, async () => {
      const page = await browser.context.newPage();
      await page.goto(`${server.url}bench.html`);
      const msg = await page.evaluate(async () => {
        const { SelfCond } = await import('./lib/selfcond.js');
        const sc = await SelfCond.create();
        try {
          return await sc._injectFault({ where: 'step', kind: 'error' }).then(() => 'armed', (e) => e.message);
        } finally {
          sc.terminate();
        }
      });
      await page.close();
      assert.match(msg, /test hooks are off/);
    });
  });
}
