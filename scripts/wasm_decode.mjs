// Decode speed of model files in the WebAssembly engine under Node, one thread, side by side in
// one run (ratios between files are what it is for; the browser bench is web/README.md's).
// Each file: load, prefill P tokens (one selfcond_session_eval call), then greedy-decode N tokens
// through selfcond_session_eval, the loop an app runs. Prints one JSON line per file, with the
// size of the wasm memory after load and at the end (it only grows: the end is the peak; the
// 32-bit wasm memory ends at 4 GiB).
//
//   node scripts/wasm_decode.mjs [--tokens N] [--prompt P] MODEL.scm [MODEL.scm ...]
//   (needs the engine in web/lib/engine, or wasm/dist with --dist)
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
let tokens = 32;
let promptN = 4;
let nCtx = 0; // the model's context, as an app's default session
let kvType = 'f32';
let engineDir = join(repo, 'web', 'lib', 'engine');
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--help') {
    console.log('usage: node scripts/wasm_decode.mjs [--tokens N] [--prompt P] [--ctx N] [--kv f32|f16] [--dist] MODEL.scm [MODEL.scm ...]');
    process.exit(0);
  } else if (args[i] === '--tokens') {
    tokens = Number(args[++i]);
    if (!Number.isInteger(tokens) || tokens < 1 || tokens > 4096) {
      console.error('--tokens: an integer in 1..4096');
      process.exit(2);
    }
  } else if (args[i] === '--prompt') {
    promptN = Number(args[++i]);
    if (!Number.isInteger(promptN) || promptN < 1 || promptN > 1024) {
      console.error('--prompt: an integer in 1..1024');
      process.exit(2);
    }
  } else if (args[i] === '--ctx') {
    nCtx = Number(args[++i]);
    if (!Number.isInteger(nCtx) || nCtx < 0 || nCtx > 1 << 20) {
      console.error('--ctx: an integer >= 0 (0: the model\'s context)');
      process.exit(2);
    }
  } else if (args[i] === '--kv') {
    kvType = args[++i];
    if (kvType !== 'f32' && kvType !== 'f16') {
      console.error('--kv: f32 or f16');
      process.exit(2);
    }
  } else if (args[i] === '--dist') {
    engineDir = join(repo, 'wasm', 'dist');
  } else {
    files.push(args[i]);
  }
}
if (files.length === 0) {
  console.error('usage: node scripts/wasm_decode.mjs [--tokens N] [--prompt P] [--ctx N] [--kv f32|f16] [--dist] MODEL.scm [MODEL.scm ...]');
  process.exit(2);
}
const { loadSelfcond } = await import(pathToFileURL(join(repo, 'web', 'lib', 'engine', 'loader.mjs')).href);
const { CApi } = await import(pathToFileURL(join(repo, 'web', 'lib', 'engine', 'capi-runtime.js')).href);
const { Module } = await loadSelfcond({ baseUrl: pathToFileURL(`${engineDir}/`), threads: 1 });
const c = new CApi(Module);
const argmax = (v) => v.reduce((b, x, i) => (x > v[b] ? i : b), 0);
for (const file of files) {
  const bytes = readFileSync(file);
  const t0 = performance.now();
  const { model, session, vocab } = c.scoped((a) => {
    const p = Module._malloc(bytes.length);
    Module.HEAPU8.set(bytes, p);
    const out = a.out();
    c.call('selfcond_model_load_owned', p, bytes.length, a.params('selfcond_model_params', { threads: 1 }), out);
    const model = a.u32(out);
    c.call('selfcond_session_create', model, a.params('selfcond_session_params', { precision: 'int8', threads: 1, nCtx, kvType }), out);
    const info = a.alloc(512);
    c.raw('selfcond_model_get_info', model, info);
    return { model, session: a.u32(out), vocab: c.read('selfcond_model_info', info).vocabSize };
  });
  const loadMs = performance.now() - t0;
  const mib = () => Module.HEAPU8.length / 2 ** 20;
  const loadedMib = mib();
  const evalTokens = (toks) => c.scoped((a) => {
    const out = a.alloc(4 * vocab);
    c.call('selfcond_session_eval', session, a.array('i32', toks), toks.length, out, vocab);
    return new Float32Array(c.u8.slice(out, out + 4 * vocab).buffer);
  });
  const tp = performance.now();
  let logits = evalTokens(Array.from({ length: promptN }, (_, i) => (i * 7919 + 13) % vocab));
  const prefill = promptN / ((performance.now() - tp) / 1000);
  const t1 = performance.now();
  for (let i = 0; i < tokens; i++) logits = evalTokens([argmax(logits)]);
  const decode = tokens / ((performance.now() - t1) / 1000);
  console.log(JSON.stringify({
    file, file_mib: bytes.length / 2 ** 20, load_ms: loadMs, n_ctx: nCtx, kv: kvType, wasm_memory_mib_loaded: loadedMib,
    prompt_tokens: promptN, prefill_tok_s: prefill, decode_tokens: tokens, decode_tok_s: decode,
    wasm_memory_mib_peak: mib(),
  }));
  c.raw('selfcond_session_free', session);
  c.raw('selfcond_model_free', model);
}
