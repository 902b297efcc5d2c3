// The selfcond engine in a Web Worker (module worker), so the page never blocks.
//
// Protocol (page -> worker): {id, op, ...args}; the worker answers each request with
// {id, ok: true, result} or {id, ok: false, error, name?} (name 'AbortError' for a cancelled
// load), and streams events meanwhile: {event: 'tokens', batches: [{gen, tokens: [id...],
// texts: [text...], index: the last token's}]} (the tokens of every running generation since
// the last such event, see flushTokens),
// {event: 'progress', id, done, total} (ranking), {event: 'progress', id, phase: 'load'} (the
// model's bytes reached the engine), {event: 'restarted', error} (the engine was lost and
// replaced by a fresh instance: the model must be loaded again).
//
// Error handling: every request, every scheduler step and every event posted runs inside
// try/catch, so a throw becomes {id, ok: false, error} for the request(s) it affects (a step
// that throws fails its own generation, not the others) and the page never waits forever. A
// throw out of WebAssembly itself (a number = an escaped C++ exception, i.e. out of memory;
// RuntimeError 'Aborted') leaves the instance's state undefined: the worker discards that
// Module (releasing its memory, which wasm cannot shrink), instantiates a fresh one, fails
// everything in flight with 'engine ran out of memory (...); restarted, reload the model' and
// never passes the raw thrown value on.
//
// The engine is the C API (include/selfcond/selfcond.h) compiled to WebAssembly, called through
// capi-runtime.js (layouts and signatures generated from the header): this worker is transport
// and scheduling only. It converts the page's requests into C API calls, keeps the handles, and
// interleaves the work; every value is checked by the library, whose message reaches the page.
//
// One model per loaded file: its bytes are copied into wasm memory once and its weights serve
// every generation and the ranking (wasm memory never shrinks, so each extra copy would stay
// for good). Each concurrent generation runs on a session of that model (its own KV cache and
// forcing); sessions are created on demand, up to MAX_SESSIONS, and reused. The worker
// interleaves the running generations one token each in turn for up to SLICE_MS, then yields to
// the event loop so cancel requests (and the ranking's batches) get through. Tokens go to the
// page in batches, at most every FLUSH_MS (a generation's first token at once). Everything runs
// on this one thread, so the model's thread pool is never used by two calls at once.
// loader.mjs and both builds sit next to this file (engine/ of the package, copied there by
// web/update-wasm.sh): a page or bundler that copies the folder keeps them together.
import { loadSelfcond, engineFailure, MAX_WASM_MEMORY } from './loader.mjs';
import { CApi, CApiError } from './capi-runtime.js';
import { STRUCTS } from './capi.js';

// Bytes of a C struct (for output structs the worker reads back).
const STRUCT_SIZE = Object.fromEntries(Object.entries(STRUCTS).map(([k, v]) => [k, v.size]));

const MAX_SESSIONS = 4;
// How long the scheduler steps generations before it yields to the event loop. Yielding after
// every round (one token per stream) cost a task switch per token, and with the tokens posted
// one message each, the page handled ~400 messages/s during two streams; measured with
// `node web/tests/bench.mjs --app` (web/README.md). 10 ms keeps a cancel or a ranking batch
// waiting at most about one frame.
const SLICE_MS = 10;
// Tokens are sent to the page at most every FLUSH_MS (one message for all streams): the page
// cannot show them faster than it paints (~16 ms), and each message is a task on its main
// thread, which on a small machine competes with the engine's threads for the cores.
const FLUSH_MS = 16;
// Ranking: sentences per rankStep are chosen so that one step takes about this long (a step
// cannot be interrupted: cancel waits for it), shorter while generations stream next to it.
// Small steps (threads x 2 sentences, as before) left the pthreads idle at the end of each
// step while the last sentence finished, and posted a progress message per step.
const RANK_STEP_MS = 100;
const RANK_STEP_MS_STREAMING = 20;

let Module = null;
let capi = null;        // CApi over Module
let runtime = null;     // {threaded, threads, backend, pthreads, restarts}
let initArgs = null;    // what init was called with: a restart instantiates the same build
let restarting = null;  // Promise while a lost engine is being replaced
let restarts = 0;
let freshHeapBytes = 0; // wasm memory of a just-instantiated module
let loading = null;     // {id, cancelled} while a loadModel request runs
let maxMemoryBytes = MAX_WASM_MEMORY;  // lowered only by the test hook
let testHooks = false;  // __injectFault is refused unless init was asked for test hooks
const faults = [];      // injected faults: {where, kind, count}
let model = 0;          // selfcond_model* (0: none)
let modelInfo = null;
const sessions = [];    // [{ptr: selfcond_session*, nCtx, busy: gen id | null}]
const tables = new Map();  // table id (for the page) -> {ptr: selfcond_experts*, numUnits, meta}
let nextTableId = 1;
const gens = new Map();    // gen id -> generation state
let ranking = null;        // {id, cancelled}

function fail(msg) {
  throw new Error(msg);
}
function abortError(msg) {
  return Object.assign(new Error(msg), { name: 'AbortError' });
}
// An Error named EngineLost carries the message of a failure that already restarted the engine,
// so that the requests it fails do not restart it again.
class EngineLost extends Error {}

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

