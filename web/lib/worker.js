// The selfcond engine in a Web Worker (module worker), so the page never blocks.
//
// Protocol (page -> worker): {id, op, ...args}; the worker answers each request with
// {id, ok: true, result} or {id, ok: false, error}, and streams events meanwhile:
// {event: 'token', gen, text, token, index}, {event: 'progress', id, done, total}.
//
// One Model per loaded file: its bytes are copied into wasm memory once and its weights serve
// every generation and the ranking (wasm memory never shrinks, so each extra copy would stay
// for good). Each concurrent generation runs on a Session of that model (its own KV cache and
// forcing); sessions are created on demand, up to MAX_SESSIONS, and reused. The worker
// interleaves the running generations one token each in turn, and ranking batches with them,
// yielding to the event loop in between so cancel requests get through. Everything runs on this
// one thread, so the model's thread pool is never used by two calls at once.
import { loadSelfcond } from '../wasm/loader.mjs';

const MAX_SESSIONS = 4;

let Module = null;
let runtime = null;     // {threaded, threads, backend, pthreads}
let model = null;       // Module.Model
let modelInfo = null;
const sessions = [];    // [{session, busy: gen id | null}]
const tables = new Map();  // table id (the model's) -> meta
const gens = new Map();    // gen id -> generation state
let ranking = null;        // {id, cancelled}

function fail(msg) {
  throw new Error(msg);
}
function check(r, what) {
  if (!r || r.ok === false) fail(what ? `${what}: ${r?.error ?? 'failed'}` : (r?.error ?? 'failed'));
  return r;
}

// A macrotask yield that is not clamped to 4 ms like nested setTimeout.
const channel = new MessageChannel();
const waiters = [];
channel.port1.onmessage = () => waiters.shift()?.();
function yieldToEvents() {
  return new Promise((r) => {
    waiters.push(r);
    channel.port2.postMessage(0);
  });
}

async function init({ threads }) {
  if (Module) return runtime;
  const baseUrl = new URL('../wasm/', import.meta.url);
  let r;
  try {
    r = await loadSelfcond({ baseUrl, threads });
  } catch (err) {
    if (!(threads > 1)) throw err;
    // The threaded build is missing or cannot start here: the single-threaded one still works.
    console.warn(`threaded build unavailable (${err.message}); using the single-threaded build`);
    r = await loadSelfcond({ baseUrl, threads: 1 });
  }
  Module = r.Module;
  const b = Module.buildInfo();
  runtime = { threaded: r.threaded, threads: r.threads, backend: b.backends.split(',')[0], pthreads: b.pthreads };
  return runtime;
}

// Emscripten (3.1.6) starts a pthread beyond its prespawned pool (PTHREAD_POOL_SIZE) only once
// this thread's event loop has handled the new worker's "loaded" message; a GEMM waiting for
// that thread before then would deadlock. So after creating the model's thread pool, return to
// the event loop until every pthread worker has loaded.
async function threadsStarted() {
  const P = Module.PThread;
  if (!P?.runningWorkers) return;
  const t0 = performance.now();
  while (P.runningWorkers.some((w) => !w.loaded)) {
    if (performance.now() - t0 > 30000) fail('engine threads did not start within 30 s');
    await new Promise((r) => setTimeout(r, 5));
  }
}

function unloadModel() {
  for (const s of sessions) s.session.delete();
  sessions.length = 0;
  tables.clear();
  model?.delete();
  model = null;
  modelInfo = null;
}

async function loadModel({ bytes }) {
  if (!Module) fail('engine not initialized');
  if (ranking) fail('a ranking is running: cancel it before loading another model');
  for (const g of [...gens.values()]) finishGen(g, null, new Error('generation stopped: another model was loaded'));
  // The old model goes first: its memory is reused for the new one.
  unloadModel();
  const m = new Module.Model();
  // The bytes (transferred from the page) are copied into wasm memory and dropped here.
  const r = m.load(new Uint8Array(bytes), { threads: runtime.threads });
  if (!r.ok) {
    m.delete();
    fail(`loading the model failed: ${r.error}`);
  }
  model = m;
  await threadsStarted();
  modelInfo = check(model.info());
  delete modelInfo.ok;
  return { ...modelInfo, ...runtime };
}

function requireModel() {
  if (!model) fail('no model loaded');
}

