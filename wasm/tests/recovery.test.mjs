// Hostile input and engine failure in the browser module (wasm/dist/selfcond.mjs) under Node:
// the content hash is verified by default, a real allocation failure inside the engine comes out
// as a throw out of wasm (a RuntimeError 'Aborted()' or a bare number, never one of our Errors)
// that loader.mjs's engineFailure() recognises as running out of memory, and a fresh
// instance works after it (what web/lib/engine/worker.js does when it restarts a lost engine).
//
//   SELFCOND_WASM_TEST_MODEL=path/to/model.scm node --test wasm/tests/
// Skipped when the module or the model is missing (bindings.test.mjs fails instead when
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

const { loadSelfcond, engineFailure, MAX_WASM_MEMORY } = await import(pathToFileURL(join(here, '..', 'loader.mjs')).href);
const fresh = async () => (await loadSelfcond({ baseUrl: pathToFileURL(`${dist}/`), threads: 1 })).Module;
const MiB = 1048576;

function greedy(m, prompt, n) {
  const { session: s } = m.createSession({});
  try {
    assert.ok(s.startGeneration(prompt, { maxNewTokens: n, temperature: 0, stopAtEos: false }).ok);
    const tokens = [];
    for (let r; !(r = s.step()).done;) {
      assert.ok(r.ok, r.error);
      if (r.token >= 0) tokens.push(r.token);
    }
    return tokens;
  } finally {
    s.delete();
  }
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
  const m = new M.Model();
  try {
    const r = m.load(bad, { threads: 1 });
    assert.equal(r.ok, false);
    assert.match(r.error, /content hash mismatch: header says [0-9a-f]{64}, contents hash to [0-9a-f]{64} \(file corrupted or modified\)/);
    const off = m.load(bad, { threads: 1, verifyHash: false });
    assert.ok(off.ok, `verifyHash: false still refused it: ${off.error}`);
    const good = m.load(bytes, { threads: 1 });
    assert.ok(good.ok, good.error);
  } finally {
    m.delete();
  }
});

test('an allocation failure in the engine is recognised as out of memory; a fresh instance works after it', { skip: skipModel }, async () => {
  const M = await fresh();
  const m = new M.Model();
  assert.ok(m.load(readFileSync(modelPath), { threads: 1 }).ok);
  const want = greedy(m, 'The football match', 5);
  const before = M.heapBytes();
  // detokenize copies its argument into a std::vector<int32_t>: 2^30 - 16 ids need 4 GiB - 64 B,
  // more than wasm32 can hold, so malloc fails at once (memory is not grown first) and
  // operator new fails. Without C++ exceptions that ends in abort(): a RuntimeError 'Aborted()'
  // (code built with exceptions would throw the exception's address instead, a bare number,
  // as reported from the browser). Either way the instance cannot be trusted any more.
  let thrown = null;
  try {
    m.detokenize({ length: 2 ** 30 - 16 });
  } catch (e) {
    thrown = { value: e };
  }
  assert.ok(thrown, 'the impossible allocation did not throw');
  assert.ok(typeof thrown.value === 'number' || thrown.value instanceof WebAssembly.RuntimeError, `thrown: ${thrown.value}`);
  assert.ok(M.heapBytes() < before + 64 * MiB, `memory grew from ${before} to ${M.heapBytes()}`);
  const f = engineFailure(thrown.value, { heapBytes: M.heapBytes() });
  assert.equal(f?.kind, 'oom');
  assert.match(f.message, /^engine ran out of memory \((uncaught C\+\+ exception \d+|RuntimeError: Aborted\(\) without a message)/);
  // What the worker does next: drop that instance and start a fresh one.
  const M2 = await fresh();
  assert.ok(M2.heapBytes() <= 64 * MiB, `a fresh instance starts with ${M2.heapBytes()} bytes`);
  const m2 = new M2.Model();
  try {
    assert.ok(m2.load(readFileSync(modelPath), { threads: 1 }).ok);
    assert.deepEqual(greedy(m2, 'The football match', 5), want);
  } finally {
    m2.delete();
  }
});
