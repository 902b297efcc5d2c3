// The WebAssembly module under Node: the C API (include/selfcond/selfcond.h) compiled to wasm,
// called through web/lib/engine/capi-runtime.js exactly as the browser's worker calls it. The
// tokenizer against the gpt-3-encoder reference vectors, step-wise generation on sessions,
// expert tables, forcing, ranking, the other steering methods, choose-k and compare, the
// pthreads build against the single-threaded one, and the native build's greedy text and
// ranking.
//
//   SELFCOND_WASM_TEST_MODEL=path/to/model.scm node --test wasm/tests/
// Optional: SELFCOND_NATIVE_CLI=path/to/selfcond (the native build) to compare greedy generation
// with the native CLI token for token. Skipped when the module or the model is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = join(here, '..', 'dist');
const modulePath = join(dist, 'selfcond.mjs');
const mtPath = join(dist, 'selfcond-mt.mjs');
const modelPath = process.env.SELFCOND_WASM_TEST_MODEL ?? '';
const nativeCli = process.env.SELFCOND_NATIVE_CLI ?? '';
const { loadSelfcond } = await import(pathToFileURL(join(here, '..', '..', 'web', 'lib', 'engine', 'loader.mjs')).href);
const { CApi, CApiError } = await import(pathToFileURL(join(repo, 'web', 'lib', 'engine', 'capi-runtime.js')).href);
const { STRUCTS } = await import(pathToFileURL(join(repo, 'web', 'lib', 'engine', 'capi.js')).href);

const skipModule = existsSync(modulePath) ? false : 'not built: run wasm/build.sh st';
const skipModel = skipModule || (existsSync(modelPath) ? false : 'set SELFCOND_WASM_TEST_MODEL');

// CI (tests/run.sh) sets SELFCOND_WASM_REQUIRE=1: there a missing module or model is a failure,
// not a skip.
test('module and model are present when required', () => {
  if (process.env.SELFCOND_WASM_REQUIRE !== '1') return;
  assert.equal(skipModel, false, `required but ${skipModel}`);
  assert.ok(nativeCli && existsSync(nativeCli), 'required: SELFCOND_NATIVE_CLI');
});

// The C API as a test drives it: handles in, objects out (each helper is one or two calls).
class Engine {
  constructor(Module) {
    this.M = Module;
    this.c = new CApi(Module);
  }

  buildInfo() {
    return this.c.scoped((a) => {
      const out = a.out();
      this.c.call('selfcond_build_info_to_string', out);
      return JSON.parse(this.c.takeString(a.u32(out)));
    });
  }

  load(bytes, params = {}) {
    const p = this.M._malloc(bytes.length);
    this.M.HEAPU8.set(bytes, p);
    return this.c.scoped((a) => {
      const out = a.out();
      this.c.call('selfcond_model_load_owned', p, bytes.length, a.params('selfcond_model_params', params), out);
      return a.u32(out);
    });
  }

  info(model) {
    return this.c.scoped((a) => {
      const p = a.alloc(512);
      this.c.raw('selfcond_model_get_info', model, p);
      return this.c.read('selfcond_model_info', p);
    });
  }

  session(model, params = {}) {
    return this.c.scoped((a) => {
      const out = a.out();
      this.c.call('selfcond_session_create', model, a.params('selfcond_session_params', params), out);
      return a.u32(out);
    });
  }

  sessionInfo(s) {
    return this.c.scoped((a) => {
      const p = a.alloc(64);
      this.c.raw('selfcond_session_get_info', s, p);
      return this.c.read('selfcond_session_info', p);
    });
  }

  start(session, prompt, params = {}) {
    return this.c.scoped((a) => {
      const out = a.out();
      this.c.call('selfcond_generation_start', session, a.str(prompt), a.params('selfcond_generate_params', params), out);
      return a.u32(out);
    });
  }

  next(gen) {
    return this.c.scoped((a) => {
      const p = a.alloc(64);
      this.c.call('selfcond_generation_next', gen, p);
      return this.c.read('selfcond_generation_step', p);
    });
  }

  generate(session, prompt, params = {}) {
    const g = this.start(session, prompt, params);
    try {
      let text = '';
      const tokens = [];
      for (let i = 0; i < 10000; ++i) {
        const r = this.next(g);
        if (r.token >= 0) tokens.push(r.token);
        text += r.piece;
        if (r.done) return { text, tokens, stop: r.stop };
      }
      assert.fail('generation did not stop');
    } finally {
      this.c.raw('selfcond_generation_free', g);
    }
  }