function summarize(id, meta) {
  // Everything the UI charts need, computed once: per layer/site counts of the top units and the
  // AP distribution of all units.
  const u = check(model.expertUnits(id, 1 << 30));
  return { ...meta, units: { site: u.site, unit: u.unit, ap: u.ap } };
}

function tableMeta(r, extra = {}) {
  const meta = { id: r.id, concept: r.concept, group: r.group, numUnits: r.numUnits, totalUnits: r.totalUnits, ...extra };
  tables.set(r.id, meta);
  return summarize(r.id, meta);
}

function addTable({ text, name, allowUnhashed }) {
  requireModel();
  if (typeof text !== 'string' || !text.trim()) fail('expert table is empty');
  return tableMeta(check(model.addExpertTable(text, { allowUnhashed: !!allowUnhashed }),
    `expert table${name ? ` ${name}` : ''}`));
}

function knownTable(table) {
  if (!tables.has(table)) fail(`unknown expert table ${table}`);
  return table;
}

function exportTable({ table, format }) {
  requireModel();
  return check(model.exportExpertTable(knownTable(table), format), 'export').text;
}

function removeTable({ table }) {
  // Sessions forcing its units keep their own copy of the forcing.
  tables.delete(table);
  return model ? model.removeExpertTable(table) : false;
}

// ---- generation ------------------------------------------------------------------------------

// A free session of the model that holds at least `need` positions, marked busy with gen.
// Sessions are sized to the work (prompt + new tokens, rounded up to 64, at most the model's
// context), not to the model's context: in WASM every allocated byte grows the memory for good.
// A free session too small for this generation is replaced by a larger one.
function takeSession(gen, need) {
  const nCtx = Math.min(modelInfo.nCtx, Math.ceil(need / 64) * 64);
  let s = sessions.find((x) => x.busy === null && x.nCtx >= need);
  if (!s) {
    const small = sessions.findIndex((x) => x.busy === null);
    if (small >= 0) {
      sessions[small].session.delete();
      sessions.splice(small, 1);
    } else if (sessions.length >= MAX_SESSIONS) {
      fail(`at most ${MAX_SESSIONS} generations at a time`);
    }
    s = { session: check(model.createSession({ nCtx }), 'session').session, nCtx, busy: null };
    sessions.push(s);
  }
  s.busy = gen;
  return s;
}

let scheduling = false;

async function startGeneration({ gen, prompt, opts }) {
  requireModel();
  const need = model.tokenize(prompt).length + Math.max(1, Math.floor(opts.maxTokens ?? 50));
  const s = takeSession(gen, need);
  let r;
  try {
    const experts = opts.experts ?? [];
    const forcing = opts.forcing ?? {};
    if (experts.length) {
      const sources = experts.map((x) => ({ id: knownTable(x.table), topK: Math.max(0, Math.floor(x.k ?? 0)) }));
      check(s.session.setForcing(sources, forcing.value ?? 'on_p50', !!forcing.onlyLastToken), 'forcing');
    } else {
      s.session.clearForcing();
    }
    r = check(s.session.startGeneration(prompt, {
      maxNewTokens: opts.maxTokens ?? 50,
      temperature: opts.temperature ?? 1,
      topK: opts.topK ?? 0,
      topP: opts.topP ?? 1,
      seed: opts.seed ?? 0,
      stopAtEos: opts.stopAtEos ?? true,
    }));
  } catch (err) {
    s.busy = null;
    throw err;
  }
  const g = { gen, s, index: 0, cancelled: false, t0: performance.now(), tFirst: 0, resolve: null, reject: null };
  const done = new Promise((res, rej) => {
    g.resolve = res;
    g.reject = rej;
  });
  gens.set(gen, g);
  runScheduler();
  const result = await done;
  return { promptTokens: r.promptTokens, ...result };
}

function finishGen(g, result, error) {
  gens.delete(g.gen);
  g.s.busy = null;
  if (error) g.reject(error);
  else g.resolve(result);
}