async function init({ threads, testHooks: hooks }) {
  if (hooks) testHooks = true;
  if (Module) return runtime;
  initArgs = { threads };
  const baseUrl = new URL('./', import.meta.url);
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
  capi = new CApi(Module);
  freshHeapBytes = heapBytes();
  const b = capi.scoped((a) => {
    const out = a.out();
    capi.call('selfcond_build_info_to_string', out);
    return JSON.parse(capi.takeString(a.u32(out)));
  });
  runtime = { threaded: r.threaded, threads: r.threads, backend: b.backends[0], pthreads: b.pthreads, restarts, engineVersion: b.version };
  return runtime;
}

function heapBytes() {
  return Module ? Module.HEAPU8.length : 0;
}

// Drops the current Module (and every handle into it: the model, its sessions, tables) and
// instantiates a fresh one. Wasm memory never shrinks; a new instance is the only way to give
// it back. The handles are not freed: calling into a lost instance may throw again, and the
// whole instance goes to the garbage collector anyway. The threaded build's pthread workers
// are terminated (they would hold the old memory).
function replaceModule() {
  restarting ??= (async () => {
    sessions.length = 0;
    tables.clear();
    model = 0;
    modelInfo = null;
    const old = Module;
    Module = null;
    capi = null;
    try {
      old?.PThread?.terminateAllThreads();
    } catch (e) {
      console.warn(`stopping the lost engine's threads: ${e?.message ?? e}`);
    }
    restarts++;
    try {
      await init(initArgs);
    } finally {
      restarting = null;
    }
  })();
  return restarting;
}

// Turns any thrown value into an Error for the page. A failure of the engine itself (see
// engineFailure in loader.mjs) first fails everything running on the lost instance, tells
// the page, and replaces the instance; the returned EngineLost says so.
async function handleFailure(err) {
  if (err instanceof EngineLost) return err;
  const f = engineFailure(err, { heapBytes: heapBytes(), maxBytes: maxMemoryBytes });
  if (!f) return err instanceof Error ? err : new Error(String(err));
  const lost = new EngineLost(`${f.message}; restarted, reload the model`);
  console.warn(lost.message);
  for (const g of [...gens.values()]) finishGen(g, null, lost);
  if (ranking) ranking.lost = lost;
  if (loading) loading.lost = lost;
  try {
    await replaceModule();
  } catch (e) {
    lost.message = `${f.message}; restarting the engine failed too (${e?.message ?? e}): reload the page`;
  }
  post({ event: 'restarted', error: lost.message });
  return lost;
}

// postMessage that cannot throw: an event that cannot be sent (it cannot be cloned, say) is
// reported as a warning and false; callers whose request depends on it fail that request.
function post(msg, transfer = []) {
  try {
    postMessage(msg, transfer);
    return true;
  } catch (e) {
    console.warn(`could not send ${msg.event ?? 'a reply'} to the page: ${e?.message ?? e}`);
    return false;
  }
}

// ---- test hooks (init({testHooks: true}) only) -----------------------------------------------

// Arms a fault: the next `count` times the code reaches `where` ('step': a generation's step,
// 'rankStep', 'load': before the model's bytes are parsed, 'post': sending a token event,
// 'message': handling any request), it throws: 'error' an Error; 'abort' what Emscripten's
// abort() throws (RuntimeError 'Aborted(...)'); 'oom' a real allocation failure inside the
// engine (wasm/test_hooks.cc: more than wasm32 can hold, so malloc fails at once without
// growing memory, and the C++ runtime aborts: wasm/tests/recovery.test.mjs).
// {kind: 'maxMemory', bytes} instead lowers the memory limit loads are checked against (0: the
// real one), to test the check without a multi-GB model.
function injectFault({ where, kind, count = 1, bytes }) {
  if (!testHooks) fail('__injectFault: test hooks are off (SelfCond.create({testHooks: true}))');
  if (kind === 'maxMemory') {
    maxMemoryBytes = bytes > 0 ? bytes : MAX_WASM_MEMORY;
    return true;
  }
  if (!['step', 'rankStep', 'load', 'post', 'message'].includes(where)) fail(`__injectFault: unknown place ${where}`);
  if (!['error', 'abort', 'oom'].includes(kind)) fail(`__injectFault: unknown kind ${kind}`);
  faults.push({ where, kind, count });
  return true;
}

function fault(where) {
  const f = faults.find((x) => x.where === where);
  if (!f) return;
  if (--f.count <= 0) faults.splice(faults.indexOf(f), 1);
  if (f.kind === 'error') fail(`injected fault in ${where}`);
  if (f.kind === 'abort') throw new WebAssembly.RuntimeError(`Aborted(injected fault in ${where})`);
  Module._selfcond_wasm_test_alloc_fail();
  fail('injected oom: the engine did not fail to allocate 4 GiB');
}

// Emscripten (3.1.6) starts a pthread beyond its prespawned pool (PTHREAD_POOL_SIZE) only once
// this thread's event loop has handled the new worker's "loaded" message; a GEMM waiting for
// that thread before then would deadlock. So after creating the model's thread pool, return to
// the event loop until every pthread worker has loaded.
async function threadsStarted(stillWanted = () => {}) {
  const P = Module.PThread;
  if (!P?.runningWorkers) return;
  const t0 = performance.now();
  while (P.runningWorkers.some((w) => !w.loaded)) {
    if (performance.now() - t0 > 30000) fail('engine threads did not start within 30 s');
    await new Promise((r) => setTimeout(r, 5));
    stillWanted();
  }
}