  tokenize(model, text) {
    return this.c.scoped((a) => {
      const s = a.str(text);
      const n = a.out();
      this.c.call('selfcond_tokenize', model, s, 0, 0, n);
      const cap = a.u32(n);
      const out = a.alloc(4 * cap);
      this.c.call('selfcond_tokenize', model, s, out, cap, n);
      return Array.from(new Int32Array(this.c.u8.slice(out, out + 4 * cap).buffer));
    });
  }

  detokenize(model, ids) {
    return this.c.scoped((a) => {
      const out = a.out();
      this.c.call('selfcond_detokenize_to_string', model, a.array('i32', ids), ids.length, out);
      return this.c.takeString(a.u32(out));
    });
  }

  rank(model, concept, pos, neg, params = {}, step = 5) {
    const r = this.c.scoped((a) => {
      const out = a.out();
      this.c.call('selfcond_ranking_start', model, a.str(concept), a.strs(pos), pos.length, a.strs(neg), neg.length,
        a.params('selfcond_rank_params', params), out);
      return a.u32(out);
    });
    try {
      for (let done = 0; done < pos.length + neg.length;) {
        done = this.c.scoped((a) => {
          const d = a.out();
          this.c.call('selfcond_ranking_step', r, step, d, 0);
          return a.u32(d);
        });
      }
      return this.c.scoped((a) => {
        const out = a.out();
        this.c.call('selfcond_ranking_finish', r, out);
        return a.u32(out);
      });
    } finally {
      this.c.raw('selfcond_ranking_free', r);
    }
  }

  units(experts, count) {
    return this.c.scoped((a) => {
      const size = STRUCTS.selfcond_expert_unit.size;
      const buf = a.alloc(size * count);
      const n = a.out();
      this.c.call('selfcond_experts_get_units', experts, 0, buf, count, n);
      return Array.from({ length: a.u32(n) }, (_, i) => this.c.read('selfcond_expert_unit', buf + i * size));
    });
  }

  tableText(experts, format) {
    return this.c.scoped((a) => {
      const out = a.out();
      this.c.call('selfcond_experts_to_string', experts, format, out);
      return this.c.takeString(a.u32(out));
    });
  }

  loadTable(model, text, params = {}) {
    return this.c.scoped((a) => {
      const out = a.out();
      const b = this.c.encoder.encode(text);
      const p = a.alloc(b.length);
      this.c.u8.set(b, p);
      this.c.call('selfcond_experts_load_memory_ex', model, p, b.length, a.params('selfcond_experts_params', params), out);
      return a.u32(out);
    });
  }

  force(session, sources, value = 'on_p50') {
    this.c.scoped((a) => {
      this.c.call('selfcond_session_set_forcing', session, a.structs('selfcond_forcing_source', sources), sources.length, value, 0);
    });
  }

  dataset(pos, neg) {
    return this.c.scoped((a) => {
      const out = a.out();
      this.c.call('selfcond_dataset_create', a.str('concept'), a.strs(pos), pos.length, a.strs(neg), neg.length, out);
      return a.u32(out);
    });
  }
}

// One module and model for the tests.
let enginePromise = null;
function engine() {
  enginePromise ??= (async () => {
    const { Module } = await loadSelfcond({ baseUrl: pathToFileURL(`${dist}/`), threads: 1 });
    const e = new Engine(Module);
    const model = e.load(readFileSync(modelPath), { threads: 1 });
    return { e, model, s: e.session(model) };
  })();
  return enginePromise;
}

test('module loads, reports its build, refuses a bad model file', { skip: skipModule }, async () => {
  const { Module } = await loadSelfcond({ baseUrl: pathToFileURL(`${dist}/`), threads: 1 });
  const e = new Engine(Module);
  const b = e.buildInfo();
  assert.deepEqual(b.backends.slice(0, 2), ['xnnpack', 'wasm_simd128']);
  assert.equal(b.pthreads, false);
  assert.equal(b.version, e.c.version);
  assert.throws(() => e.load(new Uint8Array([1, 2, 3, 4])), (err) => err instanceof CApiError && /\S/.test(err.message));
  // Options are checked by name: a typo is an error that lists the real fields.
  assert.throws(() => e.c.scoped((a) => a.params('selfcond_generate_params', { maxTokens: 5 })), /unknown option 'maxTokens'.*maxNewTokens/);
  assert.throws(() => e.c.scoped((a) => a.params('selfcond_session_params', { kvType: 'f8' })), /unknown value 'f8'/);
});

