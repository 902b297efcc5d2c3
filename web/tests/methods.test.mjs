// The method switch, the method comparison and the expert explorer (issue 10, point 7), in
// headless Chromium: the package's new calls (conceptWords, steeringVector, wordLogitBias,
// traceUnit, compareMethods, generate({steer, bias})) on their own, then the real app: the
// conditioned column with a steering vector and with a logit bias (precomputed and custom
// concepts), the "Compare methods" chart and table, and the explorer's sentences for a clicked
// unit. The console must stay clean (no errors, no CSP violations).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launchBrowser, webDir, repoDir, openPage, waitFor, browserSkip } from './harness.mjs';

const T = 180_000;
const artifacts = join(webDir, 'test-artifacts');
const skip = browserSkip();
const football = JSON.parse(readFileSync(join(repoDir, 'demo', 'concepts', 'football.json'), 'utf8')).sentences;

// Concept words must occur in at least 3 positive sentences (the engine's ConceptWords).
const POS = ['I cook the onions in butter in a hot pan.', 'Cook the sauce for ten minutes, stirring the pan often.',
  'She kneaded the dough and put it in the hot oven.', 'Season the sauce with salt, pepper and fresh herbs, then cook it.',
  'He roasted the vegetables in the oven with butter.', 'Whisk the sauce in the pan until the butter melts in the oven heat.'];
const NEG = ['The train to Berlin was delayed by an hour.', 'He fixed the bug in the compiler last night.',
  'The committee will vote on the proposal next week.', 'A strong wind blew across the empty beach.',
  'She painted the bedroom walls light blue.', 'The stock market fell sharply on Monday.'];

const generating = () => !document.querySelector('.caret') && !document.querySelector('#generate').disabled;
const continuation = (text, prompt) => {
  assert.ok(text.startsWith(prompt), text);
  return text.slice(prompt.length);
};

