// The browser benchmark (bench.html): a module file, not an inline script, so the page's
// Content-Security-Policy (script-src 'self') needs no 'unsafe-inline'.
import { SelfCond } from './lib/selfcond.js';

const MODEL_URL = new URL('../demo/models/selfcond-mini-30m.scm', import.meta.url).href;
const SAMPLE = [
  'The striker scored a late goal and the fans sang in the stadium.',
  'The goalkeeper saved the penalty kick in the final minute of the match.',
  'The river flows slowly through the valley towards the sea.',
  'She baked fresh bread this morning before the guests arrived.',
];
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

// config: {threads, repeats, promptTokens, decodeTokens, positive[], negative[], concept,
//          modelUrl (default: the demo model), rank (default true), memory (default true)}
window.runBench = async (config = {}) => {
  const { repeats = 3, promptTokens = 128, decodeTokens = 128 } = config;
  const positive = config.positive ?? Array.from({ length: 25 }, (_, i) => SAMPLE[i % 2]);
  const negative = config.negative ?? Array.from({ length: 25 }, (_, i) => SAMPLE[2 + (i % 2)]);
  const threads = config.threads ?? Number(new URLSearchParams(location.search).get('threads') ?? (crossOriginIsolated ? navigator.hardwareConcurrency : 1));
  const sc = await SelfCond.create({ threads });
  const t0 = performance.now();
  // cache: false: the figures are the download's and the engine's, not the browser's store's.
  const info = await sc.loadModel(config.modelUrl ?? MODEL_URL, { cache: false });
  const loadMs = performance.now() - t0;
  const memLoaded = await sc.memory();
  // A prompt of promptTokens tokens from the sentences (ids cut, then decoded and re-encoded).
  let text = '';
  for (let i = 0; (await sc.tokenize(text)).length < promptTokens; i++) text += ` ${[...positive, ...negative][i % (positive.length + negative.length)]}`;
  const prompt = await sc.detokenize((await sc.tokenize(text)).slice(0, promptTokens));
  await sc.bench({ prompt, decodeTokens: 8 });  // warm-up
  const prefill = [], decode = [];
  let measured;
  for (let r = 0; r < repeats; r++) {
    measured = await sc.bench({ prompt, decodeTokens });
    prefill.push(measured.promptTokens / (measured.prefillMs / 1000));
    // n sampled tokens take n - 1 forward passes (the first comes from the prefill logits).
    decode.push((measured.decodeTokens - 1) / (measured.decodeMs / 1000));
  }
  const n = positive.length + negative.length;
  let rankS = NaN;
  if (config.rank ?? true) {
    const r0 = performance.now();
    await sc.rank({ concept: config.concept ?? 'bench', positive, negative, topN: 100 });
    rankS = (performance.now() - r0) / 1000;
  }
  // Memory: the wasm memory only grows, so after two concurrent streams and a ranking it holds
  // the peak of the app's heaviest use (the model once, two KV caches, the ranking's buffers).
  let memory = null;
  if (config.memory ?? true) {
    const streams = [0, 1].map((i) => sc.generate({ prompt, maxTokens: 32, seed: i, stopAtEos: false }).done);
    const ranked = sc.rank({ concept: 'memory', positive: positive.slice(0, 8), negative: negative.slice(0, 8), topN: 100 });
    await Promise.all([...streams, ranked]);
    const m = await sc.memory();
    const mib = (x) => x / 1048576;
    memory = {
      wasm_mib_loaded: mib(memLoaded.wasmBytes), wasm_mib_peak: mib(m.wasmBytes),
      file_mib: mib(m.fileBytes), packed_mib: mib(m.packedBytes), kv_cache_mib: mib(m.kvCacheBytes),
      sessions: m.sessions, peak_after: '2 streams x 32 tokens + ranking 8 + 8 sentences at once',
    };
  }
  sc.terminate();
  return {
    model: info.name, precision: info.precision, load_ms: loadMs, file_mib: info.fileBytes / 1048576,
    prompt_tokens: measured.promptTokens, decode_tokens: measured.decodeTokens - 1,
    build: sc.runtime.threaded ? 'selfcond-mt (pthreads)' : 'selfcond (single-threaded)', backend: info.backend,
    run: { threads: info.threads, prefill_tok_s: median(prefill), decode_tok_s: median(decode) },
    memory,
    ranking: Number.isNaN(rankS) ? null
      : { threads: info.threads, sentences: n, total_s: rankS, sentences_per_s: n / rankS },
  };
};

// The cost of verifying the model's content hash on load (on by default): one warm-up load, then
// one load each without and with verification, timed in the worker around the engine's load
// call (loadMs: copy into wasm memory, parse, SHA-256 if verified, XNNPACK packing) and on the
// page (total: fetch from the server, transfer to the worker, load).
// config: {threads, modelUrl}
window.measureVerify = async (config = {}) => {
  const threads = config.threads ?? 1;
  const url = config.modelUrl ?? MODEL_URL;
  const sc = await SelfCond.create({ threads });
  try {
    // cache: false: "page load" is fetch + transfer + engine, as before the package's store.
    await sc.loadModel(url, { cache: false });  // warm-up: the JIT, the server's file cache, wasm memory growth
    const run = async (verify) => {
      const t0 = performance.now();
      const info = await sc.loadModel(url, { verify, cache: false });
      return { info, total_ms: performance.now() - t0 };
    };
    const off = await run(false);
    const on = await run(true);
    return {
      model: on.info.name, file_mib: on.info.fileBytes / 1048576,
      build: sc.runtime.threaded ? 'selfcond-mt (pthreads)' : 'selfcond (single-threaded)', threads: on.info.threads,
      engine_load_ms: { verify: on.info.loadMs, no_verify: off.info.loadMs, ratio: on.info.loadMs / off.info.loadMs },
      page_load_ms: { verify: on.total_ms, no_verify: off.total_ms, ratio: on.total_ms / off.total_ms },
      verify_ms: on.info.loadMs - off.info.loadMs,
      verified: [on.info.verified, off.info.verified],
    };
  } finally {
    sc.terminate();
  }
};

document.getElementById('run').onclick = async () => {
  const state = document.getElementById('state');
  state.textContent = 'running…';
  try {
    document.getElementById('out').textContent = JSON.stringify(await window.runBench(), null, 2);
    state.textContent = 'done';
  } catch (e) {
    state.textContent = `failed: ${e.message}`;
  }
};
document.body.dataset.ready = '1';