test('tokenizer matches the gpt-3-encoder vectors', { skip: skipModel }, async () => {
  const { e, model } = await engine();
  const vectors = JSON.parse(readFileSync(join(repo, 'tests', 'data', 'tokenizer_vectors.json')));
  let checked = 0;
  for (const c of vectors.cases) {
    if (/[\uD800-\uDFFF]/.test(c.text) && !/[\uD800-\uDBFF][\uDC00-\uDFFF]/.test(c.text)) continue;
    assert.deepEqual(e.tokenize(model, c.text), c.ids, JSON.stringify(c.text));
    assert.equal(e.detokenize(model, c.ids), c.text);
    ++checked;
  }
  assert.ok(checked >= 50, `only ${checked} vectors checked`);
});

test('step-wise generation', { skip: skipModel }, async () => {
  const { e, model, s } = await engine();
  const info = e.info(model);
  assert.equal(info.arch, 'gpt2');
  assert.ok(info.packedBytes > 0);
  assert.equal(e.sessionInfo(s).backend, 'xnnpack');
  assert.equal(e.sessionInfo(s).nCtx, info.nCtx);
  const a = e.generate(s, 'The football match', { maxNewTokens: 20, temperature: 0, stopAtEos: false });
  assert.equal(a.tokens.length, 20);
  assert.equal(a.stop, 'max_tokens');
  assert.equal(e.detokenize(model, a.tokens), a.text);
  // Deterministic: the same seed gives the same text.
  const s1 = e.generate(s, 'Once upon a time', { maxNewTokens: 15, temperature: 1, seed: 7 });
  const s2 = e.generate(s, 'Once upon a time', { maxNewTokens: 15, temperature: 1, seed: 7 });
  assert.deepEqual(s1, s2);
  assert.throws(() => e.start(s, 'x', { temperature: -1 }), /temperature/);
  // The context limit and its message come from the library's Generation.
  assert.throws(() => e.start(s, 'word '.repeat(info.nCtx + 10)), new RegExp(`prompt is \\d+ tokens; the context is ${info.nCtx}`));
  // Cancel: the next step ends the generation.
  const g = e.start(s, 'Once upon a time', { maxNewTokens: 30 });
  e.next(g);
  e.c.raw('selfcond_generation_cancel', g);
  const c = e.next(g);
  assert.deepEqual([c.done, c.stop], [true, 'cancelled']);
  e.c.raw('selfcond_generation_free', g);
});

test('apps: stop strings, repetition penalty, keep_context, session budget, forced units (C API 0.11)', { skip: skipModel }, async () => {
  const { e, model, s } = await engine();
  const greedy = { temperature: 0, stopAtEos: false };
  const whole = e.generate(s, 'The football match', { ...greedy, maxNewTokens: 16 });
  // A stop string from the middle of the greedy text: the text ends before it.
  let at = 8;
  while (whole.text.indexOf(whole.text.slice(at, at + 3)) !== at) at++;
  const stopped = e.generate(s, 'The football match', { ...greedy, maxNewTokens: 16, stopStrings: [whole.text.slice(at, at + 3)] });
  assert.equal(stopped.stop, 'stop_string');
  assert.equal(stopped.text, whole.text.slice(0, at));
  assert.throws(() => e.start(s, 'x', { stopStrings: [''] }), /stop string 0/);
  // keep_context: 8 + 8 tokens continued with "" are the greedy 16 (on an emptied cache: with
  // keep_context a prompt goes after what the session holds).
  e.c.raw('selfcond_session_reset', s);
  const a = e.generate(s, 'The football match', { ...greedy, maxNewTokens: 8, keepContext: true });
  const b = e.generate(s, '', { ...greedy, maxNewTokens: 8, keepContext: true });
  assert.equal(a.text + b.text, whole.text);
  // The penalty changes a repetitive greedy text and is refused out of range.
  // (the native test checks it token for token against its definition on eval's logits)
  const rep = e.generate(s, 'The game the game the game', { ...greedy, maxNewTokens: 10 });
  const pen = e.generate(s, 'The game the game the game', { ...greedy, maxNewTokens: 10, repeatPenalty: 5, repeatLastN: -1 });
  assert.notDeepEqual(pen.tokens, rep.tokens);
  const firstNew = (t) => t.findIndex((x, i) => x !== rep.tokens[i]);
  const i = firstNew(pen.tokens);
  const seen = [...e.tokenize(model, 'The game the game the game'), ...rep.tokens.slice(0, i)];
  assert.ok(i >= 0 && seen.includes(rep.tokens[i]), 'the penalty changed the text where the plain one repeats a token');
  assert.throws(() => e.start(s, 'x', { repeatPenalty: 0 }), /repeat penalty/);
  // A session budget below its KV cache is refused with RESOURCE_EXHAUSTED.
  assert.throws(() => e.session(model, { maxMemoryBytes: 65536 }), /RESOURCE_EXHAUSTED|memory/);
  // forced_units counts a k beyond the table as the table's size.
  const t = e.rank(model, 'football', ['The striker scored a goal.', 'The match ended in a draw.'], ['The cake was sweet.', 'I read a book.'], { topN: 25 });
  e.force(s, [{ experts: t, topK: 10 }]);
  assert.equal(Number(e.sessionInfo(s).forcedUnits), 10);
  e.force(s, [{ experts: t, topK: 100 }]);
  assert.equal(Number(e.sessionInfo(s).forcedUnits), 25);
  e.force(s, []);
  assert.equal(Number(e.sessionInfo(s).forcedUnits), 0);
});

