// A Llama-family model in the app (issue 21): the model picker lists the models the page serves
// (a models index), the user picks a Llama-architecture model, ranks a small typed-in concept on
// it and generates conditioned text, with the charts drawn for its 7 linear layers per block.
// The model is tests/llama_reference.sh's random-init Llama 3 checkpoint (GQA, llama3 rope
// scaling, its own tokenizer.json), converted here by the native CLI: its text is noise, but
// every step of the pipeline runs on the Llama forward pass.
//
// Needs SELFCOND_LLAMA_REF (the reference data) and SELFCOND_NATIVE_CLI (tests/run.sh sets both).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launchBrowser, webDir, openPage, waitFor, browserSkip } from './harness.mjs';

const T = 180_000;
const artifacts = join(webDir, 'test-artifacts');
const ref = process.env.SELFCOND_LLAMA_REF ?? '';
const cli = process.env.SELFCOND_NATIVE_CLI ?? '';
const skip = browserSkip() || (!ref || !existsSync(join(ref, 'llama3', 'config.json')) ? 'set SELFCOND_LLAMA_REF'
  : !cli || !existsSync(cli) ? 'set SELFCOND_NATIVE_CLI' : false);
const generating = () => !document.querySelector('.caret') && !document.querySelector('#generate').disabled;

const POS = ['The striker scored a goal in the final minute.', 'The goalkeeper saved a penalty kick.',
  'Fans cheered as the team won the league.', 'The coach picked a new captain for the match.'];
const NEG = ['She baked bread in the morning.', 'The train left the station late.',
  'He painted the fence blue.', 'The library opens at nine.'];

describe('a Llama-family model in the app', { skip }, () => {
  let server, browser, page, problems;
  before(async () => {
    mkdirSync(artifacts, { recursive: true });
    const out = join(artifacts, 'llama3-tiny.scm');
    const r = spawnSync(cli, ['convert', join(ref, 'llama3'), out, '--name', 'llama3-tiny'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    // The page's models: the demo model (its preset tables) and the Llama one.
    writeFileSync(join(artifacts, 'models.json'), JSON.stringify({
      models: [
        { label: 'demo GPT-2', url: '../../demo/models/selfcond-mini-30m.scm', tables: true },
        { label: 'Llama 3 (random, tiny)', url: 'llama3-tiny.scm' },
      ],
    }));
    server = await startServer({ isolated: true });
    browser = await launchBrowser();
    ({ page, problems } = await openPage(browser.context, `${server.url}?nosw&models=/web/test-artifacts/models.json`, T));
  });
  after(async () => {
    await browser?.close();
    server?.stop();
  });

  test('the picker lists the served models; picking the Llama one loads it', async () => {
    const labels = await page.$$eval('#model-picker option', (o) => o.map((x) => x.textContent));
    assert.deepEqual(labels, ['demo GPT-2', 'Llama 3 (random, tiny)']);
    assert.match(await page.textContent('#runtime-info'), /selfcond-mini-30m/);
    await page.evaluate(() => { delete document.body.dataset.ready; });
    await page.selectOption('#model-picker', { label: 'Llama 3 (random, tiny)' });
    await page.waitForSelector('body[data-ready="1"]', { timeout: T });
    assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
    assert.match(await page.textContent('#runtime-info'), /llama3-tiny/);
    // The demo's concept library belongs to the demo model: a note, not an error.
    await page.waitForFunction(() => /built for/.test(document.getElementById('library-status').textContent), null, { timeout: T });
    assert.match(await page.textContent('#library-status'), /built for “selfcond-mini-30m”, not for “llama3-tiny”/);
    assert.equal(await page.isHidden('#banner'), true, await page.textContent('#banner-text'));
    // No preset tables on this model: they were ranked on the demo model.
    assert.deepEqual(await page.$$eval('#concept option', (o) => o.map((x) => x.value)), ['']);
    const legend = await page.$$eval('#legend-layers span', (s) => s.map((x) => x.textContent));
    assert.deepEqual(legend, ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj',
      'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']);
  });

  test('ranks a typed-in concept and generates conditioned text on it', async () => {
    await page.fill('#custom-name', 'football');
    await page.fill('#custom-pos', POS.join('\n'));
    await page.fill('#custom-neg', NEG.join('\n'));
    await page.click('#rank');
    await page.waitForSelector('#downloads:not([hidden])', { timeout: T });
    assert.match(await page.textContent('#rank-result'), /4 \+ 4 sentences ranked/);
    assert.equal(await page.inputValue('#concept'), 'custom:football');
    assert.ok(await page.$$eval('#chart-layers rect', (r) => r.length) > 0, 'layer chart drawn');
    // The explorer names units by the model's layers.
    assert.match(await page.textContent('#unit-list'), /L\d+ (self_attn|mlp)\.\w+_proj #\d+/);
    await page.fill('#max-tokens', '12');
    await page.fill('#temperature', '0');
    await page.click('#generate');
    await waitFor(page, generating, null, { timeout: T });
    assert.match(await page.textContent('#meta-base'), /^12 tokens/);
    assert.match(await page.textContent('#meta-cond'), /^12 tokens/);
    assert.match(await page.textContent('#cond-title'), /football/);
    // Forcing 50 experts changes the greedy continuation (same seed, temperature 0).
    assert.notEqual(await page.textContent('#out-base'), await page.textContent('#out-cond'));
  });

  test('the console has no errors and no CSP violations', () => {
    assert.deepEqual(problems, []);
  });
});