function unloadModel() {
  for (const s of sessions) capi.raw('selfcond_session_free', s.ptr);
  sessions.length = 0;
  for (const t of tables.values()) capi.raw('selfcond_experts_free', t.ptr);
  tables.clear();
  if (model) capi.raw('selfcond_model_free', model);
  model = 0;
  modelInfo = null;
}

const MiB = (x) => `${(x / 1048576).toFixed(1)} MiB`;

// The model's facts, as the page has always seen them (selfcond_model_info, plus what the
// worker knows: the build and the threads).
function readModelInfo() {
  return capi.scoped((a) => {
    const p = a.alloc(STRUCT_SIZE.selfcond_model_info);
    capi.raw('selfcond_model_get_info', model, p);
    const i = capi.read('selfcond_model_info', p);
    return {
      ...i,
      precision: 'int8',
      backend: runtime.backend,
      siteKinds: Array.from({ length: i.sitesPerLayer }, (_, k) => capi.raw('selfcond_site_kind_name', model, k)).map((p2) => capi.string(p2)),
    };
  });
}

// {id, bytes (transferred ArrayBuffer), verify = true}. Cancellable (op 'cancel' with gen = id)
// until it returns: a cancel that arrives while the bytes are in transit leaves the loaded model
// in place; one that arrives during the engine's (synchronous, uninterruptible) parse/verify/pack
// is honoured when that returns: the new model is dropped. Either way it rejects with an
// AbortError and the engine stays usable.
async function loadModel({ id, bytes, verify = true }) {
  if (!Module) fail('engine not initialized');
  if (loading) fail('a model is already loading: cancel it first');
  if (ranking) fail('a ranking is running: cancel it before loading another model');
  if (!(bytes instanceof ArrayBuffer)) fail('loadModel: no model bytes');
  loading = { id, cancelled: false, lost: null };
  const stillWanted = () => {
    if (loading.lost) throw loading.lost;
    if (loading.cancelled) throw abortError('loading the model was cancelled');
  };
  try {
    // Let a cancel sent while the bytes were in transit arrive before any work.
    await yieldToEvents();
    stillWanted();
    // Refuse what cannot fit before copying anything: loading peaks at about the file plus
    // XNNPACK's packed copy of its weights (about as large again), on top of the memory the
    // instance already holds. Memory held by an earlier model is free again but wasm cannot
    // return it; a fresh instance starts small, so try that before refusing.
    const need = 2 * bytes.byteLength;
    if (heapBytes() + need > maxMemoryBytes && heapBytes() > freshHeapBytes) {
      for (const g of [...gens.values()]) finishGen(g, null, new Error('generation stopped: another model was loaded'));
      await replaceModule();
      stillWanted();
    }
    if (heapBytes() + need > maxMemoryBytes) {
      fail(`the model file (${MiB(bytes.byteLength)}) does not fit in WebAssembly memory: loading needs about ` +
        `${MiB(need)} (the file and its packed weights) on top of the ${MiB(heapBytes())} in use, ` +
        `and the engine can grow to at most ${MiB(maxMemoryBytes)}`);
    }
    for (const g of [...gens.values()]) finishGen(g, null, new Error('generation stopped: another model was loaded'));
    // The old model goes first: its memory is reused for the new one.
    unloadModel();
    post({ event: 'progress', id, phase: 'load', loaded: bytes.byteLength, total: bytes.byteLength });
    const t0 = performance.now();
    fault('load');
    // The bytes (transferred from the page) are copied into wasm memory once, into a block the
    // engine takes over (selfcond_model_load_owned: no second copy). A throw out of it is an
    // engine failure: the whole instance is replaced.
    const block = Module._malloc(bytes.byteLength);
    if (!block) fail(`the model file (${MiB(bytes.byteLength)}) does not fit in WebAssembly memory`);
    Module.HEAPU8.set(new Uint8Array(bytes), block);
    try {
      model = capi.scoped((a) => {
        const out = a.out();
        const params = a.params('selfcond_model_params', { verifyHash: verify !== false, threads: runtime.threads });
        capi.call('selfcond_model_load_owned', block, bytes.byteLength, params, out);
        return a.u32(out);
      });
    } catch (e) {
      if (e instanceof CApiError) {
        throw Object.assign(new Error(`loading the model failed: ${e.message}`), { code: e.code });
      }
      throw e;
    }
    const loadMs = performance.now() - t0;
    // A cancel sent during the load is in the queue by now.
    await yieldToEvents();
    try {
      stillWanted();
      await threadsStarted(stillWanted);
    } catch (e) {
      if (e instanceof EngineLost) throw e;
      unloadModel();
      throw e;
    }
    modelInfo = readModelInfo();
    modelInfo.verified = verify !== false;
    return { ...modelInfo, ...runtime, loadMs };
  } finally {
    loading = null;
  }
}

function requireModel() {
  if (!model) fail('no model loaded');
}

