// End-to-end test of the web app in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): serve the repository with web/serve.mjs, open the page cross-origin isolated
// (threaded build) and not (single-threaded), generate conditioned text, rank a small custom
// concept, download it, check the error paths surface in the UI, that the worker's wasm memory
// holds the model once, and that the console stays clean: no errors and no Content-Security-
// Policy violations (the page's and the workers' policies are enforced: serve.mjs sends them).
// Cancel, same-origin, injected faults and engine restarts: reliability.test.mjs.
//
//   cd web && npm install && node --test tests/
// Screenshots go to web/test-artifacts/. Skipped when Chromium, the model or the wasm is missing.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launchBrowser, webDir, openPage as open, waitFor, demoModel, browserSkip } from './harness.mjs';

const artifacts = join(webDir, 'test-artifacts');
const model = demoModel;
const skip = browserSkip();
const T = 180_000;
const openPage = (context, url) => open(context, url, T);
const haveMt = existsSync(join(webDir, 'lib', 'engine', 'selfcond-mt.wasm'));

const POS = ['The striker scored a late goal.', 'The goalkeeper saved the penalty kick.', 'Fans sang in the stadium.',
  'The referee showed him a red card.', 'Our team won the league title.', 'He headed the ball into the net.'];
const NEG = ['The cat slept on the warm sofa.', 'She baked bread this morning.', 'The river flows into the sea.',
  'I bought a new phone yesterday.', 'The meeting starts at nine.', 'Rain fell all night long.'];

const generating = () => !document.querySelector('.caret') && !document.querySelector('#generate').disabled;

