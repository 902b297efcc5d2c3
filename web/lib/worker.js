// The selfcond engine in a Web Worker (module worker), so the page never blocks.
//
// Protocol (page -> worker): {id, op, ...args}; the worker answers each request with
// {id, ok: true, result} or {id, ok: false, error}, and streams events meanwhile:
// {event: 'token', gen, text, token, index}, {event: 'progress', id, done, total}.
//
// Several generations may run at once (e.g. unconditioned and conditioned side by side): each
// needs its own Engine (its own KV cache), so the worker keeps a small set of engines loaded
// with the same model and interleaves their steps, one token each in turn, yielding to the
// event loop in between so cancel requests get through. Expert tables are kept as native JSON
// text and added to an engine on first use there (engine-local ids are mapped here).
import { loadSelfcond } from '../wasm/loader.mjs';

const MAX_ENGINES = 2;

let Module = null;
let runtime = null;     // {threaded, threads, backend}
let modelBytes = null;  // Uint8Array: kept to load further engines lazily
let modelInfo = null;
const engines = [];     // [{engine, busy: gen id | null, tables: Map<tableId, engineLocalId>}]
const tables = new Map();  // tableId -> {json: string, meta}
let nextTableId = 1;
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
// that thread before then would deadlock. So after creating an engine's thread pool, return to
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

async function newEngine() {
  const engine = new Module.Engine();
  const r = engine.load(modelBytes, { threads: runtime.threads });
  if (!r.ok) {
    engine.delete();
    fail(`loading the model failed: ${r.error}`);
  }
  // reserved: not to be taken by another request while its threads start (the caller clears it).
  const e = { engine, busy: null, reserved: true, tables: new Map() };
  engines.push(e);
  await threadsStarted();
  return e;
}

async function loadModel({ bytes }) {
  if (!Module) fail('engine not initialized');
  if (ranking) fail('a ranking is running: cancel it before loading another model');
  for (const g of [...gens.values()]) finishGen(g, null, new Error('generation stopped: another model was loaded'));
  for (const e of engines) e.engine.delete();
  engines.length = 0;
  tables.clear();
  modelBytes = new Uint8Array(bytes);
  try {
    (await newEngine()).reserved = false;
  } catch (err) {
    modelBytes = null;
    modelInfo = null;
    throw err;
  }
  modelInfo = check(engines[0].engine.info());
  delete modelInfo.ok;
  return { ...modelInfo, ...runtime };
}

function requireModel() {
  if (!engines.length) fail('no model loaded');
}

// The engine-local id of a table on engine e (adding it there on first use).
function localTable(e, tableId) {
  let local = e.tables.get(tableId);
  if (local !== undefined) return local;
  const t = tables.get(tableId);
  if (!t) fail(`unknown expert table ${tableId}`);
  local = check(e.engine.addExpertTable(t.json), 'expert table').id;
  e.tables.set(tableId, local);
  return local;
}

function summarize(e, local, meta) {
  // Everything the UI charts need, computed once: per layer/site counts of the top units and the
  // AP distribution of all units.
  const u = check(e.engine.expertUnits(local, 1 << 30));
  return { ...meta, units: { site: u.site, unit: u.unit, ap: u.ap } };
}

function addTable({ text, name }) {
  requireModel();
  if (typeof text !== 'string' || !text.trim()) fail('expert table is empty');
  const e = engines[0];
  const r = check(e.engine.addExpertTable(text), `expert table${name ? ` ${name}` : ''}`);
  const id = nextTableId++;
  // Keep the native JSON (also when a CSV was given) so other engines can load it.
  const json = text.trimStart().startsWith('{') ? text : check(e.engine.exportExpertTable(r.id, 'json')).text;
  const meta = { id, concept: r.concept, group: r.group, numUnits: r.numUnits, totalUnits: r.totalUnits };
  tables.set(id, { json, meta });
  e.tables.set(id, r.id);
  return summarize(e, r.id, meta);
}

function exportTable({ table, format }) {
  requireModel();
  const e = engines[0];
  if (format === 'json') {
    const t = tables.get(table);
    if (!t) fail(`unknown expert table ${table}`);
    return t.json;
  }
  return check(e.engine.exportExpertTable(localTable(e, table), format), 'export').text;
}

function removeTable({ table }) {
  tables.delete(table);
  for (const e of engines) {
    const local = e.tables.get(table);
    if (local !== undefined) e.engine.removeExpertTable(local);
    e.tables.delete(table);
  }
  return true;
}