// Everything the UI charts need, read once: the table's units in rank order (their block,
// kind within the block, index, AP and global id).
function summarize(t) {
  const n = t.numUnits;
  const units = { layer: new Int32Array(n), kind: new Int32Array(n), site: new Int32Array(n), unit: new Int32Array(n), ap: new Float32Array(n), id: new Float64Array(n) };
  const CHUNK = 4096;
  capi.scoped((a) => {
    const size = STRUCT_SIZE.selfcond_expert_unit;
    const buf = a.alloc(size * CHUNK);
    const count = a.out();
    for (let first = 0; first < n; first += CHUNK) {
      capi.call('selfcond_experts_get_units', t.ptr, first, buf, CHUNK, count);
      const got = a.u32(count);
      for (let i = 0; i < got; i++) {
        const u = capi.read('selfcond_expert_unit', buf + i * size);
        const j = first + i;
        units.layer[j] = u.layer;
        units.kind[j] = u.kind;
        units.site[j] = u.site;
        units.unit[j] = u.unit;
        units.ap[j] = u.ap;
        units.id[j] = u.unitId;
      }
    }
  });
  return { ...t.meta, units };
}

// Registers a table handle: its id for the page, its facts.
function addHandle(ptr, extra = {}) {
  const info = capi.scoped((a) => {
    const p = a.alloc(STRUCT_SIZE.selfcond_experts_info);
    capi.raw('selfcond_experts_get_info', ptr, p);
    return capi.read('selfcond_experts_info', p);
  });
  const id = nextTableId++;
  const t = { ptr, numUnits: info.numUnits, meta: { id, concept: info.concept, group: info.group, numUnits: info.numUnits, totalUnits: info.totalUnits, ...extra } };
  tables.set(id, t);
  return summarize(t);
}

function addTable({ text, name, allowUnhashed }) {
  requireModel();
  if (typeof text !== 'string' || !text.trim()) fail('expert table is empty');
  try {
    return addHandle(capi.scoped((a) => {
      const bytes = capi.encoder.encode(text);
      const p = a.alloc(bytes.length);
      capi.u8.set(bytes, p);
      const out = a.out();
      capi.call('selfcond_experts_load_memory_ex', model, p, bytes.length, a.params('selfcond_experts_params', { allowUnhashed: !!allowUnhashed }), out);
      return a.u32(out);
    }));
  } catch (e) {
    if (e instanceof CApiError) fail(`expert table${name ? ` ${name}` : ''}: ${e.message}`);
    throw e;
  }
}

function knownTable(table) {
  const t = tables.get(table);
  if (!t) fail(`unknown expert table ${table}`);
  return t;
}

function exportTable({ table, format }) {
  requireModel();
  const t = knownTable(table);
  return capi.scoped((a) => {
    const out = a.out();
    capi.call('selfcond_experts_to_string', t.ptr, format, out);
    return capi.takeString(a.u32(out));
  });
}

function removeTable({ table }) {
  // Sessions forcing its units keep their own copy of the forcing.
  const t = tables.get(table);
  if (!t) return false;
  tables.delete(table);
  capi.raw('selfcond_experts_free', t.ptr);
  return true;
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
      capi.raw('selfcond_session_free', sessions[small].ptr);
      sessions.splice(small, 1);
    } else if (sessions.length >= MAX_SESSIONS) {
      fail(`at most ${MAX_SESSIONS} generations at a time`);
    }
    const ptr = capi.scoped((a) => {
      const out = a.out();
      // threads 1: this thread; anything else: the model's pool (runtime.threads > 1 only).
      const params = a.params('selfcond_session_params', { nCtx, threads: runtime.threads > 1 ? 0 : 1 });
      capi.call('selfcond_session_create', model, params, out);
      return a.u32(out);
    });
    s = { ptr, nCtx, busy: null };
    sessions.push(s);
  }
  s.busy = gen;
  return s;
}

function tokenCount(text) {
  return capi.scoped((a) => {
    const n = a.out();
    capi.call('selfcond_tokenize_ex', model, a.str(text), 1, 0, 0, n);
    return a.u32(n);
  });
}

// The session's conditioning for one generation: every generation sets (or clears) all three,
// since sessions are reused. experts: [{table, k}]; forcing: {value, onlyLastToken};
// steer: {vector, layer, alpha}; bias: {tokens, bias}. The library checks every value.
function condition(ptr, { experts = [], forcing = {}, steer, bias }) {
  capi.scoped((a) => {
    const sources = experts.map((x) => ({ experts: knownTable(x.table).ptr, topK: Math.max(0, Math.floor(x.k ?? 0)) }));
    capi.call('selfcond_session_set_forcing', ptr, a.structs('selfcond_forcing_source', sources), sources.length,
      forcing.value ?? 'on_p50', forcing.onlyLastToken ? 1 : 0);
    const vec = steer?.vector?.length && Number(steer.alpha) ? steer.vector : [];
    capi.call('selfcond_session_set_steering', ptr, Math.floor(Number(steer?.layer ?? 0)), a.array('f32', vec, 'steer.vector'), vec.length, Number(steer?.alpha ?? 0));
    const toks = bias?.tokens?.length ? Array.from(bias.tokens) : [];
    const vals = toks.length ? Array.from(bias.bias ?? []) : [];
    if (toks.length !== vals.length) fail(`bias: ${toks.length} tokens but ${vals.length} bias values`);
    capi.call('selfcond_session_set_logit_bias', ptr, a.array('i32', toks, 'bias.tokens'), a.array('f32', vals, 'bias.bias'), toks.length);
  });
}

let scheduling = false;

// The page's generation options, in the C API's names (selfcond_generate_params).
const generateParams = (o) => ({
  maxNewTokens: o.maxTokens ?? 50, temperature: o.temperature, topK: o.topK, topP: o.topP,
  seed: o.seed, stopAtEos: o.stopAtEos, stopStrings: o.stopStrings, repeatPenalty: o.repeatPenalty,
  repeatLastN: o.repeatLastN,
});

