// The npm package from outside (issue 11): demo/embed/setup.mjs packs web/lib/ with `npm pack`,
// installs the tarball with `npm install --offline` into an empty temporary directory, copies
// the two example pages next to it and bundles one of them with esbuild; this serves that
// directory (and nothing of the repository but the demo model and tables) and drives:
//   - demo/embed/unbundled/ (import map, the README's example verbatim), cross-origin
//     isolated: the threaded build; the model loads, conditioned text streams, a custom concept
//     ranks; the second visit loads from the browser's store with the model's URL blocked; a
//     damaged stored copy is refused by its hash and downloaded again, and so is a changed file
//     at the same URL; clearCached empties the store;
//   - demo/embed/bundled/ (esbuild, <selfcond-playground>), not isolated: the single-threaded
//     build; the element by its labels and keyboard: both columns, the strength slider, a
//     custom concept, the host page's theme; the second visit from the store, network blocked.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, openPage, waitFor, browserSkip, webDir, repoDir, demoModel } from './harness.mjs';
import { setup } from '../../demo/embed/setup.mjs';

const T = 180_000;
const haveNpm = spawnSync('npm', ['--version']).status === 0;
const haveEsbuild = existsSync(join(webDir, 'node_modules', 'esbuild'));
const skip = browserSkip() || (!haveNpm && 'no npm') || (!haveEsbuild && 'no esbuild (cd web && npm ci)');
const MODEL_PATH = '/models/selfcond-mini-30m.scm';

// Counts what the example writes into #out as it happens (a MutationObserver installed before
// the page's scripts run): streamed text arrives in many updates, not at the end.
function watchOutput() {
  window.__outLengths = [];
  new MutationObserver(() => {
    const out = document.getElementById('out');
    if (out) window.__outLengths.push(out.textContent.length);
  }).observe(document, { childList: true, subtree: true, characterData: true });
}

/** Aborts every request for the model (the HEAD that revalidates and any GET); returns the log. */
async function blockModel(page) {
  const blocked = [];
  await page.route(`**${MODEL_PATH}`, (route) => {
    blocked.push(route.request().method());
    return route.abort('internetdisconnected');
  });
  return blocked;
}

