// The Llama family in WebAssembly, against llama.cpp: each family's random-init checkpoint
// (tests/llama_reference.sh: llama3, llama-bias, qwen2, mistral, smollm2) converted by the native
// CLI, loaded into the WASM module and run through the C API's selfcond_session_eval with a kept
// KV cache, exactly as an app's own loop would. float32: the last position's logits within 1e-3
// of llama.cpp's logit range and the 10-token greedy continuation identical (the native bars,
// tests/llama_test.cc); int8: the same first token on every prompt.
//
//   SELFCOND_LLAMA_REF=build/release/test-llama SELFCOND_NATIVE_CLI=build/release/selfcond \
//     node --test wasm/tests/llama.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = join(here, '..', 'dist');
const ref = process.env.SELFCOND_LLAMA_REF ?? '';
const cli = process.env.SELFCOND_NATIVE_CLI ?? '';
const { loadSelfcond } = await import(pathToFileURL(join(repo, 'web', 'lib', 'engine', 'loader.mjs')).href);
const { CApi } = await import(pathToFileURL(join(repo, 'web', 'lib', 'engine', 'capi-runtime.js')).href);

const skip = !existsSync(join(dist, 'selfcond.mjs')) ? 'not built: run wasm/build.sh st'
  : !ref || !existsSync(join(ref, 'llama3.llama_cpp.json')) ? 'set SELFCOND_LLAMA_REF (tests/llama_reference.sh)'
    : !cli || !existsSync(cli) ? 'set SELFCOND_NATIVE_CLI' : false;

test('Llama-family reference data is present when required', () => {
  if (process.env.SELFCOND_WASM_REQUIRE !== '1') return;
  assert.equal(skip, false, `required but ${skip}`);
});

// A model from a file's bytes (taken over by the engine) and a session of the given precision.
function open(c, M, bytes, precision) {
  return c.scoped((a) => {
    const p = M._malloc(bytes.length);
    M.HEAPU8.set(bytes, p);
    const out = a.out();
    c.call('selfcond_model_load_owned', p, bytes.length, a.params('selfcond_model_params', { needF32: precision === 'f32', threads: 1 }), out);
    const model = a.u32(out);
    c.call('selfcond_session_create', model, a.params('selfcond_session_params', { precision, threads: 1 }), out);
    const info = a.alloc(512);
    c.raw('selfcond_model_get_info', model, info);
    return { model, session: a.u32(out), info: c.read('selfcond_model_info', info) };
  });
}

// Runs tokens after what the session holds; the last position's logits.
function evalTokens(c, session, tokens, vocab) {
  return c.scoped((a) => {
    const out = a.alloc(4 * vocab);
    c.call('selfcond_session_eval', session, a.array('i32', tokens), tokens.length, out, vocab);
    return new Float32Array(c.u8.slice(out, out + 4 * vocab).buffer);
  });
}

const argmax = (v) => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);

for (const family of ['llama3', 'llama-bias', 'qwen2', 'mistral', 'smollm2']) {
  test(`${family}: WASM matches llama.cpp (f32 logits and greedy, int8 first tokens)`, { skip }, async () => {
    const want = JSON.parse(readFileSync(join(ref, `${family}.llama_cpp.json`), 'utf8'));
    const logits = new Float32Array(readFileSync(join(ref, `${family}.llama_cpp.f32`)).buffer.slice(0));
    const dir = mkdtempSync(join(tmpdir(), 'selfcond-wasm-llama-'));
    try {
      const files = {};
      for (const [name, extra] of [['f32', ['--keep-float']], ['int8', []]]) {
        files[name] = join(dir, `${family}-${name}.scm`);
        const r = spawnSync(cli, ['convert', join(ref, family), files[name], ...extra], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
      }
      const { Module } = await loadSelfcond({ baseUrl: pathToFileURL(`${dist}/`), threads: 1 });
      const c = new CApi(Module);
      const f32 = open(c, Module, readFileSync(files.f32), 'f32');
      const int8 = open(c, Module, readFileSync(files.int8), 'int8');
      const V = want.vocab;
      assert.equal(f32.info.arch, 'llama');
      assert.equal(f32.info.vocabSize, V);
      let offset = 0;
      let worst = 0;
      for (const k of want.cases) {
        const last = logits.subarray(offset + (k.prompt.length - 1) * V, offset + k.prompt.length * V);
        offset += k.prompt.length * V;
        c.raw('selfcond_session_reset', f32.session);
        let got = evalTokens(c, f32.session, k.prompt, V);
        let lo = Infinity, hi = -Infinity, diff = 0;
        for (let v = 0; v < V; v++) {
          lo = Math.min(lo, last[v]);
          hi = Math.max(hi, last[v]);
          diff = Math.max(diff, Math.abs(got[v] - last[v]));
        }
        worst = Math.max(worst, diff / (hi - lo));
        // Greedy on the kept KV cache: one token at a time.
        const greedy = [];
        for (let i = 0; i < k.greedy.length; i++) {
          const t = argmax(got);
          greedy.push(t);
          if (i + 1 < k.greedy.length) got = evalTokens(c, f32.session, [t], V);
        }
        assert.deepEqual(greedy, k.greedy, `${family}: f32 greedy`);
        c.raw('selfcond_session_reset', int8.session);
        assert.equal(argmax(evalTokens(c, int8.session, k.prompt, V)), k.greedy[0], `${family}: int8 first token`);
      }
      assert.ok(worst <= 1e-3, `${family}: f32 logits off by ${worst} of the range`);
      console.log(`${family}: WASM f32 logits within ${worst.toExponential(2)} of llama.cpp's range`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
