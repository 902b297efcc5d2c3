// Smoke tests of the browser module (wasm/dist/selfcond.mjs, built by `wasm/build.sh st`) under
// Node: the tokenizer against the gpt-3-encoder reference vectors, step-wise generation on
// sessions, expert tables, forcing and ranking, all through the embind API the Web Worker uses
// (Model: the weights, once; Session: KV cache + forcing + generation).
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

function newSession(m, opts = {}) {
  const r = m.createSession(opts);
  assert.ok(r.ok, r.error);
  return r.session;
}

// One module and model for the tests; m: the Model, s: a Session on it.
let enginePromise = null;
function engine() {
  enginePromise ??= (async () => {
    const M = await loadModule();
    const m = new M.Model();
    const r = m.load(readFileSync(modelPath), { threads: 1 });
    assert.ok(r.ok, r.error);
    return { M, m, s: newSession(m) };
  })();
  return enginePromise;
}

test('module loads and reports its build', { skip: skipModule }, async () => {
  const M = await loadModule();
  const b = M.buildInfo();
  assert.deepEqual(b.backends.split(',').slice(0, 2), ['xnnpack', 'wasm_simd128']);
  const m = new M.Model();
  assert.equal(m.loaded(), false);
  const bad = m.load(new Uint8Array([1, 2, 3, 4]), {});
  assert.equal(bad.ok, false);
  assert.match(bad.error, /\S/);
  assert.equal(m.info().ok, false);
  assert.equal(m.createSession({}).ok, false);  // no model
  assert.equal(m.rankStep(1).ok, false);  // no ranking started
  m.delete();
});

