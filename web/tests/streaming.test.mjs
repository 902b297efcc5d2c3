// The app after the speed work (web/README.md, "App speed"): the worker sends tokens in batches
// and steps generations in time slices, the page writes the text at most every 100 ms, ranking
// steps are sized by time. Functional checks only (no timing): every token reaches the page in
// order, the app's text is exactly the library's for the same settings, text shows up before a
// long generation ends, Stop still works, and the app's ranking gives the library's table.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launchBrowser, webDir, openPage, waitFor, browserSkip } from './harness.mjs';

const skip = browserSkip();
const T = 180_000;
const haveMt = existsSync(join(webDir, 'lib', 'engine', 'selfcond-mt.wasm'));
const POS = ['The striker scored a late goal.', 'The goalkeeper saved the penalty kick.', 'Fans sang in the stadium.',
  'The referee showed him a red card.', 'Our team won the league title.', 'He headed the ball into the net.'];
const NEG = ['The cat slept on the warm sofa.', 'She baked bread this morning.', 'The river flows into the sea.',
  'I bought a new phone yesterday.', 'The meeting starts at nine.', 'Rain fell all night long.'];
const idle = () => !document.querySelector('.caret') && !document.querySelector('#generate').disabled;

for (const isolated of [true, false]) {
  describe(`streaming and ranking, ${isolated ? 'threaded' : 'single-threaded'} build`, { skip: skip || (isolated && !haveMt ? 'no threaded build' : false) }, () => {
    let server, browser, page, problems;
    before(async () => {
      server = await startServer({ isolated });
      browser = await launchBrowser();
      ({ page, problems } = await openPage(browser.context, `${server.url}?nosw&testhooks`, T));
    });
    after(async () => {
      await browser?.close();
      server?.stop();
    });

    test('the library delivers every token once, in order, in two concurrent streams', async () => {
      const r = await page.evaluate(async () => {
        const sc = window.selfcondApp.sc;
        const streams = [0, 1].map((seed) => {
          const got = { indexes: [], tokens: [], text: '' };
          const g = sc.generate({ prompt: 'The game', maxTokens: 120, seed, temperature: 0.8, topK: 40, stopAtEos: false }, (t) => {
            if (t.token >= 0) {
              got.indexes.push(t.index);
              got.tokens.push(t.token);
            }
            got.text += t.text;
          });
          return g.done.then((res) => ({ ...got, res }));
        });
        const out = await Promise.all(streams);
        // The same tokens' text, decoded in one go.
        for (const s of out) s.decoded = await sc.detokenize(s.tokens);
        return out;
      });
      for (const s of r) {
        assert.equal(s.res.tokens, 120);
        assert.deepEqual(s.indexes, Array.from({ length: 120 }, (_, i) => i + 1));
        assert.equal(s.text, s.decoded);
      }
      assert.notEqual(r[0].text, r[1].text, 'different seeds, different texts');
    });

    test('the page shows exactly the streamed text, and shows it before the end', async () => {
      await page.fill('#max-tokens', '200');
      await page.fill('#seed', '5');
      await page.fill('#k', '0');
      await page.dispatchEvent('#k', 'input');
      // Watch the columns: text must appear while the generation is still running.
      await page.evaluate(() => {
        window.__seenEarly = false;
        const mo = new MutationObserver(() => {
          if (document.querySelector('#out-base .body')?.textContent && document.querySelector('.caret')) {
            window.__seenEarly = true;
            mo.disconnect();
          }
        });
        mo.observe(document.querySelector('#out-base'), { subtree: true, childList: true, characterData: true });
      });
      await page.click('#generate');
      await waitFor(page, idle, null, { timeout: T });
      assert.equal(await page.evaluate(() => window.__seenEarly), true, 'no text before the generation ended');
      const shown = await page.textContent('#out-base .body');
      // With k = 0 both columns run the same settings and seed.
      assert.equal(await page.textContent('#out-cond .body'), shown);
      const expected = await page.evaluate(async () => {
        let text = '';
        const g = window.selfcondApp.sc.generate({ prompt: 'Once upon a time', maxTokens: 200, seed: 5, temperature: 0.8, topK: 40, topP: 0.95 }, (t) => {
          text += t.text;
        });
        const r = await g.done;
        return { text, tokens: r.tokens };
      });
      assert.equal(shown, expected.text);
      assert.match(await page.textContent('#meta-base'), new RegExp(`^${expected.tokens} tokens`));
      await page.fill('#k', '50');
      await page.dispatchEvent('#k', 'input');
    });

    test('Stop ends both streams with the text so far', async () => {
      await page.fill('#max-tokens', '255');
      await page.click('#generate');
      await waitFor(page, () => document.querySelector('#out-cond .body')?.textContent.length > 0, null, { timeout: T });
      await page.click('#stop');
      await waitFor(page, idle, null, { timeout: T });
      for (const id of ['#meta-base', '#meta-cond']) {
        const meta = await page.textContent(id);
        assert.match(meta, /stopped/);
        assert.ok(Number(meta.match(/^(\d+) tokens/)[1]) < 255, meta);
      }
      assert.ok((await page.textContent('#out-base .body')).length > 0);
      await page.fill('#max-tokens', '60');
    });

    test("the app's ranking gives the library's table, with progress to the end", async () => {
      await page.fill('#custom-name', 'kick');
      await page.fill('#custom-pos', [...POS, ...POS].join('\n'));
      await page.fill('#custom-neg', [...NEG, ...NEG].join('\n'));
      await page.evaluate(() => {
        window.__progress = [];
        const label = document.querySelector('#rank-label');
        new MutationObserver(() => window.__progress.push(label.textContent)).observe(label, { childList: true, characterData: true, subtree: true });
      });
      await page.click('#rank');
      await page.waitForSelector('#downloads:not([hidden])', { timeout: T });
      assert.match(await page.textContent('#rank-result'), /12 \+ 12 sentences ranked/);
      assert.equal(await page.inputValue('#concept'), 'custom:kick');
      const progress = await page.evaluate(() => window.__progress);
      assert.equal(progress.at(-1), '24 / 24 sentences');
      const same = await page.evaluate(async ({ pos, neg }) => {
        const sc = window.selfcondApp.sc;
        const lib = await sc.rank({ positive: pos, negative: neg, concept: 'kick' });
        // The app downloads its table's CSV: compare that text with the library's export.
        const libCsv = await lib.export('csv');
        await sc.removeTable(lib);
        return libCsv;
      }, { pos: [...POS, ...POS], neg: [...NEG, ...NEG] });
      const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#dl-csv')]);
      assert.equal(readFileSync(await dl.path(), 'utf8'), same);
      await page.selectOption('#concept', 'football');
    });

    test('no console errors', () => {
      assert.deepEqual(problems, []);
    });
  });
}
