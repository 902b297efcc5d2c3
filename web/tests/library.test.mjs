// The concept library browser (web/library.js) in headless Chromium, and the index it reads
// (demo/library/index.json, written by scripts/make_library_index.py):
//   - the demo library lists its concepts, the search filters by name and group;
//   - picking a concept loads its table only then (once), makes it the concept generated with,
//     and both columns produce text;
//   - a library of thousands of concepts renders at most 200 rows and says how many match; an
//     entry whose table holds another concept is refused when picked;
//   - an index of another model, and one on another origin, are refused with a visible error;
//   - the committed demo index is what the script makes of the demo tables, and the script
//     refuses tables of two models.
// Temporary indexes go to web/test-artifacts/ (served by serve.mjs, ignored by git).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, webDir, repoDir, openPage as open, waitFor, browserSkip } from './harness.mjs';

const T = 180_000;
const artifacts = join(webDir, 'test-artifacts');
const skip = browserSkip();
const openPage = (context, url) => open(context, url, T);
const demoIndex = JSON.parse(readFileSync(join(repoDir, 'demo', 'library', 'index.json'), 'utf8'));
const DEMO_TABLES = ['football', 'man', 'woman'].map((n) => join('demo', 'experts', `${n}.json`));
const python = process.env.PYTHON ?? 'python3';
const havePython = spawnSync(python, ['--version']).status === 0;
const script = join(repoDir, 'scripts', 'make_library_index.py');
const runScript = (args) => spawnSync(python, [script, ...args], { cwd: repoDir, encoding: 'utf8' });

const listed = (page) => page.$$eval('#library-list button[data-concept]', (b) => b.map((x) => x.dataset.concept));
const generating = () => !document.querySelector('.caret') && !document.querySelector('#generate').disabled;
const libraryLoaded = () => document.querySelectorAll('#library-list button').length > 0 ||
  document.querySelector('#library-status').classList.contains('error');