async function runScheduler() {
  if (scheduling) return;
  scheduling = true;
  try {
    while (gens.size) {
      for (const g of [...gens.values()]) {
        if (g.cancelled) g.s.session.cancel();  // the next step reports stop 'cancelled'
        const r = g.s.session.step();
        if (!r.ok) {
          finishGen(g, null, new Error(r.error));
          continue;
        }
        if (r.token >= 0 || r.text) {
          if (r.token >= 0 && !g.index) g.tFirst = performance.now();
          if (r.token >= 0) g.index++;
          postMessage({ event: 'token', gen: g.gen, text: r.text, token: r.token, index: g.index });
        }
        if (r.done) {
          const ms = performance.now() - g.t0;
          const decodeMs = g.tFirst ? performance.now() - g.tFirst : 0;
          finishGen(g, { stop: r.stop, tokens: g.index, ms, tokensPerSecond: g.index > 1 && decodeMs > 0 ? (g.index - 1) / (decodeMs / 1000) : 0 });
        }
      }
      await yieldToEvents();
    }
  } finally {
    scheduling = false;
  }
}

function cancel({ gen }) {
  const g = gens.get(gen);
  if (g) g.cancelled = true;
  if (ranking && ranking.id === gen) ranking.cancelled = true;
  return true;
}

// ---- ranking ---------------------------------------------------------------------------------

async function rank({ id, concept, positive, negative, topN, batch }) {
  requireModel();
  if (ranking) fail('a ranking is already running');
  const start = check(model.startRanking(concept || 'custom', positive ?? [], negative ?? [], { topN: topN ?? 0 }), 'ranking');
  ranking = { id, cancelled: false };
  try {
    const total = start.total;
    const step = Math.max(1, batch ?? runtime.threads * 2);
    const t0 = performance.now();
    let done = 0;
    postMessage({ event: 'progress', id, done, total });
    while (done < total) {
      if (ranking.cancelled) {
        model.cancelRanking();
        fail('ranking cancelled');
      }
      done = check(model.rankStep(step), 'ranking').done;
      postMessage({ event: 'progress', id, done, total });
      await yieldToEvents();
    }
    const rankMs = performance.now() - t0;
    const r = check(model.finishRanking(), 'ranking');
    return tableMeta(r, { sentences: total, truncated: start.truncated, rankMs });
  } finally {
    ranking = null;
  }
}

// Benchmark helper: prefill a prompt, then decode greedily n tokens; times both here (no
// message round trips in the measurement).
function bench({ prompt, decodeTokens }) {
  requireModel();
  const s = takeSession('bench', model.tokenize(prompt).length + Math.max(1, decodeTokens));
  try {
    const e = s.session;
    e.clearForcing();
    const t0 = performance.now();
    const r = check(e.startGeneration(prompt, { maxNewTokens: decodeTokens, temperature: 0, stopAtEos: false }));
    const t1 = performance.now();
    let n = 0;
    for (let x; !(x = check(e.step())).done;) if (x.token >= 0) n++;
    const t2 = performance.now();
    // The first step samples from the prefill logits: n tokens need n - 1 forward passes.
    return { promptTokens: r.promptTokens, prefillMs: t1 - t0, decodeTokens: n, decodeMs: t2 - t1 };
  } finally {
    s.busy = null;
  }
}

// Memory of the engine: the wasm memory (it only grows: the peak of everything allocated so
// far) next to what the model and the sessions account for.
function memory() {
  const kv = sessions.map((s) => s.session.info().kvCacheBytes);
  return {
    wasmBytes: Module ? Module.heapBytes() : 0,
    fileBytes: modelInfo?.fileBytes ?? 0,
    packedBytes: modelInfo?.packedBytes ?? 0,
    kvCacheBytes: kv.reduce((a, b) => a + b, 0),
    sessions: sessions.length,
    generating: gens.size,
    ranking: !!ranking,
  };
}

function tokenize({ text }) {
  requireModel();
  return Array.from(model.tokenize(text));
}

function detokenize({ ids }) {
  requireModel();
  return model.detokenize(ids);
}

const OPS = {
  init, loadModel, detokenize, addTable, exportTable, removeTable, startGeneration, cancel, rank, bench, tokenize, memory,
  info: () => (modelInfo ? { ...modelInfo, ...runtime } : { ...runtime }),
};

self.onmessage = async (ev) => {
  const { id, op } = ev.data;
  try {
    const fn = OPS[op];
    if (!fn) fail(`unknown op ${op}`);
    const result = await fn(ev.data);
    postMessage({ id, ok: true, result });
  } catch (err) {
    postMessage({ id, ok: false, error: String(err?.message ?? err) });
  }
};