test('sessions of one model are independent (KV cache, forcing, generation)', { skip: skipModel }, async () => {
  const { e, model, s: a } = await engine();
  const b = e.session(model);
  const c = e.session(model, { nCtx: 16, kvType: 'f16' });
  try {
    assert.equal(e.sessionInfo(c).nCtx, 16);
    assert.ok(e.sessionInfo(c).kvCacheBytes < e.sessionInfo(a).kvCacheBytes / 16);
    const opts = { maxNewTokens: 12, temperature: 0.9, topK: 40, seed: 5, stopAtEos: false };
    const alone = e.generate(a, 'The football match', opts);
    // Two generations interleaved token by token give what each gives alone.
    const gens = [e.start(a, 'The football match', opts), e.start(b, 'Once upon a time', opts)];
    const out = [[], []];
    for (let done = [false, false]; !(done[0] && done[1]);) {
      gens.forEach((g, i) => {
        if (done[i]) return;
        const r = e.next(g);
        if (r.token >= 0) out[i].push(r.token);
        done[i] = r.done;
      });
    }
    gens.forEach((g) => e.c.raw('selfcond_generation_free', g));
    assert.deepEqual(out[0], alone.tokens);
    assert.deepEqual(out[1], e.generate(b, 'Once upon a time', opts).tokens);
    // A short context ends generation with context_full.
    const short = e.generate(c, 'The football match', { maxNewTokens: 50, temperature: 0, stopAtEos: false });
    assert.equal(short.stop, 'context_full');
    assert.equal(short.tokens.length, 16 - 3 + 1);  // the last token is sampled, not run
  } finally {
    e.c.raw('selfcond_session_free', b);
    e.c.raw('selfcond_session_free', c);
  }
});

test('ranking, expert tables and forcing', { skip: skipModel }, async () => {
  const { e, model, s } = await engine();
  const concept = JSON.parse(readFileSync(join(repo, '..', 'shared', 'concepts', 'football_small.json')));
  const pos = concept.sentences.positive.slice(0, 6);
  const neg = concept.sentences.negative.slice(0, 6);
  const t = e.rank(model, 'football', pos, neg);
  const units = e.units(t, 10);
  assert.equal(units.length, 10);
  for (let i = 1; i < 10; ++i) assert.ok(units[i - 1].ap >= units[i].ap);
  const name = e.c.scoped((a) => {
    const out = a.out();
    e.c.call('selfcond_unit_to_string', model, units[0].unitId, out, 0);
    return e.c.takeString(a.u32(out));
  });
  assert.match(name, /^transformer\.h\.\d+\.(attn|mlp)\.c_(attn|proj|fc):0$/);
  assert.equal(units[0].layer * 4 + units[0].kind, units[0].site);
  // Round trip through both formats.
  const json = e.tableText(t, 'json');
  const again = e.loadTable(model, json);
  const csv = e.tableText(t, 'csv');
  assert.match(csv, /^ap,off_mean,on_p50,on_p90,layer,unit,uuid,concept,group/);
  // An expertise.csv has no model hash: refused unless allowed.
  assert.throws(() => e.loadTable(model, csv), /no model_hash/);
  e.c.raw('selfcond_experts_free', e.loadTable(model, csv, { allowUnhashed: true }));
  assert.throws(() => e.loadTable(model, '{"not": "a table"}'), CApiError);
  // Forcing the experts changes greedy generation; clearing it restores it. The forcing is the
  // session's own: freeing the table later leaves it in place.
  const opts = { maxNewTokens: 12, temperature: 0, stopAtEos: false };
  const base = e.generate(s, 'The weather today', opts);
  e.force(s, [{ experts: again, topK: 50 }], 'on_p90');
  e.c.raw('selfcond_experts_free', again);
  const forced = e.generate(s, 'The weather today', opts);
  assert.notDeepEqual(forced.tokens, base.tokens);
  e.force(s, []);
  assert.deepEqual(e.generate(s, 'The weather today', opts).tokens, base.tokens);
  assert.throws(() => e.force(s, [{ experts: t, topK: 5 }], 'bogus'), /unknown value 'bogus'/);
  assert.throws(() => e.rank(model, 'football', pos, []), /no negative sentences/);
  e.c.raw('selfcond_experts_free', t);
});

