// Smoke tests of the browser module (wasm/dist/selfcond.mjs, built by `wasm/build.sh st`) under
// Node: the tokenizer against the gpt-3-encoder reference vectors, step-wise generation, expert
// tables and ranking, all through the embind API the Web Worker uses.
//
//   SELFCOND_WASM_TEST_MODEL=path/to/model.scm node --test wasm/tests/
// Optional: SELFCOND_NATIVE_CLI=path/to/selfcond (the native build) to compare greedy generation
// with the native CLI token for token. Skipped when the module or the model is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const modulePath = join(here, '..', 'dist', 'selfcond.mjs');
const modelPath = process.env.SELFCOND_WASM_TEST_MODEL ?? '';
const nativeCli = process.env.SELFCOND_NATIVE_CLI ?? '';

// Emscripten 3.1.6's ES module output still calls require() / __dirname on Node.
async function loadModule() {
  globalThis.require ??= createRequire(import.meta.url);
  globalThis.__dirname ??= dirname(modulePath);
  const { default: create } = await import(pathToFileURL(modulePath).href);
  return create({ wasmBinary: readFileSync(modulePath.replace(/\.mjs$/, '.wasm')) });
}

const skipModule = existsSync(modulePath) ? false : `not built: run wasm/build.sh st`;
const skipModel = skipModule || (existsSync(modelPath) ? false : 'set SELFCOND_WASM_TEST_MODEL');

// CI (tests/run.sh) sets SELFCOND_WASM_REQUIRE=1: there a missing module or model is a failure,
// not a skip.
test('module and model are present when required', () => {
  if (process.env.SELFCOND_WASM_REQUIRE !== '1') return;
  assert.equal(skipModel, false, `required but ${skipModel}`);
  assert.ok(nativeCli && existsSync(nativeCli), 'required: SELFCOND_NATIVE_CLI');
});

let enginePromise = null;
function engine() {
  enginePromise ??= (async () => {
    const M = await loadModule();
    const e = new M.Engine();
    const r = e.load(readFileSync(modelPath), { threads: 1 });
    assert.ok(r.ok, r.error);
    return { M, e };
  })();
  return enginePromise;
}

test('module loads and reports its build', { skip: skipModule }, async () => {
  const M = await loadModule();
  const b = M.buildInfo();
  assert.deepEqual(b.backends.split(',').slice(0, 2), ['xnnpack', 'wasm_simd128']);
  const e = new M.Engine();
  assert.equal(e.loaded(), false);
  const bad = e.load(new Uint8Array([1, 2, 3, 4]), {});
  assert.equal(bad.ok, false);
  assert.match(bad.error, /\S/);
  assert.equal(e.step().ok, false);  // no generation started
  e.delete();
});

test('tokenizer matches the gpt-3-encoder vectors', { skip: skipModel }, async () => {
  const { e } = await engine();
  const vectors = JSON.parse(readFileSync(join(repo, 'tests', 'data', 'tokenizer_vectors.json')));
  let checked = 0;
  for (const c of vectors.cases) {
    if (/[\uD800-\uDFFF]/.test(c.text) && !/[\uD800-\uDBFF][\uDC00-\uDFFF]/.test(c.text)) continue;
    assert.deepEqual(Array.from(e.tokenize(c.text)), c.ids, JSON.stringify(c.text));
    assert.equal(e.detokenize(c.ids), c.text);
    ++checked;
  }
  assert.ok(checked >= 50, `only ${checked} vectors checked`);
});

function generate(e, prompt, opts) {
  const s = e.startGeneration(prompt, opts);
  assert.ok(s.ok, s.error);
  let text = '';
  const tokens = [];
  for (let i = 0; i < 10000; ++i) {
    const r = e.step();
    assert.ok(r.ok, r.error);
    if (r.token >= 0) tokens.push(r.token);
    text += r.text;
    if (r.done) return { text, tokens, stop: r.stop };
  }
  assert.fail('generation did not stop');
}