// ---- generation ------------------------------------------------------------------------------

let scheduling = false;

async function startGeneration({ gen, prompt, opts }) {
  requireModel();
  let e = engines.find((x) => x.busy === null && !x.reserved);
  if (!e) {
    if (engines.length >= MAX_ENGINES) fail(`at most ${MAX_ENGINES} generations at a time`);
    // Reserved while its threads start, so a concurrent request does not take it.
    e = await newEngine();
  }
  e.reserved = true;
  try {
    return await runGeneration(e, gen, prompt, opts);
  } finally {
    e.reserved = false;
  }
}

async function runGeneration(e, gen, prompt, opts) {
  const experts = opts.experts ?? [];
  const forcing = opts.forcing ?? {};
  if (experts.length) {
    const sources = experts.map((x) => ({ id: localTable(e, x.table), topK: Math.max(0, Math.floor(x.k ?? 0)) }));
    check(e.engine.setForcing(sources, forcing.value ?? 'on_p50', !!forcing.onlyLastToken), 'forcing');
  } else {
    e.engine.clearForcing();
  }
  const r = check(e.engine.startGeneration(prompt, {
    maxNewTokens: opts.maxTokens ?? 50,
    temperature: opts.temperature ?? 1,
    topK: opts.topK ?? 0,
    topP: opts.topP ?? 1,
    seed: opts.seed ?? 0,
    stopAtEos: opts.stopAtEos ?? true,
  }));
  e.busy = gen;
  const g = { gen, e, index: 0, cancelled: false, t0: performance.now(), tFirst: 0, resolve: null, reject: null };
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
  g.e.busy = null;
  if (error) g.reject(error);
  else g.resolve(result);
}

async function runScheduler() {
  if (scheduling) return;
  scheduling = true;
  try {
    while (gens.size) {
      for (const g of [...gens.values()]) {
        if (g.cancelled) {
          finishGen(g, { stop: 'cancelled', tokens: g.index, ms: performance.now() - g.t0 });
          continue;
        }
        const r = g.e.engine.step();
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
  const e = engines[0];
  const start = check(e.engine.startRanking(concept || 'custom', positive ?? [], negative ?? [], { topN: topN ?? 0 }), 'ranking');
  ranking = { id, cancelled: false };
  try {
    const total = start.total;
    const step = Math.max(1, batch ?? runtime.threads * 2);
    const t0 = performance.now();
    let done = 0;
    postMessage({ event: 'progress', id, done, total });
    while (done < total) {
      if (ranking.cancelled) {
        e.engine.cancelRanking();
        fail('ranking cancelled');
      }
      done = check(e.engine.rankStep(step), 'ranking').done;
      postMessage({ event: 'progress', id, done, total });
      await yieldToEvents();
    }
    const rankMs = performance.now() - t0;
    const r = check(e.engine.finishRanking(), 'ranking');
    const tableId = nextTableId++;
    const json = check(e.engine.exportExpertTable(r.id, 'json')).text;
    const meta = { id: tableId, concept: r.concept, group: r.group, numUnits: r.numUnits, totalUnits: r.totalUnits, sentences: total, truncated: start.truncated, rankMs };
    tables.set(tableId, { json, meta });
    e.tables.set(tableId, r.id);
    return summarize(e, r.id, meta);
  } finally {
    ranking = null;
  }
}

// Benchmark helper: prefill a prompt, then decode greedily n tokens; times both here (no
// message round trips in the measurement).
function bench({ prompt, decodeTokens }) {
  requireModel();
  const e = engines[0].engine;
  e.clearForcing();
  const t0 = performance.now();
  const r = check(e.startGeneration(prompt, { maxNewTokens: decodeTokens, temperature: 0, stopAtEos: false }));
  const t1 = performance.now();
  let n = 0;
  for (let s; !(s = e.step()).done;) if (s.token >= 0) n++;
  const t2 = performance.now();
  // The first step samples from the prefill logits: n tokens need n - 1 forward passes.
  return { promptTokens: r.promptTokens, prefillMs: t1 - t0, decodeTokens: n, decodeMs: t2 - t1 };
}

function tokenize({ text }) {
  requireModel();
  return Array.from(engines[0].engine.tokenize(text));
}

function detokenize({ ids }) {
  requireModel();
  return engines[0].engine.detokenize(ids);
}

const OPS = {
  init, loadModel, detokenize, addTable, exportTable, removeTable, startGeneration, cancel, rank, bench, tokenize,
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