test('other steering methods, the unit trace, choose-k and compare', { skip: skipModel }, async () => {
  const { e, model, s } = await engine();
  const concept = JSON.parse(readFileSync(join(repo, 'demo', 'concepts', 'football.json')));
  const pos = concept.sentences.positive.slice(0, 20);
  const neg = concept.sentences.negative.slice(0, 20);
  const ds = e.dataset(pos, neg);
  try {
    const words = e.c.scoped((a) => {
      const out = a.out();
      e.c.call('selfcond_concept_words_to_string', ds, 10, out);
      return JSON.parse(e.c.takeString(a.u32(out)));
    });
    assert.ok(words.some((w) => w.word === 'football'), JSON.stringify(words));
    const info = e.info(model);
    const v = e.c.scoped((a) => {
      const out = a.alloc(4 * info.nEmbd);
      e.c.call('selfcond_steering_vector', model, ds, 2, 'int8', out, info.nEmbd);
      return new Float32Array(e.c.u8.slice(out, out + 4 * info.nEmbd).buffer);
    });
    assert.ok(Math.hypot(...v) > 0);
    const plain = e.generate(s, 'Once upon a time', { maxNewTokens: 12, temperature: 0 });
    e.c.scoped((a) => e.c.call('selfcond_session_set_steering', s, 2, a.array('f32', v), v.length, 8));
    assert.notEqual(e.generate(s, 'Once upon a time', { maxNewTokens: 12, temperature: 0 }).text, plain.text);
    e.c.call('selfcond_session_set_steering', s, 0, 0, 0, 0);
    assert.equal(e.generate(s, 'Once upon a time', { maxNewTokens: 12, temperature: 0 }).text, plain.text);
    // The trace: one value per token; its maximum is what ranking pools.
    const trace = e.c.scoped((a) => {
      const n = a.out();
      const text = a.str(pos[0]);
      e.c.call('selfcond_trace_unit', model, text, 123, 'int8', 0, 0, 0, n);
      const cap = a.u32(n);
      const vals = a.alloc(4 * cap);
      const toks = a.alloc(4 * cap);
      e.c.call('selfcond_trace_unit', model, text, 123, 'int8', toks, vals, cap, n);
      return Array.from(new Float32Array(e.c.u8.slice(vals, vals + 4 * cap).buffer));
    });
    assert.equal(trace.length, e.tokenize(model, pos[0]).length);
    assert.throws(() => e.c.scoped((a) => e.c.call('selfcond_trace_unit', model, a.str(pos[0]), 1e9, 'int8', 0, 0, 0, a.out())), /out of range/);
    // Choose-k and compare on a table ranked here, small grids: the browser gets both.
    const t = e.rank(model, 'football', pos, neg, {}, 20);
    const grid = { prompts: ['Once upon a time'], seeds: 1, newTokens: 8 };
    const cmp = e.c.scoped((a) => {
      const out = a.out();
      e.c.call('selfcond_compare_methods', model, t, ds, a.params('selfcond_compare_params', { grid, ks: [10], alphas: [4], betas: [6] }), 0, 0, out);
      return JSON.parse(e.c.takeString(a.u32(out)));
    });
    assert.deepEqual(cmp.points.map((p) => p.method), ['none', 'experts', 'steer', 'bias']);
    for (const p of cmp.points) assert.ok(p.ppl > 1 && p.mention_rate >= 0 && p.mention_rate <= 1);
    const report = e.c.scoped((a) => {
      const res = a.alloc(16);
      const out = a.out();
      e.c.call('selfcond_choose_k', model, t, ds, a.params('selfcond_choose_k_params', { grid, candidates: [5, 50], pplBudget: 100 }), 0, 0, res, out);
      return { k: e.c.read('selfcond_choose_k_result', res).k, json: JSON.parse(e.c.takeString(a.u32(out))) };
    });
    assert.equal(report.json.k, report.k);
    assert.equal(report.json.tried[0].k, 0);
    e.c.raw('selfcond_experts_free', t);
  } finally {
    e.c.raw('selfcond_dataset_free', ds);
  }
});