// Units the session's forcing overwrites (selfcond_session_info.forced_units).
function forcedUnits(sessionPtr) {
  return capi.scoped((a) => {
    const p = a.alloc(STRUCT_SIZE.selfcond_session_info);
    capi.raw('selfcond_session_get_info', sessionPtr, p);
    return Number(capi.read('selfcond_session_info', p).forcedUnits);
  });
}

async function startGeneration({ gen, prompt, opts }) {
  requireModel();
  if (typeof prompt !== 'string') fail('prompt must be a string');
  const need = tokenCount(prompt) + Math.max(1, Math.floor(opts.maxTokens ?? 50));
  const s = takeSession(gen, need);
  let g;
  try {
    condition(s.ptr, opts);
    g = capi.scoped((a) => {
      const out = a.out();
      capi.call('selfcond_generation_start', s.ptr, a.str(prompt), a.params('selfcond_generate_params', generateParams(opts)), out);
      return { gen, s, ptr: a.u32(out), index: 0, promptTokens: 0, cancelled: false, t0: performance.now(), tFirst: 0, resolve: null, reject: null };
    });
  } catch (err) {
    s.busy = null;
    throw err;
  }
  const done = new Promise((res, rej) => {
    g.resolve = res;
    g.reject = rej;
  });
  gens.set(gen, g);
  runScheduler();
  const result = await done;
  return { promptTokens: g.promptTokens, ...result };
}

function finishGen(g, result, error) {
  if (!gens.has(g.gen)) return;  // already finished (e.g. by an engine failure)
  // Its last tokens go out before its answer: the page must see every token before `done`.
  if (pendingTokens.has(g.gen)) flushTokens();
  if (!gens.has(g.gen)) return;  // sending them failed, and failed g
  gens.delete(g.gen);
  g.s.busy = null;
  if (capi && g.ptr) capi.raw('selfcond_generation_free', g.ptr);
  g.ptr = 0;
  if (error) g.reject(error);
  else g.resolve(result);
}

// Steps every running generation by one token in turn until none is left, yielding to the event
// loop every SLICE_MS. Never throws (it is not awaited by anyone): a throw while stepping or
// streaming one generation fails that generation; an engine failure fails all of them
// (handleFailure).
async function runScheduler() {
  if (scheduling) return;
  scheduling = true;
  try {
    while (gens.size) {
      const sliceEnd = performance.now() + SLICE_MS;
      do {
        for (const g of [...gens.values()]) {
          // An earlier generation of this round may have failed the engine and with it this one.
          if (!gens.has(g.gen)) continue;
          try {
            stepGen(g);
          } catch (err) {
            const e = await handleFailure(err);
            if (gens.has(g.gen)) finishGen(g, null, e);
          }
        }
        // A first token ends the slice: another generation started with it (the app starts two
        // at once) may be waiting in the event queue for its prefill.
        const first = flushNow;
        if (pendingTokens.size && (flushNow || performance.now() - lastFlush >= FLUSH_MS)) flushTokens();
        if (first) break;
      } while (gens.size && performance.now() < sliceEnd);
      await yieldToEvents();
    }
  } catch (err) {
    // Only the loop's own bookkeeping can get here; fail whatever is left rather than hang it.
    const e = await handleFailure(err);
    for (const g of [...gens.values()]) finishGen(g, null, e);
  } finally {
    scheduling = false;
  }
}

// Tokens not yet sent to the page: gen id -> {gen, tokens, texts, index}.
const pendingTokens = new Map();
let lastFlush = 0;
let flushNow = false;  // a generation has its first token: send it at once (time to first token)

// Sends every pending token in one 'tokens' event. If it cannot be sent, the generations whose
// tokens were in it fail (a token the page never sees would silently corrupt the text); an
// engine failure (only an injected one can get here) fails everything and restarts the engine.
function flushTokens() {
  if (!pendingTokens.size) return;
  const batches = [...pendingTokens.values()];
  pendingTokens.clear();
  flushNow = false;
  lastFlush = performance.now();
  try {
    fault('post');
    if (!post({ event: 'tokens', batches })) {
      fail(`could not send tokens ${batches.map((b) => `${b.index - b.tokens.length + 1}-${b.index}`).join(', ')} to the page`);
    }
  } catch (err) {
    if (engineFailure(err)) {
      handleFailure(err);  // fails every generation at once, then replaces the engine
      return;
    }
    for (const b of batches) {
      const g = gens.get(b.gen);
      if (g) finishGen(g, null, err);
    }
  }
}

// One step of a generation (selfcond_generation_next): {token, piece, done, stop, ...}.
function nextStep(ptr) {
  return capi.scoped((a) => {
    const p = a.alloc(STRUCT_SIZE.selfcond_generation_step);
    capi.call('selfcond_generation_next', ptr, p);
    return capi.read('selfcond_generation_step', p);
  });
}