describe('steering methods and the expert explorer', { skip }, () => {
  let server, browser, page, problems;
  before(async () => {
    mkdirSync(artifacts, { recursive: true });
    server = await startServer({ isolated: true });
    browser = await launchBrowser();
    ({ page, problems } = await openPage(browser.context, `${server.url}?nosw`, T));
  });
  after(async () => {
    await browser?.close();
    server?.stop();
  });

  test('package: concept words, steering vector, logit bias, unit traces and generate({steer, bias})', async () => {
    const r = await page.evaluate(async ({ pos, neg }) => {
      const { SelfCond } = await import('./lib/selfcond.js');
      const sc = await SelfCond.create();
      const run = (opts) => {
        let text = '';
        return sc.generate({ prompt: 'The weekend was', maxTokens: 16, temperature: 0, stopAtEos: false, ...opts }, (t) => { text += t.text; })
          .done.then(() => text);
      };
      const rejects = (p) => p.then(() => 'resolved', (e) => e.message);
      try {
        const info = await sc.loadModel('../demo/models/selfcond-mini-30m.scm');
        const table = await sc.loadExperts('../demo/experts/football.json');
        const words = await sc.conceptWords({ positive: pos, negative: neg, maxWords: 10 });
        const sv = await sc.steeringVector({ positive: pos, negative: neg, layer: 2 });
        const svDefault = await sc.steeringVector({ positive: pos, negative: neg });
        const bias = await sc.wordLogitBias({ words: words.map((w) => w.word), beta: 10 });
        // The table's best unit: its global id as the engine reports it, and the same id computed
        // here from GPT-2's unit numbering (site = layer * 4 + kind; sites in order).
        const id = table.units.id[0];
        const computed = (() => {
          const sizes = [3 * info.nEmbd, info.nEmbd, info.nInner, info.nEmbd];
          let x = 0;
          for (let s = 0; s < table.units.site[0]; s++) x += sizes[s & 3];
          return x + table.units.unit[0];
        })();
        const traceById = await sc.traceUnit({ sentence: pos[0], unit: id });
        const traceBySite = { ...traceById, computed, layerKind: [table.units.layer[0], table.units.kind[0], table.units.site[0]] };
        const base = await run({});
        const steered = await run({ steer: { vector: sv.vector, layer: 2, alpha: 6 } });
        const biased = await run({ bias });
        const experts = await run({ experts: [{ table, k: 50 }] });
        // Sessions are reused: a plain generation after steered and biased ones is the plain one.
        const again = await run({});
        // C API 0.11 through the package: the units forced, and a stop string from the plain text.
        const forced = (await sc.generate({ prompt: 'The weekend was', maxTokens: 2, temperature: 0, experts: [{ table, k: 50 }] }).done).forcedUnits;
        const stopString = base.slice(6, 9);
        let stoppedText = '';
        const stopped = await sc.generate({ prompt: 'The weekend was', maxTokens: 16, temperature: 0, stopAtEos: false, stopStrings: [stopString] },
          (t) => { stoppedText += t.text; }).done;
        const app = { forced, stop: stopped.stop, stoppedText, want: base.slice(0, base.indexOf(stopString)) };
        const errors = {
          badLength: await rejects(run({ steer: { vector: new Float32Array(3), layer: 2, alpha: 1 } })),
          badLayer: await rejects(run({ steer: { vector: sv.vector, layer: 99, alpha: 1 } })),
          badBias: await rejects(run({ bias: { tokens: [1, 2], bias: [1] } })),
          badUnit: await rejects(sc.traceUnit({ sentence: 'x', unit: 1e9 })),
          siteForm: await rejects(sc.traceUnit({ sentence: 'x', unit: { site: 0, unit: 1 } })),
          noSentences: await rejects(sc.steeringVector({ positive: [], negative: neg })),
        };
        const t0 = performance.now();
        const cmp = await sc.compareMethods({ table, positive: pos, negative: neg, prompts: ['The game'], seeds: 1, newTokens: 8,
          ks: [20], alphas: [4], betas: [6] });
        const compareMs = performance.now() - t0;
        return {
          nEmbd: info.nEmbd, nLayer: info.nLayer, words, sv: { isF32: sv.vector instanceof Float32Array, len: sv.vector.length, layer: sv.layer, norm: sv.norm },
          svDefaultLayer: svDefault.layer, bias, traceById, traceBySite, id, base, steered, biased, experts, again, errors, app,
          cmp: { methods: cmp.points.map((p) => `${p.method}:${p.strength}`), point: cmp.points[0], words: cmp.concept_words.length, norm: cmp.steer_norm }, compareMs,
        };
      } finally {
        sc.terminate();
      }
    }, { pos: football.positive, neg: football.negative });
    console.log(`package: words ${r.words.slice(0, 8).map((w) => w.word).join(', ')}; steer norm ${r.sv.norm.toFixed(2)}; ` +
      `${r.bias.tokens.length} bias tokens; compare ${r.cmp.methods.length} points in ${(r.compareMs / 1000).toFixed(1)} s`);
    console.log(`  base:    ${JSON.stringify(r.base)}\n  steered: ${JSON.stringify(r.steered)}\n  biased:  ${JSON.stringify(r.biased)}`);
    assert.deepEqual([r.app.forced, r.app.stop, r.app.stoppedText], [50, 'stop_string', r.app.want], JSON.stringify(r.app));
    assert.ok(r.words.length > 0 && r.words.length <= 10);
    assert.ok(r.words.every((w) => typeof w.word === 'string' && Number.isFinite(w.logOdds) && w.positive >= w.negative), JSON.stringify(r.words));
    assert.ok(r.words.some((w) => /football|league|team|cup|goal|club|soccer|player|match/i.test(w.word)), JSON.stringify(r.words));
    assert.deepEqual({ ...r.sv, norm: r.sv.norm > 0 }, { isF32: true, len: r.nEmbd, layer: 2, norm: true });
    assert.equal(r.svDefaultLayer, Math.floor(r.nLayer / 2));
    assert.ok(r.bias.tokens.length >= r.words.length / 2 && r.bias.tokens.length === r.bias.bias.length);
    assert.ok(r.bias.bias.every((b) => b === 10));
    assert.equal(r.traceBySite.computed, r.id, 'the engine\'s unit id is the UnitSpace numbering');
    const [layer, kind, site] = r.traceBySite.layerKind;
    assert.equal(layer * 4 + kind, site);
    assert.equal(r.traceById.unit, r.id);
    assert.equal(r.traceById.tokens.length, r.traceById.values.length);
    assert.ok(r.traceById.tokens.length > 5 && r.traceById.values.every(Number.isFinite));
    assert.notEqual(r.steered, r.base, 'the steering vector changes greedy output');
    assert.notEqual(r.biased, r.base, 'the logit bias changes greedy output');
    assert.notEqual(r.steered, r.experts);
    assert.equal(r.again, r.base, 'steering and bias are cleared for a plain generation on a reused session');
    // The library's own messages (the worker passes them on; it checks nothing itself).
    assert.match(r.errors.badLength, /steering vector has 3 values, the model's n_embd is \d+/);
    assert.match(r.errors.badLayer, /steering layer 99 out of range/);
    assert.match(r.errors.badBias, /2 tokens but 1 bias/);
    assert.match(r.errors.badUnit, /unit 1000000000 out of range/);
    assert.match(r.errors.siteForm, /unit must be a global unit id/);
    assert.notEqual(r.errors.noSentences, 'resolved');
    assert.deepEqual(r.cmp.methods, ['none:0', 'experts:20', 'steer:4', 'bias:6']);
    for (const k of ['mention_rate', 'ppl', 'scorer_ppl', 'self_bleu']) assert.ok(Number.isFinite(r.cmp.point[k]), `${k}: ${r.cmp.point[k]}`);
    assert.ok(r.cmp.words > 0 && r.cmp.norm > 0);
  });

  test('app: steering vector and logit bias change the conditioned column', async () => {
    assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
    const prompt = await page.inputValue('#prompt');
    await page.fill('#max-tokens', '24');
    // Expert units (the default).
    await page.click('#generate');
    await waitFor(page, generating, null, { timeout: T });
    const base = await page.textContent('#out-base');
    const experts = await page.textContent('#out-cond');
    assert.match(await page.textContent('#cond-title'), /football · k=50/);
    assert.notEqual(experts, base);

    // Steering vector: the slider becomes alpha, the block appears (n_layer / 2).
    await page.check('input[name="method"][value="steer"]');
    assert.equal(await page.getAttribute('#k', 'max'), '8');
    assert.equal(await page.getAttribute('#k', 'step'), '0.5');
    assert.equal(await page.inputValue('#k'), '4');
    assert.match(await page.textContent('#strength-unit'), /steering vector \(α\)/);
    assert.match(await page.getAttribute('#k', 'aria-label'), /steering vector/);
    assert.equal(await page.isVisible('#steer-layer'), true);
    const nLayer = Number((await page.textContent('#runtime-info')).match(/(\d+) layers/)[1]);
    assert.equal(Number(await page.inputValue('#steer-layer')), Math.floor(nLayer / 2));
    await page.click('#generate');
    await waitFor(page, generating, null, { timeout: T });
    const steered = await page.textContent('#out-cond');
    assert.equal(await page.textContent('#out-base'), base, 'same seed, same unconditioned text');
    assert.match(await page.textContent('#cond-title'), new RegExp(`steering α=4 \\(block ${Math.floor(nLayer / 2)}\\)`));
    assert.match(await page.textContent('#method-info'), /Steering vector of block \d+: .* 60 positive minus 60 negative sentences, norm/);
    assert.notEqual(steered, base, 'the steering vector changes the text');
    assert.notEqual(steered, experts, 'steering is not the experts');
    continuation(steered, prompt);

    // Logit bias: beta 0-10; at 10 the text uses one of the concept words.
    await page.check('input[name="method"][value="bias"]');
    assert.equal(await page.getAttribute('#k', 'max'), '10');
    assert.match(await page.textContent('#strength-unit'), /logit bias .*\(β\)/);
    assert.equal(await page.isHidden('#steer-layer-field'), true);
    await page.fill('#k', '10');
    await page.dispatchEvent('#k', 'input');
    assert.equal(await page.textContent('#k-out'), '10');
    await page.click('#generate');
    await waitFor(page, generating, null, { timeout: T });
    const biased = await page.textContent('#out-cond');
    assert.match(await page.textContent('#cond-title'), /logit bias β=10/);
    const words = (await page.getAttribute('#method-info', 'data-words')).split(' ');
    assert.ok(words.length >= 5, words.join(' '));
    assert.notEqual(biased, base);
    const text = continuation(biased, prompt).toLowerCase();
    assert.ok(words.some((w) => new RegExp(`\\b${w.toLowerCase().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\b`).test(text)),
      `beta 10 on ${words.join(', ')}: ${biased}`);

    // Back to experts: k is kept per method.
    await page.check('input[name="method"][value="experts"]');
    assert.equal(await page.inputValue('#k'), '50');
    assert.equal(await page.getAttribute('#k', 'max'), '200');
    await page.click('#generate');
    await waitFor(page, generating, null, { timeout: T });
    assert.equal(await page.textContent('#out-cond'), experts);
    console.log(`app: experts ${JSON.stringify(experts)}\n  steer ${JSON.stringify(steered)}\n  bias ${JSON.stringify(biased)}`);
  });

  test('app: Compare methods draws three lines from the unconditioned point and a table', async () => {
    await page.click('#compare');
    // The engine is busy: the buttons wait, the page answers.
    assert.equal(await page.isDisabled('#generate'), true);
    assert.equal(await page.isDisabled('#compare'), true);
    assert.match(await page.textContent('#compare-status'), /Running the three methods/);
    assert.equal(await page.evaluate(() => 1 + 1), 2);
    await page.waitForSelector('#compare-result:not([hidden])', { timeout: T });
    await waitFor(page, () => !document.querySelector('#compare').disabled, null, { timeout: T });
    assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
    assert.equal(await page.isDisabled('#generate'), false);
    const lines = await page.$$eval('#chart-compare g.series', (gs) => gs.map((g) => ({
      method: g.dataset.method, lines: g.querySelectorAll('path.series-line').length, points: g.querySelectorAll('circle').length,
      labels: [...g.querySelectorAll('text')].map((t) => t.textContent),
    })));
    assert.deepEqual(lines.map((l) => l.method), ['experts', 'steer', 'bias', 'none']);
    assert.deepEqual(lines.map((l) => l.lines), [1, 1, 1, 0]);
    assert.deepEqual(lines.map((l) => l.points), [3, 3, 3, 1]);
    assert.deepEqual(lines[0].labels, ['k=10', 'k=20', 'k=50']);
    assert.deepEqual(lines[1].labels, ['α=1', 'α=2', 'α=4']);
    assert.deepEqual(lines[2].labels, ['β=2', 'β=4', 'β=6']);
    // Each line starts at the unconditioned point.
    const starts = await page.$$eval('#chart-compare path.series-line', (ps) => ps.map((p) => p.getAttribute('d').split(' ')[0].slice(1)));
    const none = await page.$eval('#chart-compare g[data-method="none"] circle', (c) => `${Number(c.getAttribute('cx')).toFixed(1)},${Number(c.getAttribute('cy')).toFixed(1)}`);
    assert.deepEqual(starts, [none, none, none]);
    const rows = await page.$$eval('#compare-table tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
    assert.equal(rows.length, 10);
    assert.equal(rows[0][0], 'unconditioned');
    for (const row of rows) {
      assert.match(row[2], /^\d+%$/);
      assert.match(row[3], /^\d+\.\d$/);
      assert.match(row[4], /^\d\.\d{3}$/);
    }
    assert.match(await page.textContent('#compare-status'), /10 settings × 2 prompts × 2 seeds × 16 tokens/);
    await page.screenshot({ path: join(artifacts, 'app-compare.png'), fullPage: true });
  });

  test('app: the expert explorer lists the sentences where a unit fires most, tokens shaded', async () => {
    const units = await page.$$eval('#unit-list button', (bs) => bs.length);
    assert.equal(units, 20);
    // Keyboard: focus the second unit and press Enter.
    await page.focus('#unit-list li:nth-child(2) button');
    await page.keyboard.press('Enter');
    await waitFor(page, () => document.querySelectorAll('#explorer-list li').length === 10, null, { timeout: T });
    assert.equal(await page.getAttribute('#unit-list li:nth-child(2) button', 'aria-pressed'), 'true');
    assert.equal(await page.getAttribute('#unit-list li:nth-child(1) button', 'aria-pressed'), 'false');
    assert.match(await page.textContent('#explorer-title'), /Where unit L\d+ \S+ #\d+ fires · football/);
    assert.match(await page.textContent('#explorer-status'), /Top 10 of 120 sentences/);
    const items = await page.$$eval('#explorer-list li', (lis) => lis.map((li) => ({
      cls: li.className, max: Number(li.dataset.max), badge: li.querySelector('.badge').textContent,
      values: [...li.querySelectorAll('.tok')].map((t) => Number(t.dataset.value)),
      titled: [...li.querySelectorAll('.tok')].every((t) => /: -?\d+\.\d{3}$/.test(t.title) && /: -?\d+\.\d{2}$/.test(t.getAttribute('aria-label'))),
      shade: [...li.querySelectorAll('.tok')].map((t) => Number(t.style.getPropertyValue('--a'))),
    })));
    for (const it of items) {
      assert.ok(['pos', 'neg'].includes(it.cls));
      assert.equal(it.badge, it.cls === 'pos' ? 'concept' : 'other');
      assert.ok(it.values.length > 0 && it.titled);
      assert.equal(it.max, Math.max(...it.values), 'data-max is the largest token value');
      assert.ok(it.shade.every((a) => a >= 0 && a <= 1));
    }
    const maxes = items.map((it) => it.max);
    assert.deepEqual(maxes, [...maxes].sort((a, b) => b - a), 'sorted by the unit\'s largest response');
    // The shading follows the values: the overall peak is fully dark.
    assert.equal(Math.max(...items[0].shade), 1);
    // A top unit of football fires on football sentences.
    assert.ok(items.filter((it) => it.cls === 'pos').length >= 5, JSON.stringify(items.map((it) => it.cls)));
    // Clicking another unit replaces the list.
    await page.click('#unit-list li:nth-child(1) button');
    await waitFor(page, () => document.querySelector('#unit-list li:nth-child(1) button').getAttribute('aria-pressed') === 'true' &&
      /^Top 10/.test(document.querySelector('#explorer-status').textContent), null, { timeout: T });
    await page.screenshot({ path: join(artifacts, 'app-explorer.png'), fullPage: true });
  });

  test('app: a custom concept uses its typed sentences for the steering vector, the bias and the explorer', async () => {
    await page.fill('#custom-name', 'cooking');
    await page.fill('#custom-pos', POS.join('\n'));
    await page.fill('#custom-neg', NEG.join('\n'));
    await page.click('#rank');
    await page.waitForSelector('#downloads:not([hidden])', { timeout: T });
    assert.equal(await page.inputValue('#concept'), 'custom:cooking');
    await page.check('input[name="method"][value="steer"]');
    await page.click('#generate');
    await waitFor(page, generating, null, { timeout: T });
    assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
    assert.match(await page.textContent('#cond-title'), /cooking \(yours\) · steering α=4/);
    assert.match(await page.textContent('#method-info'), /6 positive minus 6 negative sentences/);
    assert.notEqual(await page.textContent('#out-cond'), await page.textContent('#out-base'));
    await page.check('input[name="method"][value="bias"]');
    await page.click('#generate');
    await waitFor(page, generating, null, { timeout: T });
    assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
    assert.match(await page.textContent('#cond-title'), /cooking \(yours\) · logit bias β=10/);
    const words = await page.getAttribute('#method-info', 'data-words');
    assert.ok(words.split(' ').length >= 3, words);
    assert.doesNotMatch(words, /\b(the|and|of|a)\b/, 'function words are not concept words');
    await page.click('#unit-list li:nth-child(1) button');
    await waitFor(page, () => /^Top 10 of 12 sentences/.test(document.querySelector('#explorer-status').textContent), null, { timeout: T });
    assert.equal(await page.$$eval('#explorer-list li', (l) => l.length), 10);
    await page.check('input[name="method"][value="experts"]');
  });

  test('the console has no errors and no CSP violations', () => {
    assert.deepEqual(problems, []);
  });
});
