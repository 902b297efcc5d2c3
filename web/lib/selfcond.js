// selfcond in the browser: the page-side API (the npm package `selfcond`'s entry). The engine
// (WebAssembly) runs in a Web Worker (./engine/worker.js); every call here is asynchronous and
// the page never blocks.
//
//   import { SelfCond } from 'selfcond';                     // or './lib/selfcond.js'
//   const sc = await SelfCond.create();                       // threaded if crossOriginIsolated
//   await sc.loadModel('../demo/models/selfcond-mini-30m.scm', { onProgress: (p) => ..., signal });
//   const football = await sc.loadExperts('../demo/experts/football.json');
//   const g = sc.generate({ prompt: 'Once upon a time', maxTokens: 40, seed: 1,
//                           experts: [{ table: football, k: 50 }] }, (t) => out += t.text);
//   await g.done;                                             // or g.cancel()
//   const t = await sc.rank({ positive, negative, concept: 'cats', onProgress });
//   t.download('csv');                                        // or sc.exportTable(t, 'json')
//   sc.addEventListener('restarted', (e) => ...e.detail.error) // the engine was lost (OOM) and
//                                                             // replaced: load the model again
//
// Model and table URLs must be on the page's origin unless allowedOrigins says otherwise
// (loadModel/loadExperts option: a list of origins, or '*' for any): a page must not be made to
// run whatever a crafted link points at. The model's content hash is verified on load unless
// {verify: false}. Models and tables loaded from URLs are kept in the browser (./cache.js)
// unless {cache: false}.
//
// Where the engine lives: ./engine/ next to this file (the worker, loader.mjs and both
// WebAssembly builds), found through import.meta.url. A bundler that does not copy it
// (esbuild) leaves import.meta.url pointing at the bundle: copy the package's engine/ folder
// next to the bundle, or pass {workerUrl} to SelfCond.create.
import { CACHE_NAME, cacheAvailable, clearCached, listCached, lookup, forget, store, sha256Hex, validatorsOf } from './cache.js';

export { CACHE_NAME, cacheAvailable, clearCached, listCached };

const DEFAULT_MAX_THREADS = 4;

/** The error a cancelled load rejects with (name 'AbortError', like fetch's). */
function cancelled(what) {
  return new DOMException(`${what} was cancelled`, 'AbortError');
}

/**
 * Resolves a model or table URL against the page and refuses it unless its origin is the page's
 * own or listed in allowedOrigins ('*': any origin). Throws before anything is fetched.
 * @param {string|URL} source
 * @param {string[]|'*'} [allowedOrigins] extra origins, e.g. ['https://models.example.org']
 * @returns {URL}
 */
export function checkUrl(source, allowedOrigins = []) {
  const base = globalThis.document?.baseURI ?? globalThis.location?.href;
  let url;
  try {
    url = new URL(source, base);
  } catch {
    throw new Error(`not a valid URL: ${String(source).slice(0, 200)}`);
  }
  const own = globalThis.location?.origin;
  if (allowedOrigins === '*' || url.origin === own) return url;
  const allowed = (Array.isArray(allowedOrigins) ? allowedOrigins : [allowedOrigins]).map((o) => String(o).replace(/\/+$/, ''));
  if (url.origin !== 'null' && allowed.includes(url.origin)) return url;
  throw new Error(`refused to load ${url.href.slice(0, 200)}: its origin ${url.origin} is not this page's (${own})` +
    (allowed.length ? ` nor one of the allowed origins (${allowed.join(', ')})` : '') +
    '; the page must allow it (allowedOrigins, or the app\'s selfcond-model-origins meta tag)');
}