// One token of generation g: steps it, queues the token for the page, finishes g when done
// (finishGen sends its pending tokens first).
function stepGen(g) {
  if (g.cancelled) capi.raw('selfcond_generation_cancel', g.ptr);  // the next step reports 'cancelled'
  fault('step');
  let r;
  try {
    r = nextStep(g.ptr);
  } catch (err) {
    if (!(err instanceof CApiError)) throw err;
    finishGen(g, null, new Error(err.message));
    return;
  }
  g.promptTokens = r.promptTokens;
  if (r.token >= 0 || r.piece) {
    if (r.token >= 0 && !g.index) {
      g.tFirst = performance.now();
      flushNow = true;
    }
    if (r.token >= 0) g.index++;
    let b = pendingTokens.get(g.gen);
    if (!b) pendingTokens.set(g.gen, (b = { gen: g.gen, tokens: [], texts: [], index: 0 }));
    b.tokens.push(r.token);
    b.texts.push(r.piece);
    b.index = g.index;
  }
  if (r.done) {
    const ms = performance.now() - g.t0;
    const decodeMs = g.tFirst ? performance.now() - g.tFirst : 0;
    finishGen(g, { stop: r.stop, tokens: g.index, forcedUnits: forcedUnits(g.s.ptr), ms, tokensPerSecond: g.index > 1 && decodeMs > 0 ? (g.index - 1) / (decodeMs / 1000) : 0 });
  }
}

// Cancels the generation, ranking or model load whose request id is gen.
function cancel({ gen }) {
  const g = gens.get(gen);
  if (g) g.cancelled = true;
  if (ranking && ranking.id === gen) ranking.cancelled = true;
  if (loading && loading.id === gen) loading.cancelled = true;
  return true;
}

// ---- ranking ---------------------------------------------------------------------------------

function startRanking(concept, positive, negative, topN) {
  return capi.scoped((a) => {
    const out = a.out();
    const pos = a.strs(positive, 'positive');
    const neg = a.strs(negative, 'negative');
    const params = a.params('selfcond_rank_params', { topN: topN ?? 0, threads: runtime.threads > 1 ? 0 : 1 });
    capi.call('selfcond_ranking_start', model, a.str(concept), pos, positive.length, neg, negative.length, params, out);
    const ptr = a.u32(out);
    const info = a.alloc(STRUCT_SIZE.selfcond_ranking_info);
    capi.raw('selfcond_ranking_get_info', ptr, info);
    return { ptr, ...capi.read('selfcond_ranking_info', info) };
  });
}

function rankStep(ptr, n) {
  return capi.scoped((a) => {
    const done = a.out();
    capi.call('selfcond_ranking_step', ptr, n, done, 0);
    return a.u32(done);
  });
}

function finishRanking(ptr) {
  return capi.scoped((a) => {
    const out = a.out();
    capi.call('selfcond_ranking_finish', ptr, out);
    return a.u32(out);
  });
}

async function rank({ id, concept, positive, negative, topN, batch }) {
  requireModel();
  if (ranking) fail('a ranking is already running');
  let r;
  try {
    r = startRanking(concept || 'custom', positive, negative, topN);
  } catch (e) {
    if (e instanceof CApiError) fail(`ranking: ${e.message}`);
    throw e;
  }
  ranking = { id, ptr: r.ptr, cancelled: false, lost: null };
  try {
    const total = r.total;
    const threads = runtime.threads;
    const t0 = performance.now();
    let done = 0;
    let msPerSentence = 0;  // measured on the steps so far
    post({ event: 'progress', id, done, total });
    while (done < total) {
      if (ranking.lost) throw ranking.lost;  // the engine failed under us (in a generation's step)
      if (ranking.cancelled) fail('ranking cancelled');
      fault('rankStep');
      // `batch` (tests) fixes the step; otherwise as many sentences as fit in the step's time
      // (a multiple of the threads: each takes whole sentences), the first step `threads`.
      const target = gens.size ? RANK_STEP_MS_STREAMING : RANK_STEP_MS;
      const step = batch > 0 ? batch : msPerSentence > 0
        ? Math.max(threads, Math.round(target / msPerSentence / threads) * threads) : threads;
      const ts = performance.now();
      const before = done;
      done = rankStep(r.ptr, step);
      if (done > before) msPerSentence = (performance.now() - ts) / (done - before);
      post({ event: 'progress', id, done, total });
      await yieldToEvents();
    }
    if (ranking.lost) throw ranking.lost;
    const rankMs = performance.now() - t0;
    return addHandle(finishRanking(r.ptr), { sentences: total, truncated: r.numTruncated, rankMs });
  } finally {
    // A lost engine's handles go with its instance; a live one frees the ranking (and so
    // cancels it).
    if (!ranking.lost && capi) capi.raw('selfcond_ranking_free', r.ptr);
    ranking = null;
  }
}

// Benchmark helper: prefill a prompt, then decode n tokens; times both here (no message round
// trips in the measurement). Greedy unless `sampling` ({temperature, topK, topP, seed}) says
// otherwise (the app's settings, to see what sampling costs next to greedy decoding).
// firstTokenMs: prefill plus the first step (which samples from the prefill logits), i.e. the
// engine's own time to first token.
function bench({ prompt, decodeTokens, sampling }) {
  requireModel();
  const s = takeSession('bench', tokenCount(prompt) + Math.max(1, decodeTokens));
  let gen = 0;
  try {
    condition(s.ptr, {});
    const t0 = performance.now();
    gen = capi.scoped((a) => {
      const out = a.out();
      // Greedy unless sampling is given: generateParams sets every key, so an absent
      // `temperature` would be an explicit undefined (the C default, 1) after the spread.
      const params = a.params('selfcond_generate_params', { ...generateParams(sampling ?? {}), temperature: sampling?.temperature ?? 0, maxNewTokens: decodeTokens, stopAtEos: false });
      capi.call('selfcond_generation_start', s.ptr, a.str(prompt), params, out);
      return a.u32(out);
    });
    const t1 = performance.now();
    let n = 0;
    let firstTokenMs = 0;
    let promptTokens = 0;
    // (The step that finishes the generation may carry its last token: counted too.)
    for (let x = { done: false }; !x.done;) {
      x = nextStep(gen);
      promptTokens = x.promptTokens;
      if (x.token >= 0 && n++ === 0) firstTokenMs = performance.now() - t0;
    }
    const t2 = performance.now();
    // The first step samples from the prefill logits: n tokens need n - 1 forward passes.
    return { promptTokens, prefillMs: t1 - t0, firstTokenMs, decodeTokens: n, decodeMs: t2 - t1 };
  } finally {
    if (gen) capi.raw('selfcond_generation_free', gen);
    s.busy = null;
  }
}