test('tokenizer matches the gpt-3-encoder vectors', { skip: skipModel }, async () => {
  const { m: e } = await engine();
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

function generate(session, prompt, opts) {
  const s = session.startGeneration(prompt, opts);
  assert.ok(s.ok, s.error);
  let text = '';
  const tokens = [];
  for (let i = 0; i < 10000; ++i) {
    const r = session.step();
    assert.ok(r.ok, r.error);
    if (r.token >= 0) tokens.push(r.token);
    text += r.text;
    if (r.done) return { text, tokens, stop: r.stop };
  }
  assert.fail('generation did not stop');
}

test('step-wise generation', { skip: skipModel }, async () => {
  const { m, s: e } = await engine();
  const info = m.info();
  assert.equal(info.backend, 'xnnpack');
  assert.ok(info.packedBytes > 0);
  assert.equal(e.info().backend, 'xnnpack');
  assert.equal(e.info().nCtx, info.nCtx);
  assert.equal(e.step().ok, false);  // no generation started
  const a = generate(e, 'The football match', { maxNewTokens: 20, temperature: 0, stopAtEos: false });
  assert.equal(a.tokens.length, 20);
  assert.equal(a.stop, 'max_tokens');
  assert.equal(m.detokenize(a.tokens), a.text);
  // Deterministic: the same seed gives the same text; sampling is not greedy.
  const s1 = generate(e, 'Once upon a time', { maxNewTokens: 15, temperature: 1, seed: 7 });
  const s2 = generate(e, 'Once upon a time', { maxNewTokens: 15, temperature: 1, seed: 7 });
  assert.deepEqual(s1, s2);
  const bad = e.startGeneration('x', { temperature: -1 });
  assert.equal(bad.ok, false);
  // The context limit and its message come from the library's Generation.
  const long = e.startGeneration('word '.repeat(info.nCtx + 10), {});
  assert.equal(long.ok, false);
  assert.match(long.error, new RegExp(`prompt is \\d+ tokens; the context is ${info.nCtx}`));
  // Cancel: the next step ends the generation.
  assert.ok(e.startGeneration('Once upon a time', { maxNewTokens: 30 }).ok);
  assert.ok(e.step().ok);
  e.cancel();
  const c = e.step();
  assert.deepEqual([c.ok, c.done, c.stop], [true, true, 'cancelled']);
});

test('sessions of one model are independent (KV cache, forcing, generation)', { skip: skipModel }, async () => {
  const { m, s: a } = await engine();
  const b = newSession(m);
  const c = newSession(m, { nCtx: 16, kvType: 'f16' });
  try {
    assert.equal(c.info().nCtx, 16);
    assert.ok(c.info().kvCacheBytes < a.info().kvCacheBytes / 16);
    assert.equal(m.createSession({ kvType: 'f8' }).ok, false);
    const opts = { maxNewTokens: 12, temperature: 0.9, topK: 40, seed: 5, stopAtEos: false };
    const alone = generate(a, 'The football match', opts);
    // Two generations interleaved token by token give what each gives alone.
    assert.ok(a.startGeneration('The football match', opts).ok);
    assert.ok(b.startGeneration('Once upon a time', opts).ok);
    const out = [[], []];
    for (let done = [false, false]; !(done[0] && done[1]);) {
      [a, b].forEach((s, i) => {
        if (done[i]) return;
        const r = s.step();
        assert.ok(r.ok, r.error);
        if (r.token >= 0) out[i].push(r.token);
        done[i] = r.done;
      });
    }
    assert.deepEqual(out[0], alone.tokens);
    assert.deepEqual(out[1], generate(b, 'Once upon a time', opts).tokens);
    // A short context ends generation with context_full.
    const short = generate(c, 'The football match', { maxNewTokens: 50, temperature: 0, stopAtEos: false });
    assert.equal(short.stop, 'context_full');
    assert.equal(short.tokens.length, 16 - 3 + 1);  // the last token is sampled, not run
  } finally {
    b.delete();
    c.delete();
  }
});

test('ranking, expert tables and forcing', { skip: skipModel }, async () => {
  const { m: e, s } = await engine();
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
  const again = e.addExpertTable(json.text, {});
  assert.ok(again.ok, again.error);
  assert.equal(again.numUnits, t.numUnits);
  const csv = e.exportExpertTable(t.id, 'csv');
  assert.ok(csv.ok, csv.error);
  assert.match(csv.text, /^ap,off_mean,on_p50,on_p90,layer,unit,uuid,concept,group/);
  // An expertise.csv has no model hash: refused unless allowed.
  assert.match(e.addExpertTable(csv.text, {}).error, /no model_hash/);
  assert.ok(e.addExpertTable(csv.text, { allowUnhashed: true }).ok);
  assert.equal(e.addExpertTable('{"not": "a table"}', {}).ok, false);
  assert.equal(e.exportExpertTable(999, 'json').ok, false);

  // Forcing the experts changes greedy generation; clearing it restores it. The forcing is the
  // session's own: another session of the model is not affected, and removing the table later
  // leaves it in place.
  const opts = { maxNewTokens: 12, temperature: 0, stopAtEos: false };
  const base = generate(s, 'The weather today', opts);
  const copy = e.addExpertTable(json.text, {});
  const f = s.setForcing([{ id: copy.id, topK: 50 }], 'on_p90', false);
  assert.ok(f.ok, f.error);
  assert.equal(e.removeExpertTable(copy.id), true);
  assert.equal(e.removeExpertTable(copy.id), false);
  const forced = generate(s, 'The weather today', opts);
  assert.notDeepEqual(forced.tokens, base.tokens);
  const other = newSession(e);
  assert.deepEqual(generate(other, 'The weather today', opts).tokens, base.tokens);
  other.delete();
  s.clearForcing();
  const back = generate(s, 'The weather today', opts);
  assert.deepEqual(back.tokens, base.tokens);
  assert.equal(s.setForcing([{ id: 999, topK: 5 }], 'on_p50', false).ok, false);
  assert.equal(s.setForcing([{ id: t.id, topK: 5 }], 'bogus', false).ok, false);
  // finishRanking before every sentence ran is an error that keeps the ranking going.
  assert.ok(e.startRanking('football', pos, neg, {}).ok);
  assert.ok(e.rankStep(3).ok);
  assert.equal(e.finishRanking().ok, false);
  assert.equal(e.rankStep(100).done, 12);
  assert.ok(e.finishRanking().ok);
  assert.equal(e.startRanking('football', pos, [], {}).ok, false);  // no negatives
});

// The pthreads build: 2 threads must give exactly the single-threaded results (GEMMs split by
// output rows, ranking sentences by session: no reduction order changes).
const mtPath = join(here, '..', 'dist', 'selfcond-mt.mjs');
test('other steering methods, the unit trace and the comparison', { skip: skipModel }, async () => {
  const { m: e, s } = await engine();
  const concept = JSON.parse(readFileSync(join(repo, 'demo', 'concepts', 'football.json')));
  const pos = concept.sentences.positive.slice(0, 20);
  const neg = concept.sentences.negative.slice(0, 20);
  const words = e.conceptWords(pos, neg, 10);
  assert.ok(words.ok, words.error);
  assert.ok(words.words.length > 0);
  assert.ok(words.words.some((w) => w.word === 'football'), JSON.stringify(words.words));
  for (let i = 1; i < words.words.length; ++i) assert.ok(words.words[i - 1].logOdds >= words.words[i].logOdds);
  const v = e.steeringVector(pos, neg, 2);
  assert.ok(v.ok, v.error);
  assert.equal(v.vector.length, e.info().nEmbd);
  assert.ok(v.norm > 0);
  assert.equal(e.steeringVector(pos, neg, 99).ok, false);
  const bias = e.wordLogitBias(['football'], 10);
  assert.ok(bias.ok && bias.tokens.length > 0, bias.error);
  const plain = generate(s, 'Once upon a time', { maxNewTokens: 12, temperature: 0 });
  assert.ok(s.setLogitBias(bias.tokens, bias.bias).ok);
  const biased = generate(s, 'Once upon a time', { maxNewTokens: 12, temperature: 0 });
  assert.match(biased.text, /football/i);
  assert.ok(s.setLogitBias([], []).ok);
  assert.ok(s.setSteering(2, v.vector, 8).ok);
  const steered = generate(s, 'Once upon a time', { maxNewTokens: 12, temperature: 0 });
  assert.notEqual(steered.text, plain.text);
  assert.ok(s.setSteering(0, [], 0).ok);
  assert.equal(generate(s, 'Once upon a time', { maxNewTokens: 12, temperature: 0 }).text, plain.text);
  assert.equal(s.setSteering(99, v.vector, 1).ok, false);
  // The trace: one value per token; its first value does not depend on what follows.
  const trace = e.traceUnit(pos[0], 123);
  assert.ok(trace.ok, trace.error);
  assert.equal(trace.tokens.length, e.tokenize(pos[0]).length);
  assert.equal(trace.tokens.join(''), pos[0]);
  const first = e.traceUnit(trace.tokens[0], 123);
  assert.equal(first.values[0], trace.values[0]);
  assert.equal(e.traceUnit(pos[0], 1e9).ok, false);
  // The comparison on a table ranked here, small grids.
  const st = e.startRanking('football', pos, neg, {});
  assert.ok(st.ok, st.error);
  while (e.rankStep(20).done < st.total);
  const t = e.finishRanking();
  assert.ok(t.ok, t.error);
  const units = e.expertUnits(t.id, 3);
  assert.equal(units.id.length, 3);
  const cmp = e.compareMethods(t.id, pos, neg, {
    prompts: ['Once upon a time'], seeds: 1, newTokens: 8, ks: [10], alphas: [4], betas: [6],
  });
  assert.ok(cmp.ok, cmp.error);
  const r = JSON.parse(cmp.json);
  assert.deepEqual(r.points.map((p) => p.method), ['none', 'experts', 'steer', 'bias']);
  for (const p of r.points) assert.ok(p.ppl > 1 && p.mention_rate >= 0 && p.mention_rate <= 1);
});

test('pthreads build matches the single-threaded one', {
  skip: skipModel || (existsSync(mtPath) ? false : 'not built: run wasm/build.sh mt'),
}, async () => {
  const { m: e, s } = await engine();
  const { loadSelfcond } = await import(pathToFileURL(join(here, '..', 'loader.mjs')).href);
  const { Module, threaded } = await loadSelfcond({ threads: 2 });
  const mt = new Module.Model();
  try {
    assert.equal(threaded, true);
    assert.equal(Module.buildInfo().pthreads, true);
    const r = mt.load(readFileSync(modelPath), { threads: 2 });
    assert.ok(r.ok, r.error);
    assert.equal(mt.info().threads, 2);
    const mts = newSession(mt);
    const opts = { maxNewTokens: 16, temperature: 0.9, topK: 40, seed: 3, stopAtEos: false };
    const want = generate(s, 'In the beginning', opts);
    assert.deepEqual(generate(mts, 'In the beginning', opts), want);

    const concept = JSON.parse(readFileSync(join(repo, '..', 'shared', 'concepts', 'football_small.json')));
    const pos = concept.sentences.positive.slice(0, 5);
    const neg = concept.sentences.negative.slice(0, 5);
    const tables = [];
    for (const x of [e, mt]) {
      assert.ok(x.startRanking('football', pos, neg, { topN: 200 }).ok);
      // On the threaded model, a generation runs interleaved with the ranking (as in the
      // worker): both use the model's thread pool, one call at a time.
      const interleave = x === mt && mts.startGeneration('In the beginning', opts).ok;
      const tokens = [];
      while (x.rankStep(4).done < 10) {
        const g = interleave ? mts.step() : { token: -1 };
        if (g.token >= 0) tokens.push(g.token);
      }
      const t = x.finishRanking();
      assert.ok(t.ok, t.error);
      tables.push(x.exportExpertTable(t.id, 'csv').text);
      if (interleave) {
        for (let g = { done: false }; !g.done;) {
          g = mts.step();
          if (g.token >= 0) tokens.push(g.token);
        }
        assert.deepEqual(tokens, want.tokens);
      }
    }
    assert.equal(tables[1], tables[0]);
    mts.delete();
  } finally {
    mt.delete();  // joins the model's ThreadPool
    // The idle pre-spawned workers (PTHREAD_POOL_SIZE) would keep Node alive forever.
    Module.PThread.terminateAllThreads();
  }
});

// Against the native int8 build (needs SELFCOND_NATIVE_CLI): greedy continuations of
// reference.json's prompts are token-identical, and ranking football_small.json gives top-50
// expert sets that share at least 48 units. Both run XNNPACK, but its x86 and WASM kernels
// round differently in the last bits (~2e-7 relative), so results are close, not bit-identical.
test('matches the native int8 build on the reference prompts and football_small ranking', {
  skip: skipModel || (nativeCli && existsSync(nativeCli) ? false : 'set SELFCOND_NATIVE_CLI'),
}, async () => {
  const { m: e, s } = await engine();
  const ref = JSON.parse(readFileSync(join(repo, '..', 'shared', 'models', 'selfcond-mini-30m',
    'reference', 'reference.json')));
  for (const c of ref.cases) {
    const w = generate(s, c.prompt, { maxNewTokens: 20, temperature: 0, stopAtEos: false });
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