/** Reads a Response body, reporting {phase: 'download', loaded, total, fraction} as bytes arrive. */
async function readWithProgress(response, onProgress, signal) {
  const total = Number(response.headers.get('Content-Length')) || 0;
  if (!response.body || !onProgress) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  onProgress({ phase: 'download', loaded, total, fraction: total ? 0 : null });
  for (;;) {
    // fetch's signal also errors the body stream; this check covers a reader already done.
    if (signal?.aborted) {
      reader.cancel().catch(() => {});
      throw cancelled('loading the model');
    }
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    onProgress({ phase: 'download', loaded, total, fraction: total ? Math.min(1, loaded / total) : null });
  }
  const out = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

// cache: the request's HTTP cache mode; 'no-store' when the file goes to the package's own
// store (a second copy in the HTTP cache would only take disk space).
async function fetchOk(url, signal, what = 'loading', cache = undefined) {
  let response;
  try {
    response = await fetch(url, { signal, credentials: 'same-origin', ...(cache ? { cache } : {}) });
  } catch (e) {
    if (signal?.aborted) throw cancelled(what);
    throw new Error(`could not fetch ${url}: ${e.message}`);
  }
  if (!response.ok) throw new Error(`could not fetch ${url}: HTTP ${response.status} ${response.statusText}`);
  return response;
}

/** An expert table loaded into (or ranked by) an engine. */
export class ExpertTable {
  constructor(owner, meta) {
    this._owner = owner;
    Object.assign(this, meta);  // id, concept, group, numUnits, totalUnits, units{layer,site,unit,ap}
  }
  /** The table as text: 'json' (native selfcond format) or 'csv' (ml-selfcond expertise.csv). */
  export(format = 'json') {
    return this._owner.exportTable(this, format);
  }
  /** Saves the table as a file through the browser's download. */
  async download(format = 'json', filename) {
    const text = await this.export(format);
    const safe = String(this.concept || 'concept').replace(/[^\w.-]+/g, '_');
    const name = filename ?? (format === 'csv' ? `${safe}_expertise.csv` : `${safe}.experts.json`);
    const url = URL.createObjectURL(new Blob([text], { type: format === 'csv' ? 'text/csv' : 'application/json' }));
    const a = Object.assign(document.createElement('a'), { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
    return name;
  }
  /**
   * Where the top-k units sit: counts[layer][kind], kind the linear layer within the block in
   * the model's order (SelfCond.model.siteKinds: attn.c_attn, attn.c_proj, mlp.c_fc,
   * mlp.c_proj for GPT-2; self_attn.q_proj ... mlp.down_proj for the Llama family).
   */
  siteCounts(k) {
    const kinds = this._owner.model?.sitesPerLayer ?? 1 + Math.max(0, ...this.units.kind);
    const nLayer = this._owner.model?.nLayer ?? 1 + Math.max(0, ...this.units.layer);
    const counts = Array.from({ length: nLayer }, () => new Array(kinds).fill(0));
    const n = Math.min(k, this.units.layer.length);
    for (let i = 0; i < n; i++) counts[this.units.layer[i]][this.units.kind[i]]++;
    return counts;
  }
}

export class SelfCond extends EventTarget {
  /**
   * Starts a worker and instantiates the WebAssembly engine in it. The threaded build is used
   * when the page is cross-origin isolated and more than one thread is wanted.
   * testHooks: enables the worker's __injectFault op (tests only).
   * @param {{threads?: number, workerUrl?: string|URL, testHooks?: boolean}} [opts]
   */
  static async create(opts = {}) {
    const sc = new SelfCond(opts);
    await sc._ready;
    return sc;
  }

  /** What the browser holds of models and tables (see cache.js listCached). */
  static listCached() {
    return listCached();
  }

  /** Removes stored models and tables: all, or those matching {url, kind, sha256}. */
  static clearCached(filter) {
    return clearCached(filter);
  }

  constructor(opts = {}) {
    super();
    const cores = globalThis.navigator?.hardwareConcurrency || 1;
    const isolated = globalThis.crossOriginIsolated === true;
    const threads = opts.threads ?? (isolated ? Math.min(cores, DEFAULT_MAX_THREADS) : 1);
    this._worker = new Worker(opts.workerUrl ?? new URL('./engine/worker.js', import.meta.url), { type: 'module' });
    this._next = 1;
    this._pending = new Map();
    this._listeners = new Map();  // request id -> event callback
    this._worker.onmessage = (ev) => this._onMessage(ev.data);
    // The worker answers every request itself (worker.js); these fire only if the worker
    // script cannot run at all or a message cannot be decoded: fail what waits, never hang.
    const failAll = (err) => {
      for (const p of this._pending.values()) p.reject(err);
      this._pending.clear();
      this._listeners.clear();
    };
    this._worker.onerror = (ev) => failAll(new Error(`worker error: ${ev.message || 'failed to start (see console)'}`));
    this._worker.onmessageerror = () => failAll(new Error('worker error: a message from the engine could not be decoded'));
    this.runtime = null;
    this.model = null;
    this._ready = this._call('init', { threads, testHooks: !!opts.testHooks }).then((r) => (this.runtime = r));
  }

  _onMessage(m) {
    if (m.event === 'restarted') {
      // The engine failed (out of memory, abort) and the worker replaced it: no model now.
      this.model = null;
      this.dispatchEvent(new CustomEvent('restarted', { detail: { error: m.error } }));
      return;
    }
    if (m.event === 'tokens') {
      // The worker sends the tokens of all running generations together, at most one message
      // per frame or so (worker.js FLUSH_MS); the callbacks still get one call per token.
      for (const b of m.batches) {
        const listener = this._listeners.get(b.gen);
        if (!listener) continue;
        let index = b.index - b.tokens.filter((t) => t >= 0).length;
        for (let i = 0; i < b.tokens.length; i++) {
          if (b.tokens[i] >= 0) index++;
          this._callListener(listener, m.event, { event: 'token', gen: b.gen, text: b.texts[i], token: b.tokens[i], index });
        }
      }
      return;
    }
    if (m.event) {
      this._callListener(this._listeners.get(m.id), m.event, m);
      return;
    }
    const p = this._pending.get(m.id);
    if (!p) return;
    this._pending.delete(m.id);
    this._listeners.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else if (m.name === 'AbortError') p.reject(new DOMException(m.error, 'AbortError'));
    else p.reject(Object.assign(new Error(m.error), m.code ? { code: m.code } : {}));
  }

  _callListener(listener, event, m) {
    try {
      listener?.(m);
    } catch (e) {
      // A throwing callback must not stop the messages (and answers) that follow.
      console.warn(`selfcond: a ${event} callback threw: ${e?.message ?? e}`);
    }
  }

  _call(op, args = {}, transfer = [], listener = null, id = this._next++) {
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      if (listener) this._listeners.set(id, listener);
      this._worker.postMessage({ id, op, ...args }, transfer);
    });
  }

  /** {threaded, threads, backend} once created. */
  get threaded() {
    return !!this.runtime?.threaded;
  }

  /**
   * Loads a selfcond model file (.scm) from a URL (fetched with progress) or from bytes.
   * onProgress({phase: 'download', loaded, total, fraction}) while downloading, or
   * {phase: 'cache', loaded, total, fraction: 1} once read from the browser's store, then
   * {phase: 'load'} when the engine starts copying, verifying and packing the model.
   * signal (AbortSignal): cancels the download, or the load in the engine (a load already
   * inside the engine's synchronous call is dropped when that returns). A cancelled load rejects
   * with an AbortError; a cancel before the bytes reach the engine keeps the model loaded
   * before, a later one unloads it. Either way the engine stays usable.
   * verify (default true): check the file's SHA-256 content hash; false skips it (faster).
   * allowedOrigins: origins besides the page's own a URL may come from ('*': any).
   * cache (default true): keep the file in the browser (Cache Storage, keyed by the model's
   * content hash) and use that copy while the server reports the same file (or cannot be
   * reached); see cache.js. false: always download, store nothing.
   * @returns model info {name, hash, verified, loadMs, fromCache, nLayer, nCtx, numUnits, backend, threads, ...}
   */
  async loadModel(source, { onProgress, signal, verify = true, allowedOrigins, cache = true } = {}) {
    const what = 'loading the model';
    if (signal?.aborted) throw cancelled(what);
    if (typeof source === 'string' || source instanceof URL) {
      const url = checkUrl(source, allowedOrigins);
      const useCache = cache !== false && cacheAvailable();
      let stored = null;
      if (useCache) {
        try {
          stored = await lookup(url.href, { signal });
        } catch (e) {
          if (signal?.aborted) throw cancelled(what);
          throw e;
        }
      }
      if (stored) {
        const n = stored.bytes.byteLength;
        onProgress?.({ phase: 'cache', loaded: n, total: n, fraction: 1 });
        try {
          const info = await this._loadBytes(stored.bytes, { onProgress, signal, verify });
          // The engine read the hash from the file's header (and checked the contents against
          // it unless verify is false): a copy that is not the one recorded is not used again.
          if (info.hash === stored.record.sha256) return (this.model = { ...info, fromCache: true });
        } catch (e) {
          if (e?.name === 'AbortError') throw e;
          // A stored copy the engine refuses (corrupted on disk): drop it, download again.
        }
        await forget(url.href);
      }
      let bytes;
      let validators;
      try {
        const response = await fetchOk(url, signal, what, useCache ? 'no-store' : undefined);
        validators = validatorsOf(response.headers);
        bytes = await readWithProgress(response, onProgress, signal);
      } catch (e) {
        if (signal?.aborted) throw cancelled(what);
        throw e;
      }
      // The engine takes the buffer (transferred): the store gets its own copy (a Blob copies).
      const copy = useCache ? new Blob([bytes]) : null;
      const info = await this._loadBytes(bytes, { onProgress, signal, verify });
      if (copy) await store(url.href, { kind: 'model', sha256: info.hash, bytes: copy, validators, name: info.name });
      return (this.model = { ...info, fromCache: false });
    }
    let bytes;
    if (source instanceof ArrayBuffer) {
      bytes = new Uint8Array(source.slice(0));
    } else if (ArrayBuffer.isView(source)) {
      bytes = new Uint8Array(source.buffer.slice(source.byteOffset, source.byteOffset + source.byteLength));
    } else {
      throw new Error('loadModel: expected a URL, an ArrayBuffer or a Uint8Array');
    }
    return (this.model = { ...(await this._loadBytes(bytes, { onProgress, signal, verify })), fromCache: false });
  }

  /** Hands the bytes (transferred, not copied) to the engine; see loadModel. */
  async _loadBytes(bytes, { onProgress, signal, verify }) {
    const what = 'loading the model';
    if (signal?.aborted) throw cancelled(what);
    const id = this._next++;
    const onAbort = () => this._worker.postMessage({ id: this._next++, op: 'cancel', gen: id });
    signal?.addEventListener('abort', onAbort, { once: true });
    const listener = (m) => onProgress?.({ phase: m.phase, loaded: m.loaded, total: m.total, fraction: 1 });
    try {
      this.model = await this._call('loadModel', { bytes: bytes.buffer, verify: verify !== false }, [bytes.buffer], listener, id);
      return this.model;
    } catch (e) {
      // Whether the earlier model survived depends on when the load failed: ask.
      const info = await this._call('info').catch(() => null);
      this.model = info?.name ? info : null;
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Loads an expert table: a URL (ending in .json / .csv, or any http(s)/relative path; on the
   * page's origin unless allowedOrigins allows it) or the table's text (native JSON or
   * ml-selfcond expertise.csv). Checked against the loaded model; a table without model hash
   * (an expertise.csv) is refused unless `allowUnhashed: true`. A table from a URL is kept in
   * the browser like the model (cache, default true), keyed by the SHA-256 of its text.
   */
  async loadExperts(source, { name, allowedOrigins, signal, allowUnhashed = false, cache = true } = {}) {
    let text = source;
    // Table text has newlines or starts with '{'; anything else is a URL.
    const isText = typeof source === 'string' && (source.trimStart().startsWith('{') || source.includes('\n'));
    let fromCache = false;
    let toStore = null;
    if (!isText) {
      const url = checkUrl(source, allowedOrigins);
      const useCache = cache !== false && cacheAvailable();
      try {
        const stored = useCache ? await lookup(url.href, { signal }) : null;
        // Checked again on the way out: a table is small, and a damaged one would load wrong units.
        if (stored && (await sha256Hex(stored.bytes)) === stored.record.sha256) {
          text = new TextDecoder().decode(stored.bytes);
          fromCache = true;
        } else {
          if (stored) await forget(url.href);
          const response = await fetchOk(url, signal, 'loading the expert table', useCache ? 'no-store' : undefined);
          const bytes = new Uint8Array(await response.arrayBuffer());
          text = new TextDecoder().decode(bytes);
          if (useCache) toStore = { bytes, validators: validatorsOf(response.headers) };
        }
      } catch (e) {
        if (signal?.aborted) throw cancelled('loading the expert table');
        throw e;
      }
      name ??= url.pathname.split('/').pop();
      const meta = await this._call('addTable', { text, name, allowUnhashed });
      // Stored once the engine accepted it (a table for another model is not kept).
      if (toStore) {
        await store(url.href, { kind: 'table', sha256: await sha256Hex(toStore.bytes), bytes: toStore.bytes,
          validators: toStore.validators, name: meta.concept ?? name });
      }
      return new ExpertTable(this, { ...meta, fromCache });
    }
    const meta = await this._call('addTable', { text, name, allowUnhashed });
    return new ExpertTable(this, { ...meta, fromCache });
  }

  /** The table's text: 'json' (native) or 'csv' (ml-selfcond). */
  exportTable(table, format = 'json') {
    return this._call('exportTable', { table: table.id ?? table, format });
  }

  removeTable(table) {
    return this._call('removeTable', { table: table.id ?? table });
  }

  /**
   * Streams a continuation of the prompt. onToken({text, token, index}) per token.
   * experts: [{table, k}] forces the top-k units of each table (k = 0: none);
   * forcing: {value: 'on_p50'|'on_p90'|'off_mean'|'zero', onlyLastToken: false}.
   * steer: {vector, layer, alpha} adds alpha x vector (steeringVector) to the residual stream
   * after block `layer` at every position; bias: {tokens, bias} adds bias[i] to the logit of
   * tokens[i] (wordLogitBias). Either may be combined with experts; what is not given is off.
   * Up to four generations may run at the same time (they take turns token by token), each on
   * its own session of the one loaded model.
   * @returns {{cancel(): void, done: Promise<{stop, tokens, ms, tokensPerSecond, promptTokens}>}}
   */
  generate(opts, onToken) {
    const id = this._next++;
    const experts = (opts.experts ?? [])
      .filter((x) => x && x.table && (x.k ?? 0) > 0)
      .map((x) => ({ table: x.table.id ?? x.table, k: x.k }));
    const steer = opts.steer && opts.steer.vector && Number(opts.steer.alpha)
      ? { vector: opts.steer.vector, layer: opts.steer.layer, alpha: Number(opts.steer.alpha) } : null;
    const bias = opts.bias && opts.bias.tokens?.length
      ? { tokens: Array.from(opts.bias.tokens), bias: Array.from(opts.bias.bias ?? []) } : null;
    const args = {
      gen: id,
      prompt: opts.prompt ?? '',
      opts: {
        maxTokens: opts.maxTokens, temperature: opts.temperature, topK: opts.topK, topP: opts.topP,
        seed: opts.seed, stopAtEos: opts.stopAtEos, stopStrings: opts.stopStrings,
        repeatPenalty: opts.repeatPenalty, repeatLastN: opts.repeatLastN, experts,
        forcing: opts.forcing, steer, bias,
      },
    };
    const done = this._call('startGeneration', args, [], (m) => onToken?.(m), id);
    return { id, done, cancel: () => this._worker.postMessage({ id: this._next++, op: 'cancel', gen: id }) };
  }

  /**
   * Ranks every unit of the model as an expert for a concept (positive vs negative sentences).
   * onProgress({done, total}) per batch of sentences. The table is usable at once.
   */
  async rank({ positive, negative, concept = 'custom', topN = 0, onProgress, signal } = {}) {
    const id = this._next++;
    if (signal) signal.addEventListener('abort', () => this._worker.postMessage({ id: this._next++, op: 'cancel', gen: id }));
    const meta = await this._call('rank', { concept, positive, negative, topN }, [], (m) => onProgress?.(m), id);
    return new ExpertTable(this, meta);
  }

  // ---- other steering methods and the expert explorer (issue 10) ----------------------------

  /**
   * The concept's most typical words: the words of the positive sentences with the highest
   * log-odds against the negatives (function words excluded), best first.
   * -> [{word, logOdds, positive, negative}] (positive/negative: counts in each class)
   */
  conceptWords({ positive, negative, maxWords = 20 } = {}) {
    return this._call('conceptWords', { positive, negative, maxWords });
  }

  /**
   * A steering vector: the mean residual stream after block `layer` (default n_layer / 2) over
   * the positive sentences minus that over the negatives. Blocks the engine for a second or two
   * on 60 + 60 sentences (running generations wait). -> {vector: Float32Array (n_embd), layer, norm}
   */
  steeringVector({ positive, negative, layer } = {}) {
    return this._call('steeringVector', { positive, negative, layer });
  }

  /**
   * A bag-of-words logit bias: the single-token forms of the words (" word", " Word") with bias
   * beta each. -> {tokens: number[], bias: number[]}, for generate({bias}).
   */
  wordLogitBias({ words, beta } = {}) {
    return this._call('wordLogitBias', { words, beta });
  }

  /**
   * Where a unit fires: its response at every token of a sentence (the values ranking
   * max-pools). unit: the global unit id (a table's units.id[rank]).
   * -> {unit: global id, tokens: string[], values: number[]}
   */
  traceUnit({ sentence, unit } = {}) {
    return this._call('traceUnit', { sentence, unit });
  }

  /**
   * Expert forcing, the steering vector and the logit bias side by side on a small grid (the
   * CLI's `experiment compare`): every method's strengths on the same prompts and seeds, each
   * point with the concept rate (share of continuations with one of the concept words),
   * perplexity and Self-BLEU. table: the concept's expert table; positive/negative: its
   * sentences. Blocks the engine for a few seconds (running generations wait).
   * -> {points: [{method: 'none'|'experts'|'steer'|'bias', strength, mention_rate, ppl,
   *    scorer_ppl, self_bleu, ...}], concept_words, steer_norm, bias_tokens, options, examples}
   */
  compareMethods({ table, positive, negative, prompts, seeds = 2, newTokens = 16, ks, alphas, betas, layer, ...rest } = {}) {
    if (table == null) return Promise.reject(new Error('compareMethods: table is required'));
    // The C API's selfcond_compare_params (capi.d.ts CompareParams); a small grid by default, a
    // few seconds on the demo model. Other CompareParams fields pass through as they are.
    const opts = { grid: { prompts, seeds, newTokens }, ks, alphas, betas, steerLayer: layer, ...rest };
    return this._call('compareMethods', { table: table.id ?? table, positive, negative, opts });
  }

  /**
   * How many of the table's experts to force (the CLI's `generate --experts T:auto`): the
   * smallest k of the candidates whose continuations mention the concept often enough
   * (targetRate) while their perplexity stays within pplBudget x the unconditioned one.
   * positive/negative: the concept's sentences (their log-odds words mark a mention; without
   * them the concept's name does). Blocks the engine while it generates the calibration set.
   * -> {k, met, reason, words, tried: [{k, mention_rate, ppl, ...}], options}
   */
  chooseK({ table, positive, negative, candidates, targetRate, pplBudget, prompts, seeds, newTokens, ...rest } = {}) {
    if (table == null) return Promise.reject(new Error('chooseK: table is required'));
    const opts = { grid: { prompts, seeds, newTokens }, candidates, targetRate, pplBudget, ...rest };
    return this._call('chooseK', { table: table.id ?? table, positive, negative, opts });
  }

  /** Token ids of a text (for checking prompt lengths). */
  tokenize(text) {
    return this._call('tokenize', { text });
  }

  /** The text of token ids. */
  detokenize(ids) {
    return this._call('detokenize', { ids: Array.from(ids) });
  }

  /**
   * Benchmark helper: prefill + decode timed inside the worker, greedy unless sampling
   * ({temperature, topK, topP, seed}) is given.
   * -> {promptTokens, prefillMs, firstTokenMs, decodeTokens, decodeMs}
   */
  bench({ prompt, decodeTokens = 64, sampling }) {
    return this._call('bench', { prompt, decodeTokens, sampling });
  }

  /**
   * Benchmark helper: the engine's own time to rank a concept, timed inside the worker in one
   * go (start, all sentences, finish; no progress, no table for the page; the table is
   * dropped). -> {sentences, startMs, stepMs, finishMs, totalMs}
   */
  benchRank({ positive, negative, concept = 'bench', topN = 0 }) {
    return this._call('benchRank', { positive, negative, concept, topN });
  }

  /**
   * The engine's memory: {wasmBytes (the WebAssembly memory, which only grows: the peak so
   * far), fileBytes, packedBytes (the model's weights packed for the GEMM engine), kvCacheBytes
   * (all sessions), sessions, generating, ranking}.
   */
  memory() {
    return this._call('memory');
  }

  /** Tests only (SelfCond.create({testHooks: true})): arms a fault in the worker (worker.js injectFault). */
  _injectFault(fault) {
    return this._call('__injectFault', fault);
  }

  terminate() {
    this._worker.terminate();
    for (const p of this._pending.values()) p.reject(new Error('terminated'));
    this._pending.clear();
  }
}

export default SelfCond;