// Benchmark helper: the engine's own time to rank a concept, all in one go here (no yielding,
// no progress messages, no table for the page): start, every sentence in one step, finish.
function benchRank({ concept, positive, negative, topN }) {
  requireModel();
  if (ranking) fail('a ranking is already running');
  const t0 = performance.now();
  const r = startRanking(concept || 'bench', positive, negative, topN);
  try {
    const t1 = performance.now();
    rankStep(r.ptr, r.total);
    const t2 = performance.now();
    capi.raw('selfcond_experts_free', finishRanking(r.ptr));
    const t3 = performance.now();
    return { sentences: r.total, startMs: t1 - t0, stepMs: t2 - t1, finishMs: t3 - t2, totalMs: t3 - t0 };
  } finally {
    capi.raw('selfcond_ranking_free', r.ptr);
  }
}

// ---- other steering methods, the expert explorer, measurements --------------------------------

// fn(datasetPtr) with a dataset of the sentences (validated by the library), freed after.
function withDataset(concept, positive, negative, fn) {
  const ds = capi.scoped((a) => {
    const out = a.out();
    const pos = a.strs(positive, 'positive');  // a TypeError unless an array of strings
    const neg = a.strs(negative, 'negative');
    capi.call('selfcond_dataset_create', a.str(concept || 'concept'), pos, positive.length, neg, negative.length, out);
    return a.u32(out);
  });
  try {
    return fn(ds);
  } finally {
    capi.raw('selfcond_dataset_free', ds);
  }
}

// The dataset's most typical words by log-odds (function words excluded).
function conceptWords({ positive, negative, maxWords }) {
  requireModel();
  return withDataset('concept', positive, negative, (ds) => capi.scoped((a) => {
    const out = a.out();
    capi.call('selfcond_concept_words_to_string', ds, Math.floor(Number(maxWords ?? 20)), out);
    return JSON.parse(capi.takeString(a.u32(out))).map((w) => ({ word: w.word, logOdds: w.log_odds, positive: w.positive, negative: w.negative }));
  }));
}

// The mean residual after block `layer` (-1 or none: the middle block) over the positives minus
// the negatives (blocking).
function steeringVector({ positive, negative, layer }) {
  requireModel();
  const l = layer == null ? -1 : Math.floor(Number(layer));
  return withDataset('concept', positive, negative, (ds) => capi.scoped((a) => {
    const n = modelInfo.nEmbd;
    const out = a.alloc(4 * n);
    capi.call('selfcond_steering_vector', model, ds, l, 'int8', out, n);
    const vector = new Float32Array(capi.u8.slice(out, out + 4 * n).buffer);
    return { vector, layer: l >= 0 ? l : Math.floor(modelInfo.nLayer / 2), norm: Math.hypot(...vector) };
  }));
}

function wordLogitBias({ words, beta }) {
  requireModel();
  return capi.scoped((a) => {
    const w = a.strs(words, 'words');
    const list = words;
    const n = a.out();
    capi.call('selfcond_word_logit_bias', model, w, list.length, Number(beta), 0, 0, 0, n);
    const cap = a.u32(n);
    const t = a.alloc(4 * cap);
    const b = a.alloc(4 * cap);
    capi.call('selfcond_word_logit_bias', model, w, list.length, Number(beta), t, b, cap, n);
    return { tokens: Array.from(new Int32Array(capi.u8.slice(t, t + 4 * cap).buffer)), bias: Array.from(new Float32Array(capi.u8.slice(b, b + 4 * cap).buffer)) };
  });
}

// One unit's response at every token of a sentence: unit is its global id (table.units.id).
function traceUnit({ sentence, unit }) {
  requireModel();
  if (typeof sentence !== 'string') fail('sentence must be a string');
  if (!Number.isInteger(unit)) fail('unit must be a global unit id (an integer: table.units.id)');
  return capi.scoped((a) => {
    const text = a.str(sentence);
    const n = a.out();
    capi.call('selfcond_trace_unit', model, text, unit, 'int8', 0, 0, 0, n);
    const cap = a.u32(n);
    const t = a.alloc(4 * cap);
    const v = a.alloc(4 * cap);
    capi.call('selfcond_trace_unit', model, text, unit, 'int8', t, v, cap, n);
    const ids = new Int32Array(capi.u8.slice(t, t + 4 * cap).buffer);
    const tokens = Array.from(ids, (id) => {
      const idp = a.array('i32', [id]);
      const out = a.out();
      capi.call('selfcond_detokenize_to_string', model, idp, 1, out);
      return capi.takeString(a.u32(out));
    });
    return { unit, tokens, values: Array.from(new Float32Array(capi.u8.slice(v, v + 4 * cap).buffer)) };
  });
}