describe('make_library_index.py', { skip: havePython ? false : `no ${python}` }, () => {
  test('demo/library/index.json is up to date with the demo tables', () => {
    const r = runScript(['--check', '--out', 'demo/library/index.json', ...DEMO_TABLES]);
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}(regenerate: python3 scripts/make_library_index.py --out demo/library/index.json ${DEMO_TABLES.join(' ')})`);
  });

  test('paths relative to the index, the best unit, and tables of two models refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'selfcond-library-'));
    try {
      mkdirSync(join(dir, 'tables'));
      copyFileSync(join(repoDir, DEMO_TABLES[1]), join(dir, 'tables', 'man.json'));
      const out = join(dir, 'lib', 'index.json');
      let r = runScript(['--out', out, join(dir, 'tables')]);
      assert.equal(r.status, 0, r.stderr);
      const index = JSON.parse(readFileSync(out, 'utf8'));
      const man = JSON.parse(readFileSync(join(dir, 'tables', 'man.json'), 'utf8'));
      assert.equal(index.format, 'selfcond-library/1');
      assert.equal(index.model.hash, man.model_hash);
      assert.equal(index.concepts.length, 1);
      const [c] = index.concepts;
      assert.equal(c.table, '../tables/man.json');
      assert.equal(c.concept, man.concept);
      assert.equal(c.num_positive, man.dataset.num_positive);
      // site = layer * 4 + kind (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj).
      const best = man.units.ap.indexOf(Math.max(...man.units.ap));
      const site = man.units.site[best];
      const kind = ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'][site % 4];
      assert.equal(c.best_unit, `transformer.h.${Math.floor(site / 4)}.${kind}:0:${man.units.unit[best]}`);
      assert.equal(c.best_ap, man.units.ap[best]);
      // Another model's table next to it: refused, and the index is left as it was.
      const other = { ...man, concept: 'other', model_hash: 'f'.repeat(64), model_name: 'another-model' };
      writeFileSync(join(dir, 'tables', 'other.json'), JSON.stringify(other));
      r = runScript(['--out', out, join(dir, 'tables')]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /is for model another-model .* an index holds one model's tables/);
      assert.equal(JSON.parse(readFileSync(out, 'utf8')).concepts.length, 1);
      r = runScript(['--check', '--out', out, join(dir, 'tables', 'man.json'), join(dir, 'tables', 'man.json')]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /concept 'man-1_18_00__' is in both/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('concept library in the app', { skip }, () => {
  let server, browser;
  before(async () => {
    mkdirSync(artifacts, { recursive: true });
    // The demo index as if built for another model.
    writeFileSync(join(artifacts, 'library-other-model.json'), JSON.stringify({
      ...demoIndex, model: { ...demoIndex.model, name: 'another-model', hash: 'ab'.repeat(32) },
    }));
    // Thousands of concepts (all pointing at the demo's man table, from web/test-artifacts/),
    // plus the demo's three and one whose table holds another concept than it says.
    const many = Array.from({ length: 5000 }, (_, i) => ({
      concept: `concept-${String(i).padStart(5, '0')}`, group: 'synthetic', table: '../../demo/experts/man.json',
      num_positive: 10, num_negative: 20, best_ap: 0.5, best_unit: 'transformer.h.0.mlp.c_fc:0:1',
    }));
    const demo = demoIndex.concepts.map((c) => ({ ...c, table: `../../demo/library/${c.table}` }));
    writeFileSync(join(artifacts, 'library-big.json'), JSON.stringify({
      ...demoIndex, concepts: [...demo, ...many, { ...demo[1], concept: 'stale-entry' }],
    }));
    server = await startServer();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    server?.stop();
  });

  test('search the demo library, pick man (loaded once, when picked), generate with it', async () => {
    const { page, problems } = await openPage(browser.context, server.url);
    const tableRequests = [];
    page.on('request', (r) => {
      if (r.url().endsWith('/demo/experts/man.json')) tableRequests.push(r.url());
    });
    await waitFor(page, libraryLoaded, null, { timeout: T });
    assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
    assert.deepEqual(await listed(page), ['football-1_04_00__', 'man-1_18_00__', 'woman-1_18_00__']);
    assert.match(await page.textContent('#library-count'), /^3 concepts$/);
    assert.match(await page.textContent('#library-list'), /sense · AP 0\.872 · 700\+ \/ 1,?000−/);
    // Case-insensitive substring of the name; every term must match the name or the group.
    await page.fill('#library-search', 'MAN');
    assert.deepEqual(await listed(page), ['man-1_18_00__', 'woman-1_18_00__']);
    assert.match(await page.textContent('#library-count'), /2 of 3 match/);
    await page.fill('#library-search', 'sense foot');
    assert.deepEqual(await listed(page), ['football-1_04_00__']);
    await page.fill('#library-search', 'Sense');
    assert.equal((await listed(page)).length, 3);
    await page.fill('#library-search', 'cooking');
    assert.deepEqual(await listed(page), []);
    assert.match(await page.textContent('#library-count'), /No concept matches “cooking”/);
    assert.deepEqual(tableRequests, [], 'no table is fetched before a concept is picked');

    await page.fill('#library-search', 'man-1');
    await page.click('#library-list button[data-concept="man-1_18_00__"]');
    await waitFor(page, () => document.querySelector('#concept').value === 'library:man-1_18_00__', null, { timeout: T });
    assert.equal(await page.textContent('#concept option:checked'), 'man-1_18_00__ (library)');
    assert.match(await page.textContent('#library-status'), /Selected man-1_18_00__ for generation/);
    assert.match(await page.textContent('#experts-meta'), /man-1_18_00__ \(library\) · 20,?736 units ranked/);
    await page.fill('#max-tokens', '30');
    await page.click('#generate');
    await waitFor(page, generating, null, { timeout: T });
    for (const col of ['#out-base', '#out-cond']) {
      const text = await page.textContent(col);
      assert.ok(text.startsWith('Once upon a time') && text.length > 'Once upon a time'.length + 20, `${col}: ${text}`);
    }
    // Forcing may end the text early (end of text), so no exact count; an error would say 'error'.
    for (const meta of ['#meta-base', '#meta-cond']) assert.match(await page.textContent(meta), /^\d+ tokens/);
    assert.match(await page.textContent('#cond-title'), /Conditioned · man-1_18_00__ \(library\) · k=50/);

    // Another pick, then man again: its table is cached (no second fetch).
    await page.click('#library-list button[data-concept="woman-1_18_00__"]');
    await waitFor(page, () => document.querySelector('#concept').value === 'library:woman-1_18_00__', null, { timeout: T });
    await page.click('#library-list button[data-concept="man-1_18_00__"]');
    await waitFor(page, () => document.querySelector('#concept').value === 'library:man-1_18_00__', null, { timeout: T });
    assert.equal(tableRequests.length, 1, `man.json fetched ${tableRequests.length} times`);
    const options = await page.$$eval('#concept option', (o) => o.map((x) => x.value));
    assert.deepEqual(options.filter((v) => v.startsWith('library:')), ['library:man-1_18_00__', 'library:woman-1_18_00__']);
    await page.screenshot({ path: join(artifacts, 'library.png'), fullPage: true });
    await page.close();
    assert.deepEqual(problems, []);
  });

  test('thousands of concepts: at most 200 rows, the count of matches; a stale entry is refused', async () => {
    const { page, problems } = await openPage(browser.context, `${server.url}?nosw&library=/web/test-artifacts/library-big.json`);
    await waitFor(page, libraryLoaded, null, { timeout: T });
    assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
    assert.equal((await listed(page)).length, 200);
    assert.match(await page.textContent('#library-count'), /^5,?004 concepts · showing the first 200/);
    await page.fill('#library-search', 'concept-012');
    assert.equal((await listed(page)).length, 100);
    assert.match(await page.textContent('#library-count'), /^100 of 5,?004 match$/);
    await page.fill('#library-search', 'SYNTH 4999');
    assert.deepEqual(await listed(page), ['concept-04999']);
    // The entry says "stale-entry" but its table is man's: refused, the picker unchanged.
    await page.fill('#library-search', 'stale');
    const before = await page.inputValue('#concept');
    await page.click('#library-list button[data-concept="stale-entry"]');
    await page.waitForSelector('#banner:not([hidden])', { timeout: T });
    assert.match(await page.textContent('#banner-text'), /table for “stale-entry” failed to load: the index lists “stale-entry” but .*man\.json holds “man-1_18_00__”/);
    assert.match(await page.getAttribute('#library-status', 'class'), /error/);
    assert.equal(await page.inputValue('#concept'), before);
    // A demo concept from this library still works.
    await page.fill('#library-search', 'football');
    await page.click('#library-list button[data-concept="football-1_04_00__"]');
    await waitFor(page, () => document.querySelector('#concept').value === 'library:football-1_04_00__', null, { timeout: T });
    await page.close();
    assert.deepEqual(problems, []);
  });

  test('an index of another model is refused with a visible error', async () => {
    const { page, problems } = await openPage(browser.context, `${server.url}?nosw&library=/web/test-artifacts/library-other-model.json`);
    await waitFor(page, libraryLoaded, null, { timeout: T });
    await page.waitForSelector('#banner:not([hidden])', { timeout: T });
    const msg = await page.textContent('#banner-text');
    assert.match(msg, /Concept library .*library-other-model\.json refused: it was built for the model “another-model” \(sha256 abababababab…\), but the loaded model is “selfcond-mini-30m” \(sha256 c2e1c594d8c4…\)/);
    assert.equal(await page.textContent('#library-status'), msg);
    assert.equal(await page.isVisible('#library-status'), true);
    assert.deepEqual(await listed(page), []);
    assert.equal(await page.isDisabled('#library-search'), true);
    // The model itself is fine: generating (with the presets) still works.
    assert.equal(await page.isDisabled('#generate'), false);
    await page.close();
    assert.deepEqual(problems, []);
  });

  test('an index on another origin is refused before it is fetched', async () => {
    const context = browser.context;
    const requests = [];
    const onRequest = (r) => { if (new URL(r.url()).hostname === 'example.com') requests.push(r.url()); };
    context.on('request', onRequest);
    try {
      const { page, problems } = await openPage(context, `${server.url}?nosw&library=https://example.com/lib/index.json`);
      await waitFor(page, libraryLoaded, null, { timeout: T });
      assert.match(await page.textContent('#banner-text'),
        /Concept library https:\/\/example\.com\/lib\/index\.json refused: refused to load https:\/\/example\.com\/lib\/index\.json: its origin https:\/\/example\.com is not this page's/);
      await page.close();
      assert.deepEqual(problems, []);
    } finally {
      context.off('request', onRequest);
    }
    assert.deepEqual(requests, []);
  });
});