// The pthreads build: 2 threads must give exactly the single-threaded results (GEMMs split by
// output rows, ranking sentences by session: no reduction order changes).
test('pthreads build matches the single-threaded one', {
  skip: skipModel || (existsSync(mtPath) ? false : 'not built: run wasm/build.sh mt'),
}, async () => {
  const { e, model, s } = await engine();
  const { Module, threaded } = await loadSelfcond({ baseUrl: pathToFileURL(`${dist}/`), threads: 2 });
  const mt = new Engine(Module);
  try {
    assert.equal(threaded, true);
    assert.equal(mt.buildInfo().pthreads, true);
    const mm = mt.load(readFileSync(modelPath), { threads: 2 });
    assert.equal(mt.info(mm).threads, 2);
    // Let the pool's pthread workers load (Emscripten starts them from this event loop).
    for (const t0 = Date.now(); Module.PThread.runningWorkers.some((w) => !w.loaded) && Date.now() - t0 < 30000;) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const mts = mt.session(mm, { threads: 0 });
    const opts = { maxNewTokens: 16, temperature: 0.9, topK: 40, seed: 3, stopAtEos: false };
    const want = e.generate(s, 'In the beginning', opts);
    assert.deepEqual(mt.generate(mts, 'In the beginning', opts), want);
    const concept = JSON.parse(readFileSync(join(repo, '..', 'shared', 'concepts', 'football_small.json')));
    const pos = concept.sentences.positive.slice(0, 5);
    const neg = concept.sentences.negative.slice(0, 5);
    const a = e.rank(model, 'football', pos, neg, { topN: 200 });
    const b = mt.rank(mm, 'football', pos, neg, { topN: 200, threads: 0 }, 4);
    assert.equal(mt.tableText(b, 'csv'), e.tableText(a, 'csv'));
    e.c.raw('selfcond_experts_free', a);
    mt.c.raw('selfcond_session_free', mts);
    mt.c.raw('selfcond_model_free', mm);  // joins the model's thread pool
  } finally {
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
  const { e, model, s } = await engine();
  const ref = JSON.parse(readFileSync(join(repo, '..', 'shared', 'models', 'selfcond-mini-30m',
    'reference', 'reference.json')));
  for (const c of ref.cases) {
    const w = e.generate(s, c.prompt, { maxNewTokens: 20, temperature: 0, stopAtEos: false });
    const r = spawnSync(nativeCli, ['generate', '--model', modelPath, '--prompt', c.prompt,
      '--max-tokens', '20', '--temperature', '0', '--no-stop', '--threads', '1'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(c.prompt + w.text, r.stdout.replace(/\n$/, ''), `prompt ${JSON.stringify(c.prompt)}`);
  }
  const conceptPath = join(repo, '..', 'shared', 'concepts', 'football_small.json');
  const concept = JSON.parse(readFileSync(conceptPath));
  const t = e.rank(model, 'football_small', concept.sentences.positive, concept.sentences.negative, {}, 8);
  const w = e.units(t, 50);
  const out = join(tmpdir(), `selfcond-native-rank-${process.pid}.json`);
  const r = spawnSync(nativeCli, ['rank', '--model', modelPath, '--concept', conceptPath, '--out', out,
    '--threads', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const native = JSON.parse(readFileSync(out, 'utf8')).units;
  const key = (site, unit) => `${site}:${unit}`;
  const nativeTop = new Set();
  for (let i = 0; i < 50; ++i) nativeTop.add(key(native.site[i], native.unit[i]));
  let common = 0;
  for (let i = 0; i < 50; ++i) common += nativeTop.has(key(w[i].site, w[i].unit)) ? 1 : 0;
  console.log(`football_small top-50: WASM and native share ${common} units`);
  assert.ok(common >= 48, `top-50 overlap ${common} < 48`);
});