// The three methods side by side (blocking: generations wait meanwhile). opts: the fields of
// selfcond_compare_params (selfcond.js turns its documented options into them).
function compareMethods({ table, positive, negative, opts }) {
  requireModel();
  const t = knownTable(table);
  return withDataset(t.meta.concept, positive, negative, (ds) => capi.scoped((a) => {
    const out = a.out();
    capi.call('selfcond_compare_methods', model, t.ptr, ds, a.params('selfcond_compare_params', opts ?? {}), 0, 0, out);
    return JSON.parse(capi.takeString(a.u32(out)));
  }));
}

// How many of a table's experts to force (the CLI's --experts T:auto). positive/negative: the
// concept's sentences (their log-odds words mark a mention), or none (the concept's name does).
// opts: the fields of selfcond_choose_k_params. -> the report (k, met, reason, words, tried).
function chooseK({ table, positive, negative, opts }) {
  requireModel();
  const t = knownTable(table);
  const run = (ds) => capi.scoped((a) => {
    const result = a.alloc(STRUCT_SIZE.selfcond_choose_k_result);
    const report = a.out();
    capi.call('selfcond_choose_k', model, t.ptr, ds, a.params('selfcond_choose_k_params', opts ?? {}), 0, 0, result, report);
    return JSON.parse(capi.takeString(a.u32(report)));
  });
  return positive || negative ? withDataset(t.meta.concept, positive, negative, run) : run(0);
}

// Memory of the engine: the wasm memory (it only grows: the peak of everything allocated so
// far) next to what the model and the sessions account for.
function memory() {
  const kv = sessions.map((s) => capi.scoped((a) => {
    const p = a.alloc(STRUCT_SIZE.selfcond_session_info);
    capi.raw('selfcond_session_get_info', s.ptr, p);
    return capi.read('selfcond_session_info', p).kvCacheBytes;
  }));
  return {
    wasmBytes: heapBytes(),
    fileBytes: modelInfo?.fileBytes ?? 0,
    packedBytes: modelInfo?.packedBytes ?? 0,
    kvCacheBytes: kv.reduce((x, y) => x + y, 0),
    sessions: sessions.length,
    generating: gens.size,
    ranking: !!ranking,
  };
}

function tokenize({ text }) {
  requireModel();
  return capi.scoped((a) => {
    const s = a.str(text);
    const n = a.out();
    capi.call('selfcond_tokenize', model, s, 0, 0, n);
    const cap = a.u32(n);
    const out = a.alloc(4 * cap);
    capi.call('selfcond_tokenize', model, s, out, cap, n);
    return Array.from(new Int32Array(capi.u8.slice(out, out + 4 * cap).buffer));
  });
}

function detokenize({ ids }) {
  requireModel();
  return capi.scoped((a) => {
    const list = Array.from(ids ?? []);
    const out = a.out();
    capi.call('selfcond_detokenize_to_string', model, a.array('i32', list, 'ids'), list.length, out);
    return capi.takeString(a.u32(out));
  });
}

const OPS = {
  init, loadModel, detokenize, addTable, exportTable, removeTable, startGeneration, cancel, rank, bench, benchRank, tokenize, memory,
  conceptWords, steeringVector, wordLogitBias, traceUnit, compareMethods, chooseK,
  info: () => (modelInfo ? { ...modelInfo, ...runtime, restarts } : { ...runtime, restarts }),
  __injectFault: injectFault,
};

// Every request is answered exactly once, whatever happens: the op's result, or its error (an
// engine failure first replaces the engine, see handleFailure), or, if the result cannot be
// sent (not cloneable), that error.
async function handle(data) {
  const { id, op } = data ?? {};
  try {
    // Requests that arrive while a lost engine is replaced wait for the new one ('cancel' need
    // not: it only sets flags).
    if (restarting && op !== 'cancel') await restarting;
    const fn = Object.hasOwn(OPS, op) ? OPS[op] : null;
    if (!fn) fail(`unknown op ${op}`);
    if (op !== '__injectFault') fault('message');
    const result = await fn(data);
    // A steering vector goes to the page transferred, not copied.
    const transfer = result?.vector instanceof Float32Array ? [result.vector.buffer] : [];
    if (!post({ id, ok: true, result }, transfer)) fail(`the result of ${op} could not be sent to the page`);
  } catch (err) {
    let e;
    try {
      e = await handleFailure(err);
    } catch (inner) {
      e = new Error(`${err?.message ?? String(err)} (and handling it failed: ${inner?.message ?? inner})`);
    }
    // code: the C API's status by name ('invalid_argument', 'data_loss', ...) when the library
    // refused the request.
    post({
      id, ok: false, error: String(e.message || e.name || 'failed'),
      ...(e.name === 'AbortError' ? { name: 'AbortError' } : {}),
      ...(typeof e.code === 'string' ? { code: e.code } : {}),
    });
  }
}

self.onmessage = (ev) => {
  handle(ev.data);
};
// Last line of defence: nothing in this worker should reject unhandled, but if something does,
// say so in the console rather than fail silently.
self.addEventListener('unhandledrejection', (ev) => {
  console.warn(`selfcond worker: unhandled rejection: ${ev.reason?.message ?? ev.reason}`);
  ev.preventDefault();
});