test('step-wise generation', { skip: skipModel }, async () => {
  const { e } = await engine();
  const info = e.info();
  assert.equal(info.backend, 'xnnpack');
  const a = generate(e, 'The football match', { maxNewTokens: 20, temperature: 0, stopAtEos: false });
  assert.equal(a.tokens.length, 20);
  assert.equal(a.stop, 'max_tokens');
  assert.equal(e.detokenize(a.tokens), a.text);
  // Deterministic: the same seed gives the same text; sampling is not greedy.
  const s1 = generate(e, 'Once upon a time', { maxNewTokens: 15, temperature: 1, seed: 7 });
  const s2 = generate(e, 'Once upon a time', { maxNewTokens: 15, temperature: 1, seed: 7 });
  assert.deepEqual(s1, s2);
  const bad = e.startGeneration('x', { temperature: -1 });
  assert.equal(bad.ok, false);
});

test('ranking, expert tables and forcing', { skip: skipModel }, async () => {
  const { e } = await engine();
  const concept = JSON.parse(readFileSync(join(repo, '..', 'shared', 'concepts', 'football_small.json')));
  const pos = concept.sentences.positive.slice(0, 6);
  const neg = concept.sentences.negative.slice(0, 6);
  // All units: a CSV is only importable with the model's whole unit space (it has no hash).
  const st = e.startRanking('football', pos, neg, {});
  assert.ok(st.ok, st.error);
  assert.equal(st.total, 12);
  let done = 0;
  while (done < st.total) {
    const r = e.rankStep(5);
    assert.ok(r.ok, r.error);
    assert.ok(r.done > done);
    done = r.done;
  }
  const t = e.finishRanking();
  assert.ok(t.ok, t.error);
  assert.equal(t.concept, 'football');
  assert.equal(t.numUnits, e.info().numUnits);
  const units = e.expertUnits(t.id, 10);
  assert.equal(units.ap.length, 10);
  for (let i = 1; i < 10; ++i) assert.ok(units.ap[i - 1] >= units.ap[i]);
  assert.match(units.layer[0], /^transformer\.h\.\d+\.(attn|mlp)\.c_(attn|proj|fc):0$/);

  // Round trip through both formats.
  const json = e.exportExpertTable(t.id, 'json');
  assert.ok(json.ok, json.error);
  const again = e.addExpertTable(json.text);
  assert.ok(again.ok, again.error);
  assert.equal(again.numUnits, t.numUnits);
  const csv = e.exportExpertTable(t.id, 'csv');
  assert.ok(csv.ok, csv.error);
  assert.match(csv.text, /^ap,off_mean,on_p50,on_p90,layer,unit,uuid,concept,group/);
  assert.ok(e.addExpertTable(csv.text).ok);
  assert.equal(e.addExpertTable('{"not": "a table"}').ok, false);

  // Forcing the experts changes greedy generation; clearing it restores it.
  const base = generate(e, 'The weather today', { maxNewTokens: 12, temperature: 0, stopAtEos: false });
  const f = e.setForcing([{ id: t.id, topK: 50 }], 'on_p90', false);
  assert.ok(f.ok, f.error);
  const forced = generate(e, 'The weather today', { maxNewTokens: 12, temperature: 0, stopAtEos: false });
  assert.notDeepEqual(forced.tokens, base.tokens);
  e.clearForcing();
  const back = generate(e, 'The weather today', { maxNewTokens: 12, temperature: 0, stopAtEos: false });
  assert.deepEqual(back.tokens, base.tokens);
  assert.equal(e.setForcing([{ id: 999, topK: 5 }], 'on_p50', false).ok, false);
});