describe('the npm package from outside: demo/embed pages on the packed tarball', { skip }, () => {
  let dir;
  let site;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'selfcond-embed-'));
    ({ site } = setup(dir, { log: (m) => console.log(`embed setup: ${m}`) }));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the tarball holds the package, its engine and docs, and installs offline', () => {
    const pkg = JSON.parse(readFileSync(join(site, 'node_modules', 'selfcond', 'package.json'), 'utf8'));
    assert.equal(pkg.name, 'selfcond');
    assert.match(pkg.version, /^\d+\.\d+\.\d+$/);
    assert.equal(pkg.dependencies, undefined, 'the package must have no dependencies (it installs offline)');
    assert.equal(pkg.exports['.'].default, './selfcond.js');
    assert.equal(pkg.exports['.'].types, './selfcond.d.ts');
    for (const f of ['selfcond.js', 'selfcond.d.ts', 'cache.js', 'playground.js', 'playground.d.ts', 'README.md', 'CHANGELOG.md',
      'engine/worker.js', 'engine/loader.mjs', 'engine/selfcond.mjs', 'engine/selfcond.wasm',
      'engine/selfcond-mt.mjs', 'engine/selfcond-mt.wasm', 'engine/selfcond-mt.worker.js']) {
      assert.ok(existsSync(join(site, 'node_modules', 'selfcond', f)), `${f} missing from the installed package`);
    }
    // The engine in the package is the app's (one copy in the repository).
    assert.deepEqual(readFileSync(join(site, 'node_modules', 'selfcond', 'engine', 'selfcond.wasm')),
      readFileSync(join(webDir, 'lib', 'engine', 'selfcond.wasm')));
    assert.ok(existsSync(join(site, 'bundled', 'dist', 'main.js')) && existsSync(join(site, 'bundled', 'dist', 'engine', 'worker.js')));
  });

  test('the READMEs show the example page the tests run', () => {
    const example = readFileSync(join(repoDir, 'demo', 'embed', 'unbundled', 'main.js'), 'utf8').trim();
    for (const readme of [join(webDir, 'lib', 'README.md'), join(repoDir, 'README.md'), join(webDir, 'README.md')]) {
      assert.ok(readFileSync(readme, 'utf8').includes(example), `${readme} does not show demo/embed/unbundled/main.js verbatim`);
    }
  });

  describe('unbundled page (import map), cross-origin isolated', () => {
    let server;
    let browser;
    let base;
    before(async () => {
      server = await startServer({ root: site });
      base = server.url.replace(/web\/$/, '');
      browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      server?.stop();
    });

    const done = () => document.getElementById('ranked').textContent !== '';
    const open = async () => {
      const requests = [];
      const r = await openPage(browser.context, `${base}unbundled/`, T, {
        ready: null,
        before: async (page) => {
          await page.addInitScript(watchOutput);
          page.on('request', (q) => requests.push(`${q.method()} ${new URL(q.url()).pathname}`));
        },
      });
      return { ...r, requests };
    };

    test('first visit: the threaded build, the model downloaded, conditioned text streams, a custom concept ranks', async () => {
      const { page, problems, requests } = await open();
      await waitFor(page, done, null, { timeout: T });
      const threads = Math.min(availableParallelism(), 4);
      assert.equal(await page.textContent('#status'), `selfcond-mini-30m: ${threads} thread(s), downloaded`);
      // Everything of the package came from node_modules/selfcond/, the build the page's isolation allows.
      const build = threads > 1 ? 'selfcond-mt' : 'selfcond';
      assert.ok(requests.includes(`GET /node_modules/selfcond/engine/${build}.wasm`), requests.join('\n'));
      assert.ok(!requests.some((r) => /\/selfcond\.wasm$/.test(r)) || build === 'selfcond', 'the single-threaded build was fetched too');
      assert.ok(requests.includes(`GET ${MODEL_PATH}`));
      const out = await page.textContent('#out');
      assert.ok(out.trim().length > 20, `too little text: ${JSON.stringify(out)}`);
      const lengths = await page.evaluate(() => window.__outLengths.filter((n) => n > 0));
      assert.ok(new Set(lengths).size >= 5, `text arrived in ${new Set(lengths).size} updates, not streamed`);
      assert.match(await page.textContent('#ranked'), /^cats: 20736 units ranked, best AP (0\.\d{3}|1\.000)$/);
      // The store holds the model (under the hash its header names) and the table.
      const stored = await page.evaluate(async () => {
        const { listCached } = await import('selfcond');
        return listCached();
      });
      const hash = JSON.parse(readFileSync(join(repoDir, 'demo', 'experts', 'football.json'), 'utf8')).model_hash;
      assert.deepEqual(stored.map((s) => [s.kind, new URL(s.url).pathname]).sort(), [['model', MODEL_PATH], ['table', '/experts/football.json']]);
      const model = stored.find((s) => s.kind === 'model');
      assert.equal(model.sha256, hash);
      assert.equal(model.bytes, readFileSync(demoModel).length);
      assert.ok(model.etag && model.lastModified, 'validators stored');
      await page.close();
      assert.deepEqual(problems, []);
    });

    test('second visit: loaded from the browser\'s store with the model\'s URL blocked', async () => {
      let blocked;
      const { page, problems } = await openPage(browser.context, `${base}unbundled/`, T, {
        ready: null, before: async (p) => { blocked = await blockModel(p); },
      });
      await waitFor(page, done, null, { timeout: T });
      assert.match(await page.textContent('#status'), /^selfcond-mini-30m: \d thread\(s\), from the cache$/);
      assert.ok((await page.textContent('#out')).trim().length > 20);
      assert.match(await page.textContent('#ranked'), /^cats: 20736 units ranked/);
      // The revalidation was tried (and blocked); nothing else asked for the model.
      assert.deepEqual(blocked, ['HEAD']);
      await page.close();
      // Chromium logs the aborted request itself.
      assert.deepEqual(problems.filter((p) => !/ERR_INTERNET_DISCONNECTED/.test(p)), []);
    });

    test('a damaged stored copy is refused by its content hash and downloaded again', async () => {
      const { page, problems } = await openPage(browser.context, `${base}unbundled/`, T, { ready: null });
      await waitFor(page, done, null, { timeout: T });
      // One byte of the stored model flipped on disk (the store's own entry, as Cache Storage holds it).
      const damaged = await page.evaluate(async () => {
        const { CACHE_NAME } = await import('selfcond');
        const cache = await caches.open(CACHE_NAME);
        for (const req of await cache.keys()) {
          const bytes = new Uint8Array(await (await cache.match(req)).arrayBuffer());
          if (!req.url.includes('/sha256/') || bytes.length < 1e6) continue;
          bytes[bytes.length - 100] ^= 0xff;
          await cache.put(req, new Response(bytes));
          return req.url;
        }
        return null;
      });
      assert.ok(damaged, 'no stored model found');
      await page.close();
      const requests = [];
      const { page: again, problems: againProblems } = await openPage(browser.context, `${base}unbundled/`, T, {
        ready: null, before: (p) => p.on('request', (q) => { if (q.url().endsWith('.scm')) requests.push(q.method()); }),
      });
      await waitFor(again, done, null, { timeout: T });
      assert.match(await again.textContent('#status'), /, downloaded$/);
      assert.deepEqual(requests, ['HEAD', 'GET']);
      await again.close();
      assert.deepEqual([...problems, ...againProblems], []);
    });

    test('a changed file at the same URL is downloaded again; clearCached empties the store', async () => {
      // The same bytes under new validators, as after the file was replaced on the server.
      const seen = [];
      const { page, problems } = await openPage(browser.context, `${base}unbundled/`, T, {
        ready: null,
        before: (p) => p.route(`**${MODEL_PATH}`, (route) => {
          seen.push(route.request().method());
          return route.fulfill({
            status: 200, path: demoModel,
            headers: { 'Content-Type': 'application/octet-stream', ETag: '"replaced"', 'Last-Modified': new Date().toUTCString() },
          });
        }),
      });
      await waitFor(page, done, null, { timeout: T });
      assert.match(await page.textContent('#status'), /, downloaded$/);
      assert.deepEqual(seen, ['HEAD', 'GET']);
      const r = await page.evaluate(async () => {
        const { listCached, clearCached } = await import('selfcond');
        const etag = (await listCached()).find((s) => s.kind === 'model').etag;
        const removedTable = await clearCached({ kind: 'table' });
        const left = (await listCached()).map((s) => s.kind);
        const removedAll = await clearCached();
        return { etag, removedTable, left, removedAll, after: await listCached() };
      });
      assert.deepEqual(r, { etag: '"replaced"', removedTable: 1, left: ['model'], removedAll: 1, after: [] });
      await page.close();
      assert.deepEqual(problems, []);
      // Nothing stored and the network blocked: the example fails to load the model.
      const { page: off, problems: offProblems } = await openPage(browser.context, `${base}unbundled/`, T, {
        ready: null, before: blockModel,
      });
      for (const t0 = Date.now(); Date.now() - t0 < T && !offProblems.some((p) => p.startsWith('pageerror')); ) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(offProblems.some((p) => /pageerror: could not fetch .*selfcond-mini-30m\.scm/.test(p)), offProblems.join('\n'));
      await off.close();
    });
  });

  describe('bundled page (esbuild) with <selfcond-playground>, not isolated', () => {
    let server;
    let browser;
    let base;
    before(async () => {
      server = await startServer({ root: site, isolated: false });
      base = server.url.replace(/web\/$/, '');
      browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      server?.stop();
    });

    const status = (page) => page.locator('selfcond-playground .status-text').textContent();
    const ready = () => /^Ready/.test(document.querySelector('selfcond-playground')?.shadowRoot?.querySelector('.status-text')?.textContent);
    const idle = () => /^Done/.test(document.querySelector('selfcond-playground').shadowRoot.querySelector('.status-text').textContent);

    test('the element: both columns, strength, keyboard, a custom concept, the host\'s theme', async () => {
      const requests = [];
      const { page, problems } = await openPage(browser.context, `${base}bundled/`, T, {
        ready: null, before: (p) => p.on('request', (q) => requests.push(new URL(q.url()).pathname)),
      });
      await waitFor(page, ready, null, { timeout: T });
      assert.equal(await status(page), 'Ready: selfcond-mini-30m, single-threaded');
      assert.ok(requests.includes('/bundled/dist/engine/selfcond.wasm'), requests.join('\n'));
      assert.ok(!requests.some((r) => r.includes('selfcond-mt')), 'the threaded build without cross-origin isolation');
      assert.ok(!requests.some((r) => r.startsWith('/node_modules/')), 'the bundle must not reach into node_modules');
      // Every control has a label; the concepts came from the attribute.
      const prompt = page.getByLabel('Prompt');
      const concept = page.getByLabel('Concept', { exact: true });
      const k = page.getByLabel(/^Strength/);
      assert.deepEqual(await concept.locator('option').allTextContents(), ['football', 'woman', 'man']);
      assert.equal(await k.inputValue(), '50');
      // Keyboard: the slider moves with the arrow keys, Ctrl+Enter in the prompt generates.
      await k.focus();
      await page.keyboard.press('ArrowRight');
      assert.equal(await k.inputValue(), '51');
      assert.equal(await page.locator('selfcond-playground #k-out').textContent(), '51');
      assert.equal(await k.getAttribute('aria-valuetext'), '51 expert units of football');
      await prompt.fill('The game');
      await prompt.press('Control+Enter');
      await waitFor(page, idle, null, { timeout: T });
      assert.equal(await page.locator('selfcond-playground #cond-title').textContent(), 'Conditioned: football, k = 51');
      const base1 = await page.locator('selfcond-playground #out-base').textContent();
      const cond1 = await page.locator('selfcond-playground #out-cond').textContent();
      assert.ok(base1.startsWith('The game') && cond1.startsWith('The game'));
      assert.ok(base1.length > 'The game'.length + 20 && cond1.length > 'The game'.length + 20, `${base1} | ${cond1}`);
      assert.notEqual(base1, cond1, 'same seed: the forced units must change the text');
      assert.match(await page.locator('selfcond-playground #meta-cond').textContent(), /^\d+ tokens/);
      for (const id of ['out-base', 'out-cond']) {
        assert.equal(await page.locator(`selfcond-playground #${id}`).getAttribute('aria-live'), 'polite');
        assert.equal(await page.locator(`selfcond-playground #${id}`).getAttribute('aria-busy'), 'false');
      }
      // A custom concept from typed sentences becomes the one generated with.
      await page.getByLabel('Name', { exact: true }).fill('cats');
      await page.getByLabel('Sentences with the concept (one per line)').fill(
        'The cat purred on my lap.\nOur kitten chased a toy mouse.\nShe fed the cats at dawn.\nThe cat slept in the sun.');
      await page.getByLabel('Sentences without it (one per line)').fill(
        'The train left at noon.\nStocks fell on Monday.\nHe painted the fence.\nThe meeting ran late.');
      await page.getByRole('button', { name: 'Find experts' }).click();
      await waitFor(page, () => /Found experts/.test(document.querySelector('selfcond-playground').shadowRoot.querySelector('#rank-result').textContent), null, { timeout: T });
      assert.match(await page.locator('selfcond-playground #rank-result').textContent(),
        /^Found experts for “cats”: best unit AP (0\.\d{3}|1\.000) \(20,?736 units ranked\)\. Selected for generation\.$/);
      assert.equal(await concept.locator('option:checked').textContent(), 'cats (custom)');
      await page.getByRole('button', { name: 'Generate' }).click();
      await waitFor(page, idle, null, { timeout: T });
      assert.equal(await page.locator('selfcond-playground #cond-title').textContent(), 'Conditioned: cats, k = 51');
      // The host page's custom properties reach inside the element.
      assert.equal(await page.getByRole('button', { name: 'Generate' }).evaluate((b) => getComputedStyle(b).backgroundColor), 'rgb(11, 122, 83)');
      await page.screenshot({ path: join(webDir, 'test-artifacts', 'embed-bundled.png'), fullPage: true }).catch(() => {});
      await page.close();
      assert.deepEqual(problems, []);
    });

    test('second visit: the element loads the model from the browser\'s store with its URL blocked', async () => {
      let blocked;
      const { page, problems } = await openPage(browser.context, `${base}bundled/`, T, {
        ready: null, before: async (p) => { blocked = await blockModel(p); },
      });
      await waitFor(page, ready, null, { timeout: T });
      assert.equal(await status(page), 'Ready: selfcond-mini-30m, single-threaded, loaded from the browser’s store');
      assert.deepEqual(blocked, ['HEAD']);
      await page.getByRole('button', { name: 'Generate' }).click();
      await waitFor(page, idle, null, { timeout: T });
      assert.ok((await page.locator('selfcond-playground #out-cond').textContent()).length > 30);
      await page.close();
      assert.deepEqual(problems.filter((p) => !/ERR_INTERNET_DISCONNECTED/.test(p)), []);
    });
  });
});
