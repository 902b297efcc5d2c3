// Hostile input and engine failure in the browser module (wasm/dist/selfcond.mjs) under Node:
// the content hash is verified by default, a real allocation failure inside the engine comes out
// as a throw out of wasm (a RuntimeError 'Aborted()' or a bare number, never one of our Errors)
// that loader.mjs's engineFailure() recognises as running out of memory, and a fresh
// instance works after it (what web/lib/engine/worker.js does when it restarts a lost engine).
//
//   SELFCOND_WASM_TEST_MODEL=path/to/model.scm node --test wasm/tests/
// Skipped when the module or the model is missing (capi.test.mjs fails instead when
// SELFCOND_WASM_REQUIRE=1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist');
const modelPath = process.env.SELFCOND_WASM_TEST_MODEL ?? '';
const skipModule = existsSync(join(dist, 'selfcond.mjs')) ? false : 'not built: run wasm/build.sh st';
const skipModel = skipModule || (existsSync(modelPath) ? false : 'set SELFCOND_WASM_TEST_MODEL');

const { loadSelfcond, engineFailure, MAX_WASM_MEMORY } = await import(pathToFileURL(join(here, '..', '..', 'web', 'lib', 'engine', 'loader.mjs')).href);
const { CApi, CApiError } = await import(pathToFileURL(join(here, '..', '..', 'web', 'lib', 'engine', 'capi-runtime.js')).href);
const fresh = async () => (await loadSelfcond({ baseUrl: pathToFileURL(`${dist}/`), threads: 1 })).Module;
const MiB = 1048576;

// A model from bytes (selfcond_model_load_owned), as the worker loads one.
function load(M, bytes, params) {
  const c = new CApi(M);
  const p = M._malloc(bytes.length);
  M.HEAPU8.set(bytes, p);
  return c.scoped((a) => {
    const out = a.out();
    c.call('selfcond_model_load_owned', p, bytes.length, a.params('selfcond_model_params', params), out);
    return a.u32(out);
  });
}

function greedy(M, model, prompt, n) {
  const c = new CApi(M);
  return c.scoped((a) => {
    const so = a.out();
    c.call('selfcond_session_create', model, 0, so);
    const s = a.u32(so);
    const go = a.out();
    c.call('selfcond_generation_start', s, a.str(prompt), a.params('selfcond_generate_params', { maxNewTokens: n, temperature: 0, stopAtEos: false }), go);
    const g = a.u32(go);
    const step = a.alloc(64);
    const tokens = [];
    for (let r = { done: false }; !r.done;) {
      c.call('selfcond_generation_next', g, step);
      r = c.read('selfcond_generation_step', step);
      if (r.token >= 0) tokens.push(r.token);
    }
    c.raw('selfcond_generation_free', g);
    c.raw('selfcond_session_free', s);
    return tokens;
  });
}

test('engineFailure tells engine failures from JS errors', () => {
  assert.equal(engineFailure(new Error('no model loaded')), null);
  assert.equal(engineFailure(new TypeError('x is not a function')), null);
  const num = engineFailure(26273888, { heapBytes: 4000 * MiB });
  assert.equal(num.kind, 'oom');
  assert.match(num.message, /^engine ran out of memory \(uncaught C\+\+ exception 26273888, .*wasm memory 4000 MiB of at most 4096 MiB\)$/);
  assert.equal(engineFailure('5242880 - Exception catching is disabled').kind, 'oom');
  const abort = engineFailure(new WebAssembly.RuntimeError('Aborted(assertion failed)'), { heapBytes: 100 * MiB });
  assert.equal(abort.kind, 'abort');
  assert.match(abort.message, /^engine aborted \(RuntimeError: Aborted\(assertion failed\); wasm memory 100 MiB/);
  // abort() without a message: libc++ without exceptions ending a failed allocation.
  assert.equal(engineFailure(new WebAssembly.RuntimeError('Aborted(). Build with -s ASSERTIONS=1 for more info.')).kind, 'oom');
  // An abort with the memory nearly full is reported as running out of memory.
  assert.equal(engineFailure(new WebAssembly.RuntimeError('Aborted()'), { heapBytes: MAX_WASM_MEMORY - MiB }).kind, 'oom');
  assert.equal(engineFailure(new RangeError('WebAssembly.Memory.grow(): Maximum memory size exceeded')).kind, 'oom');
  assert.equal(engineFailure(undefined).kind, 'abort');
});

test('the content hash is verified by default; verifyHash: false skips it', { skip: skipModel }, async () => {
  const M = await fresh();
  const bytes = readFileSync(modelPath);
  // One bit flipped in the middle of the file: inside the weights, which nothing but the hash
  // covers (the header, tensor table and tokenizer are parsed and checked anyway).
  const bad = Uint8Array.from(bytes);
  bad[bad.length >> 1] ^= 0x10;
  assert.throws(() => load(M, bad, { threads: 1 }), (e) => e instanceof CApiError && e.code === 'data_loss' &&
    /content hash mismatch: header says [0-9a-f]{64}, contents hash to [0-9a-f]{64} \(file corrupted or modified\)/.test(e.message));
  const c = new CApi(M);
  c.raw('selfcond_model_free', load(M, bad, { threads: 1, verifyHash: false }));
  c.raw('selfcond_model_free', load(M, bytes, { threads: 1 }));
});

test('an allocation failure in the engine is recognised as out of memory; a fresh instance works after it', { skip: skipModel }, async () => {
  const M = await fresh();
  const m = load(M, readFileSync(modelPath), { threads: 1 });
  const want = greedy(M, m, 'The football match', 5);
  const before = M.HEAPU8.length;
  // The test hook (wasm/test_hooks.cc) asks operator new for 4 GiB - 64 B: more than wasm32
  // can hold, so malloc fails at once (memory is not grown first) and operator new fails. Without C++ exceptions that ends in abort(): a RuntimeError
  // 'Aborted()' (code built with exceptions would throw the exception's address instead, a bare
  // number, as reported from the browser). Either way the instance cannot be trusted any more.
  let thrown = null;
  try {
    M._selfcond_wasm_test_alloc_fail();
  } catch (e) {
    thrown = { value: e };
  }
  assert.ok(thrown, 'the impossible allocation did not throw');
  assert.ok(typeof thrown.value === 'number' || thrown.value instanceof WebAssembly.RuntimeError, `thrown: ${thrown.value}`);
  assert.ok(M.HEAPU8.length < before + 64 * MiB, `memory grew from ${before} to ${M.HEAPU8.length}`);
  const f = engineFailure(thrown.value, { heapBytes: M.HEAPU8.length });
  assert.equal(f?.kind, 'oom');
  assert.match(f.message, /^engine ran out of memory \((uncaught C\+\+ exception \d+|RuntimeError: Aborted\(\) without a message)/);
  // What the worker does next: drop that instance and start a fresh one.
  const M2 = await fresh();
  assert.ok(M2.HEAPU8.length <= 64 * MiB, `a fresh instance starts with ${M2.HEAPU8.length} bytes`);
  const m2 = load(M2, readFileSync(modelPath), { threads: 1 });
  assert.deepEqual(greedy(M2, m2, 'The football match', 5), want);
});