// The pthreads build: 2 threads must give exactly the single-threaded results (GEMMs split by
// output rows, ranking sentences by session: no reduction order changes).
const mtPath = join(here, '..', 'dist', 'selfcond-mt.mjs');
test('pthreads build matches the single-threaded one', {
  skip: skipModel || (existsSync(mtPath) ? false : 'not built: run wasm/build.sh mt'),
}, async () => {
  const { e } = await engine();
  const { loadSelfcond } = await import(pathToFileURL(join(here, '..', 'loader.mjs')).href);
  const { Module, threaded } = await loadSelfcond({ threads: 2 });
  assert.equal(threaded, true);
  assert.equal(Module.buildInfo().pthreads, true);
  const mt = new Module.Engine();
  const r = mt.load(readFileSync(modelPath), { threads: 2 });
  assert.ok(r.ok, r.error);
  assert.equal(mt.info().threads, 2);
  const opts = { maxNewTokens: 16, temperature: 0.9, topK: 40, seed: 3, stopAtEos: false };
  assert.deepEqual(generate(mt, 'In the beginning', opts), generate(e, 'In the beginning', opts));

  const concept = JSON.parse(readFileSync(join(repo, '..', 'shared', 'concepts', 'football_small.json')));
  const pos = concept.sentences.positive.slice(0, 5);
  const neg = concept.sentences.negative.slice(0, 5);
  const tables = [];
  for (const x of [e, mt]) {
    assert.ok(x.startRanking('football', pos, neg, { topN: 200 }).ok);
    while (x.rankStep(4).done < 10) { /* progress */ }
    const t = x.finishRanking();
    assert.ok(t.ok, t.error);
    tables.push(x.exportExpertTable(t.id, 'csv').text);
  }
  assert.equal(tables[1], tables[0]);
  mt.delete();  // joins the engine's ThreadPool
  // The idle pre-spawned workers (PTHREAD_POOL_SIZE) would keep Node alive forever.
  Module.PThread.terminateAllThreads();
});

// Against the native int8 build (needs SELFCOND_NATIVE_CLI): greedy continuations of
// reference.json's prompts are token-identical, and ranking football_small.json gives top-50
// expert sets that share at least 48 units. Both run XNNPACK, but its x86 and WASM kernels
// round differently in the last bits (~2e-7 relative), so results are close, not bit-identical.
test('matches the native int8 build on the reference prompts and football_small ranking', {
  skip: skipModel || (nativeCli && existsSync(nativeCli) ? false : 'set SELFCOND_NATIVE_CLI'),
}, async () => {
  const { e } = await engine();
  const ref = JSON.parse(readFileSync(join(repo, '..', 'shared', 'models', 'selfcond-mini-30m',
    'reference', 'reference.json')));
  for (const c of ref.cases) {
    const w = generate(e, c.prompt, { maxNewTokens: 20, temperature: 0, stopAtEos: false });
    const r = spawnSync(nativeCli, ['generate', '--model', modelPath, '--prompt', c.prompt,
      '--max-tokens', '20', '--temperature', '0', '--no-stop', '--threads', '1'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(c.prompt + w.text, r.stdout.replace(/\n$/, ''), `prompt ${JSON.stringify(c.prompt)}`);
  }
  const conceptPath = join(repo, '..', 'shared', 'concepts', 'football_small.json');
  const concept = JSON.parse(readFileSync(conceptPath));
  const st = e.startRanking('football_small', concept.sentences.positive, concept.sentences.negative, {});
  assert.ok(st.ok, st.error);
  for (let done = 0; done < st.total;) {
    const r = e.rankStep(8);
    assert.ok(r.ok, r.error);
    done = r.done;
  }
  const t = e.finishRanking();
  assert.ok(t.ok, t.error);
  const w = e.expertUnits(t.id, 50);
  const out = join(tmpdir(), `selfcond-native-rank-${process.pid}.json`);
  const r = spawnSync(nativeCli, ['rank', '--model', modelPath, '--concept', conceptPath, '--out', out,
    '--threads', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const native = JSON.parse(readFileSync(out, 'utf8')).units;
  const key = (site, unit) => `${site}:${unit}`;
  const nativeTop = new Set();
  for (let i = 0; i < 50; ++i) nativeTop.add(key(native.site[i], native.unit[i]));
  let common = 0;
  for (let i = 0; i < 50; ++i) common += nativeTop.has(key(w.site[i], w.unit[i])) ? 1 : 0;
  console.log(`football_small top-50: WASM and native share ${common} units`);
  assert.ok(common >= 48, `top-50 overlap ${common} < 48`);
});