for (const isolated of [true, false]) {
  describe(isolated ? 'cross-origin isolated (threaded build)' : 'not isolated (single-threaded build)', { skip }, () => {
    let server, browser, page, problems;
    before(async () => {
      mkdirSync(artifacts, { recursive: true });
      server = await startServer({ isolated });
      browser = await launchBrowser();
      ({ page, problems } = await openPage(browser.context, server.url));
    });
    after(async () => {
      await browser?.close();
      server?.stop();
    });

    test('the page loads the model and the precomputed tables', async () => {
      assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
      assert.equal(await page.evaluate(() => crossOriginIsolated), isolated);
      const info = await page.textContent('#runtime-info');
      assert.match(info, /selfcond-mini-30m/);
      if (isolated && haveMt) assert.match(info, /threads \(cross-origin isolated\)/);
      if (!isolated) assert.match(info, /single-threaded/);
      const options = await page.$$eval('#concept option', (o) => o.map((x) => x.value));
      assert.deepEqual(options, ['football', 'woman', 'man']);
      assert.equal(await page.inputValue('#concept'), 'football');
      assert.ok(await page.$$eval('#chart-layers rect', (r) => r.length) > 0, 'layer chart drawn');
      assert.ok(await page.$$eval('#chart-ap rect', (r) => r.length) > 10, 'AP histogram drawn');
    });

    test('generates unconditioned and conditioned text side by side', async () => {
      await page.fill('#max-tokens', '30');
      await page.click('#generate');
      await waitFor(page, generating, null, { timeout: T });
      const base = await page.textContent('#out-base');
      const cond = await page.textContent('#out-cond');
      assert.ok(base.startsWith('Once upon a time') && base.length > 40, base);
      assert.ok(cond.startsWith('Once upon a time') && cond.length > 40, cond);
      assert.notEqual(base, cond, 'forcing 50 football experts changes the text');
      assert.match(await page.textContent('#meta-cond'), /30 tokens/);
      // Same seed, no experts: both columns must agree token for token.
      await page.fill('#k', '0');
      await page.dispatchEvent('#k', 'input');
      await page.click('#generate');
      await waitFor(page, generating, null, { timeout: T });
      assert.equal(await page.textContent('#out-base'), await page.textContent('#out-cond'));
      await page.fill('#k', '50');
      await page.dispatchEvent('#k', 'input');
    });

    test('Stop cancels both streams', async () => {
      await page.fill('#max-tokens', '200');
      await page.click('#generate');
      await waitFor(page, () => document.querySelector('#out-cond .body')?.textContent.length > 0, null, { timeout: T });
      await page.click('#stop');
      await waitFor(page, generating, null, { timeout: T });
      assert.match(await page.textContent('#meta-base'), /stopped/);
      assert.match(await page.textContent('#meta-cond'), /stopped/);
      await page.fill('#max-tokens', '30');
    });

    test('ranks a custom concept, generates with it, downloads JSON and CSV', async () => {
      await page.fill('#custom-name', 'mini-football');
      await page.fill('#custom-pos', POS.join('\n'));
      await page.fill('#custom-neg', NEG.join('\n'));
      await page.click('#rank');
      await page.waitForSelector('#downloads:not([hidden])', { timeout: T });
      assert.match(await page.textContent('#rank-result'), /6 \+ 6 sentences ranked/);
      assert.equal(await page.inputValue('#concept'), 'custom:mini-football');
      const [json] = await Promise.all([page.waitForEvent('download'), page.click('#dl-json')]);
      const table = JSON.parse(readFileSync(await json.path(), 'utf8'));
      assert.equal(table.format, 'selfcond-experts');
      assert.equal(table.concept, 'mini-football');
      assert.equal(table.dataset.num_positive, 6);
      const [csv] = await Promise.all([page.waitForEvent('download'), page.click('#dl-csv')]);
      const lines = readFileSync(await csv.path(), 'utf8').trim().split('\n');
      assert.equal(lines[0], 'ap,off_mean,on_p50,on_p90,layer,unit,uuid,concept,group');
      assert.equal(lines.length - 1, table.units.count);
      await page.click('#generate');
      await waitFor(page, generating, null, { timeout: T });
      assert.ok((await page.textContent('#out-cond')).length > 40);
      assert.match(await page.textContent('#cond-title'), /mini-football/);
      await page.selectOption('#concept', 'football');
      await page.fill('#max-tokens', '60');
      await page.click('#generate');
      await waitFor(page, generating, null, { timeout: T });
      await page.screenshot({ path: join(artifacts, `app-${isolated ? 'threaded' : 'single'}.png`), fullPage: true });
    });

    test('bad input shows the engine errors in the page', async () => {
      // A class with no sentences.
      await page.fill('#custom-neg', '');
      await page.click('#rank');
      await page.waitForSelector('#banner:not([hidden])', { timeout: T });
      assert.match(await page.textContent('#banner-text'), /Ranking .* failed: .*negative/i);
      await page.click('#banner-close');
      // A prompt past the context (256 tokens).
      await page.fill('#prompt', 'word '.repeat(400));
      await page.click('#generate');
      await page.waitForSelector('#banner:not([hidden])', { timeout: T });
      assert.match(await page.textContent('#banner-text'), /prompt is \d+ tokens; the context is 256/);
      assert.match(await page.textContent('#out-cond'), /context is 256/);
      await page.click('#banner-close');
      // Sampling settings out of range are caught before the engine.
      await page.fill('#prompt', 'Once upon a time');
      await page.fill('#top-p', '0');
      await page.click('#generate');
      assert.match(await page.textContent('#banner-text'), /Top-p must be/);
      await page.fill('#top-p', '0.95');
      await page.click('#banner-close');
    });

    test('a model that fails to load is reported', async () => {
      const { page: bad, problems: badProblems } = await openPage(browser.context, `${server.url}?nosw&model=/demo/models/missing.scm`);
      assert.match(await bad.textContent('#banner-text'), /model failed to load .*HTTP 404/);
      assert.equal(await bad.isDisabled('#generate'), true);
      await bad.close();
      // The browser itself logs the 404; nothing else.
      assert.deepEqual(badProblems.filter((p) => !/404/.test(p)), []);
    });

    test('works offline after the first visit (service worker + the package\'s store)', { skip: isolated ? 'checked once, in the single-threaded run' : false }, async () => {
      const stored = await page.evaluate(async () => {
        // The service worker's install step caches the app and the engine; the model and the
        // tables are in the package's store since the page loaded them.
        await navigator.serviceWorker.ready;
        const { listCached } = await import('./lib/selfcond.js');
        return (await listCached()).map((r) => `${r.kind} ${new URL(r.url).pathname}`).sort();
      });
      assert.deepEqual(stored.filter((x) => x.startsWith('model')), ['model /demo/models/selfcond-mini-30m.scm']);
      assert.ok(stored.includes('table /demo/experts/football.json'), stored.join(', '));
      await browser.context.setOffline(true);
      try {
        const { page: off, problems: offProblems } = await openPage(browser.context, server.url);
        assert.equal(await off.isHidden('#banner'), true, await off.textContent('#banner-text'));
        assert.match(await off.textContent('#runtime-info'), /from the browser’s store/);
        await off.fill('#max-tokens', '10');
        await off.click('#generate');
        await waitFor(off, generating, null, { timeout: T });
        assert.match(await off.textContent('#meta-cond'), /10 tokens/);
        await off.close();
        assert.deepEqual(offProblems, []);
      } finally {
        await browser.context.setOffline(false);
      }
    });

    test('more threads than the prespawned pthread pool: two streams and a ranking finish', { skip: isolated && haveMt ? false : 'needs the threaded build' }, async () => {
      // The model's pool of 4 threads = 3 pthreads, one more than -sPTHREAD_POOL_SIZE=2: the
      // extra one starts only after the worker's event loop has run (worker.js waits for it).
      const r = await page.evaluate(async ({ pos, neg }) => {
        const { SelfCond } = await import('./lib/selfcond.js');
        const sc = await SelfCond.create({ threads: 4 });
        try {
          await sc.loadModel('../demo/models/selfcond-mini-30m.scm');
          const t = await sc.rank({ positive: pos, negative: neg, concept: 'x' });
          const out = ['', ''];
          const gens = [[], [{ table: t, k: 20 }]].map((experts, i) =>
            sc.generate({ prompt: 'The game', maxTokens: 12, seed: 3, experts }, (x) => { out[i] += x.text; }).done);
          const res = await Promise.all(gens);
          return { threads: sc.runtime.threads, threaded: sc.runtime.threaded, tokens: res.map((x) => x.tokens), out };
        } finally {
          sc.terminate();
        }
      }, { pos: POS, neg: NEG });
      assert.equal(r.threaded, true);
      assert.equal(r.threads, 4);
      assert.deepEqual(r.tokens, [12, 12]);
    });

    test('one copy of the model in wasm memory: two streams and a ranking at once', async () => {
      const r = await page.evaluate(async ({ pos, neg }) => {
        const { SelfCond } = await import('./lib/selfcond.js');
        const sc = await SelfCond.create();
        try {
          await sc.loadModel('../demo/models/selfcond-mini-30m.scm');
          const loaded = await sc.memory();
          const t = await sc.loadExperts('../demo/experts/football.json');
          // A snapshot while both streams and the ranking are in flight (the worker interleaves
          // them and answers between steps).
          let during = null;
          const gens = [[], [{ table: t, k: 50 }]].map((experts) =>
            sc.generate({ prompt: 'The game', maxTokens: 80, seed: 3, stopAtEos: false, experts }).done);
          const ranked = sc.rank({
            positive: [...pos, ...pos, ...pos, ...pos], negative: [...neg, ...neg, ...neg, ...neg], concept: 'x',
            onProgress: ({ done }) => { if (done > 0 && !during) during = sc.memory(); },
          });
          const res = await Promise.all([...gens, ranked]);
          return { loaded, during: await during, after: await sc.memory(), tokens: res.slice(0, 2).map((x) => x.tokens) };
        } finally {
          sc.terminate();
        }
      }, { pos: POS, neg: NEG });
      const MiB = (x) => (x / 1048576).toFixed(1);
      const { during: d, after: a } = r;
      console.log(`wasm memory (${isolated ? 'threaded' : 'single-threaded'}): ${MiB(r.loaded.wasmBytes)} MiB loaded, ` +
        `${MiB(d.wasmBytes)} MiB with ${d.generating} streams + ranking, ${MiB(a.wasmBytes)} MiB after; ` +
        `file ${MiB(a.fileBytes)} + packed ${MiB(a.packedBytes)} + KV ${MiB(a.kvCacheBytes)} MiB (${a.sessions} sessions)`);
      assert.deepEqual(r.tokens, [80, 80]);
      assert.equal(d.generating, 2);
      assert.equal(d.ranking, true);
      assert.equal(a.sessions, 2);
      // The model's weights live once: the file's bytes plus XNNPACK's packed copy of the
      // linears (wasm memory cannot drop the file's pages as the native mmap does). Everything
      // else is small: two KV caches, session scratch, the ranking's responses, the runtime's
      // heap and stacks, and Emscripten's growth step. A second copy of the model (one engine
      // per stream, as before) would add file + packed = 60 MiB and fail both bars.
      const weights = a.fileBytes + a.packedBytes;
      assert.ok(a.wasmBytes < 2 * weights, `${MiB(a.wasmBytes)} MiB >= 2 x ${MiB(weights)} MiB`);
      assert.ok(a.wasmBytes < weights + a.kvCacheBytes + 40 * 1048576,
        `${MiB(a.wasmBytes)} MiB >= weights + KV + 40 MiB`);
    });

    test('the Content-Security-Policy is sent and carried by the pages', async () => {
      const res = await fetch(server.url);
      const csp = res.headers.get('content-security-policy');
      assert.match(csp, /default-src 'self'/);
      assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'(;|$)/);  // no 'unsafe-inline', no 'unsafe-eval'
      assert.match(csp, /connect-src 'self'/);
      assert.match(csp, /object-src 'none'/);
      assert.match(csp, /frame-ancestors 'none'/);
      // The engine's workers run the C API through generated glue: no eval anywhere, they get
      // 'wasm-unsafe-eval' only (compiling the engine's .wasm). Every test on this page (load,
      // generate, rank, steer, trace) ran under it, and the last test finds no violation.
      for (const f of ['lib/engine/worker.js', 'lib/engine/selfcond-mt.worker.js']) {
        const w = await fetch(new URL(f, server.url));
        assert.equal(w.status, 200, f);
        const wcsp = w.headers.get('content-security-policy');
        assert.match(wcsp, /script-src 'self' 'wasm-unsafe-eval'(;|$)/, f);
        assert.doesNotMatch(wcsp, /unsafe-eval'.*unsafe-eval|'unsafe-eval'/, f);
      }
      // Nor does the engine's JavaScript contain any (new Function, eval): a CSP without
      // 'unsafe-eval' cannot be defeated by a code path the tests did not take.
      for (const f of ['selfcond.mjs', 'selfcond-mt.mjs', 'selfcond-mt.worker.js', 'worker.js', 'capi-runtime.js', 'capi.js']) {
        const js = readFileSync(join(webDir, 'lib', 'engine', f), 'utf8');
        assert.doesNotMatch(js, /new Function\(|\beval\(/, `${f} uses eval`);
      }
      // The same page policy in a <meta> tag (minus frame-ancestors, header-only) for other servers.
      for (const name of ['index.html', 'bench.html']) {
        const html = readFileSync(join(webDir, name), 'utf8');
        const meta = html.match(/<meta http-equiv="Content-Security-Policy" content="([^"]+)">/)?.[1];
        assert.equal(meta, csp.replace("; frame-ancestors 'none'", ''), `${name}: meta CSP differs from serve.mjs's`);
        assert.doesNotMatch(html, /<script>|<script type="module">|<style>| style="| on[a-z]+="/, `${name}: inline script or style`);
      }
    });

    test('the console has no errors and no CSP violations (load, generate, rank)', async () => {
      // Every test above ran on this page: loading, generating, ranking, downloads.
      assert.equal(await page.$$eval('#concept option', (o) => o.length) >= 3, true);
      assert.deepEqual(problems, []);
    });
  });
}
