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
// One Model per loaded file: its bytes are copied into wasm memory once and its weights serve
// every generation and the ranking (wasm memory never shrinks, so each extra copy would stay
// for good). Each concurrent generation runs on a Session of that model (its own KV cache and
// forcing); sessions are created on demand, up to MAX_SESSIONS, and reused. The worker
// interleaves the running generations one token each in turn for up to SLICE_MS, then yields to
// the event loop so cancel requests (and the ranking's batches) get through. Tokens go to the
// page in batches, at most every FLUSH_MS (a generation's first token at once). Everything runs
// on this one thread, so the model's thread pool is never used by two calls at once.
// loader.mjs and both builds sit next to this file (engine/ of the package, copied there by
// web/update-wasm.sh): a page or bundler that copies the folder keeps them together.
import { loadSelfcond, engineFailure, MAX_WASM_MEMORY } from './loader.mjs';

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
let runtime = null;     // {threaded, threads, backend, pthreads, restarts}
let initArgs = null;    // what init was called with: a restart instantiates the same build
let restarting = null;  // Promise while a lost engine is being replaced
let restarts = 0;
let freshHeapBytes = 0; // wasm memory of a just-instantiated module
let loading = null;     // {id, cancelled} while a loadModel request runs
let maxMemoryBytes = MAX_WASM_MEMORY;  // lowered only by the test hook
let testHooks = false;  // __injectFault is refused unless init was asked for test hooks
const faults = [];      // injected faults: {where, kind, count}
let model = null;       // Module.Model
let modelInfo = null;
const sessions = [];    // [{session, busy: gen id | null}]
const tables = new Map();  // table id (the model's) -> meta
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
  freshHeapBytes = heapBytes();
  const b = Module.buildInfo();
  runtime = { threaded: r.threaded, threads: r.threads, backend: b.backends.split(',')[0], pthreads: b.pthreads, restarts };
  return runtime;
}

function heapBytes() {
  try {
    return Module ? Module.heapBytes() : 0;
  } catch {
    return 0;
  }
}

// Drops the current Module (and every handle into it: the model, its sessions, tables) and
// instantiates a fresh one. Wasm memory never shrinks; a new instance is the only way to give
// it back. The handles are not delete()d: calling into a lost instance may throw again, and the
// whole instance goes to the garbage collector anyway. The threaded build's pthread workers
// are terminated (they would hold the old memory).
function replaceModule() {
  restarting ??= (async () => {
    sessions.length = 0;
    tables.clear();
    model = null;
    modelInfo = null;
    const old = Module;
    Module = null;
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
// engineFailure in wasm/loader.mjs) first fails everything running on the lost instance, tells
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
// engine (a std::vector of 4 GiB - 64 bytes: more than wasm32 can hold, so malloc fails at once
// without growing memory, and the C++ runtime aborts: wasm/tests/recovery.test.mjs).
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
  if (!model) fail(`injected oom in ${where}: needs a loaded model`);
  model.detokenize({ length: 2 ** 30 - 16 });
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
  for (const s of sessions) s.session.delete();
  sessions.length = 0;
  tables.clear();
  model?.delete();
  model = null;
  modelInfo = null;
}

const MiB = (x) => `${(x / 1048576).toFixed(1)} MiB`;

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
    const m = new Module.Model();
    const t0 = performance.now();
    fault('load');
    // The bytes (transferred from the page) are copied into wasm memory and dropped here. (A
    // throw out of load() is an engine failure: the whole instance is replaced, m with it.)
    const r = m.load(new Uint8Array(bytes), { threads: runtime.threads, verifyHash: verify !== false });
    const loadMs = performance.now() - t0;
    if (!r.ok) {
      m.delete();
      fail(`loading the model failed: ${r.error}`);
    }
    model = m;
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
    modelInfo = check(model.info());
    delete modelInfo.ok;
    modelInfo.verified = verify !== false;
    return { ...modelInfo, ...runtime, loadMs };
  } finally {
    loading = null;
  }
}

function requireModel() {
  if (!model) fail('no model loaded');
}

function summarize(id, meta) {
  // Everything the UI charts need, computed once: per layer/site counts of the top units and the
  // AP distribution of all units.
  const u = check(model.expertUnits(id, 1 << 30));
  // id: the global unit ids (traceUnit), from engines that report them.
  return { ...meta, units: { site: u.site, unit: u.unit, ap: u.ap, ...(u.id ? { id: u.id } : {}) } };
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

// The other steering methods (issue 10): an additive steering vector after a block, and a logit
// bias on tokens. Both persist on a session until changed (like the forcing), and sessions are
// reused: every generation sets or clears them before it starts. An engine built before these
// bindings can still clear nothing and generate; asking it for either method fails the request.
function setSteerAndBias(session, steer, bias) {
  const hasSteer = !!(steer && steer.vector && steer.vector.length && Number(steer.alpha));
  const hasBias = !!(bias && bias.tokens && bias.tokens.length);
  if (typeof session.setSteering !== 'function' || typeof session.setLogitBias !== 'function') {
    if (hasSteer || hasBias) fail('this engine build has no steering vector or logit bias (web/lib/engine is older than the package)');
    return;
  }
  if (hasSteer) {
    const layer = Math.floor(Number(steer.layer));
    if (!(layer >= 0 && layer < modelInfo.nLayer)) fail(`steer.layer must be a block 0..${modelInfo.nLayer - 1} (got ${steer.layer})`);
    if (steer.vector.length !== modelInfo.nEmbd) fail(`steer.vector has ${steer.vector.length} numbers; the model's residual has ${modelInfo.nEmbd}`);
    const alpha = Number(steer.alpha);
    if (!Number.isFinite(alpha)) fail('steer.alpha must be a number');
    check(session.setSteering(layer, steer.vector, alpha), 'steering');
  } else {
    check(session.setSteering(0, [], 0), 'steering');
  }
  if (hasBias) {
    const tokens = Array.from(bias.tokens, Number);
    const values = Array.from(bias.bias ?? [], Number);
    if (tokens.length !== values.length) fail(`bias: ${tokens.length} tokens but ${values.length} bias values`);
    if (tokens.some((t) => !Number.isInteger(t) || t < 0 || t >= modelInfo.vocabSize)) fail('bias.tokens must be token ids of the model');
    if (values.some((b) => !Number.isFinite(b))) fail('bias.bias must be finite numbers');
    check(session.setLogitBias(tokens, values), 'logit bias');
  } else {
    check(session.setLogitBias([], []), 'logit bias');
  }
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
    setSteerAndBias(s.session, opts.steer, opts.bias);
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
  if (!gens.has(g.gen)) return;  // already finished (e.g. by an engine failure)
  // Its last tokens go out before its answer: the page must see every token before `done`.
  if (pendingTokens.has(g.gen)) flushTokens();
  if (!gens.has(g.gen)) return;  // sending them failed, and failed g
  gens.delete(g.gen);
  g.s.busy = null;
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

// One token of generation g: steps its session, queues the token for the page, finishes g when
// done (finishGen sends its pending tokens first).
function stepGen(g) {
  if (g.cancelled) g.s.session.cancel();  // the next step reports stop 'cancelled'
  fault('step');
  const r = g.s.session.step();
  if (!r.ok) {
    finishGen(g, null, new Error(r.error));
    return;
  }
  if (r.token >= 0 || r.text) {
    if (r.token >= 0 && !g.index) {
      g.tFirst = performance.now();
      flushNow = true;
    }
    if (r.token >= 0) g.index++;
    let b = pendingTokens.get(g.gen);
    if (!b) pendingTokens.set(g.gen, (b = { gen: g.gen, tokens: [], texts: [], index: 0 }));
    b.tokens.push(r.token);
    b.texts.push(r.text);
    b.index = g.index;
  }
  if (r.done) {
    const ms = performance.now() - g.t0;
    const decodeMs = g.tFirst ? performance.now() - g.tFirst : 0;
    finishGen(g, { stop: r.stop, tokens: g.index, ms, tokensPerSecond: g.index > 1 && decodeMs > 0 ? (g.index - 1) / (decodeMs / 1000) : 0 });
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

async function rank({ id, concept, positive, negative, topN, batch }) {
  requireModel();
  if (ranking) fail('a ranking is already running');
  const start = check(model.startRanking(concept || 'custom', positive ?? [], negative ?? [], { topN: topN ?? 0 }), 'ranking');
  ranking = { id, cancelled: false, lost: null };
  try {
    const total = start.total;
    const threads = runtime.threads;
    const t0 = performance.now();
    let done = 0;
    let msPerSentence = 0;  // measured on the steps so far
    post({ event: 'progress', id, done, total });
    while (done < total) {
      if (ranking.lost) throw ranking.lost;  // the engine failed under us (in a generation's step)
      if (ranking.cancelled) {
        model.cancelRanking();
        fail('ranking cancelled');
      }
      fault('rankStep');
      // `batch` (tests) fixes the step; otherwise as many sentences as fit in the step's time
      // (a multiple of the threads: each takes whole sentences), the first step `threads`.
      const target = gens.size ? RANK_STEP_MS_STREAMING : RANK_STEP_MS;
      const step = batch > 0 ? batch : msPerSentence > 0
        ? Math.max(threads, Math.round(target / msPerSentence / threads) * threads) : threads;
      const ts = performance.now();
      const before = done;
      done = check(model.rankStep(step), 'ranking').done;
      if (done > before) msPerSentence = (performance.now() - ts) / (done - before);
      post({ event: 'progress', id, done, total });
      await yieldToEvents();
    }
    if (ranking.lost) throw ranking.lost;
    const rankMs = performance.now() - t0;
    const r = check(model.finishRanking(), 'ranking');
    return tableMeta(r, { sentences: total, truncated: start.truncated, rankMs });
  } finally {
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
  const s = takeSession('bench', model.tokenize(prompt).length + Math.max(1, decodeTokens));
  try {
    const e = s.session;
    e.clearForcing();
    setSteerAndBias(e, null, null);
    const t0 = performance.now();
    const r = check(e.startGeneration(prompt, { temperature: 0, ...sampling, maxNewTokens: decodeTokens, stopAtEos: false }));
    const t1 = performance.now();
    let n = 0;
    let firstTokenMs = 0;
    // (The step that finishes the generation may carry its last token: counted too.)
    for (let x = { done: false }; !x.done;) {
      x = check(e.step());
      if (x.token >= 0 && n++ === 0) firstTokenMs = performance.now() - t0;
    }
    const t2 = performance.now();
    // The first step samples from the prefill logits: n tokens need n - 1 forward passes.
    return { promptTokens: r.promptTokens, prefillMs: t1 - t0, firstTokenMs, decodeTokens: n, decodeMs: t2 - t1 };
  } finally {
    s.busy = null;
  }
}

// Benchmark helper: the engine's own time to rank a concept, all in one go here (no yielding,
// no progress messages, no table summary for the page): startRanking, every sentence in one
// rankStep, finishRanking. The table is removed again.
function benchRank({ concept, positive, negative, topN }) {
  requireModel();
  if (ranking) fail('a ranking is already running');
  const t0 = performance.now();
  const start = check(model.startRanking(concept || 'bench', positive ?? [], negative ?? [], { topN: topN ?? 0 }), 'ranking');
  const t1 = performance.now();
  check(model.rankStep(start.total), 'ranking');
  const t2 = performance.now();
  const r = check(model.finishRanking(), 'ranking');
  const t3 = performance.now();
  model.removeExpertTable(r.id);
  return { sentences: start.total, startMs: t1 - t0, stepMs: t2 - t1, finishMs: t3 - t2, totalMs: t3 - t0 };
}

// ---- other steering methods and the expert explorer (issue 10) ------------------------------

function requireBinding(name) {
  requireModel();
  if (typeof model[name] !== 'function') fail(`${name}: this engine build does not have it (web/lib/engine is older than the package)`);
}

function strings(x, what) {
  if (!Array.isArray(x) || x.some((s) => typeof s !== 'string')) fail(`${what} must be an array of strings`);
  return x;
}

// The dataset's most typical words by log-odds (function words excluded).
function conceptWords({ positive, negative, maxWords }) {
  requireBinding('conceptWords');
  const n = Math.floor(Number(maxWords ?? 20));
  if (!(n > 0)) fail('maxWords must be a positive integer');
  return check(model.conceptWords(strings(positive, 'positive'), strings(negative, 'negative'), n), 'concept words').words;
}

// The mean residual after block `layer` over the positives minus the negatives (blocking).
function steeringVector({ positive, negative, layer }) {
  requireBinding('steeringVector');
  const l = layer == null ? Math.floor(modelInfo.nLayer / 2) : Math.floor(Number(layer));
  if (!(l >= 0 && l < modelInfo.nLayer)) fail(`layer must be a block 0..${modelInfo.nLayer - 1} (got ${layer})`);
  const r = check(model.steeringVector(strings(positive, 'positive'), strings(negative, 'negative'), l), 'steering vector');
  return { vector: r.vector, layer: r.layer, norm: r.norm };
}

function wordLogitBias({ words, beta }) {
  requireBinding('wordLogitBias');
  const b = Number(beta);
  if (!Number.isFinite(b)) fail('beta must be a number');
  const r = check(model.wordLogitBias(strings(words, 'words'), b), 'logit bias');
  return { tokens: r.tokens, bias: r.bias };
}

// A unit given as its global id (UnitSpace numbering) or as {site, unit} (a table's entry).
function unitId(unit) {
  if (typeof unit === 'number') return unit;
  if (!unit || typeof unit !== 'object') fail('unit must be a global unit id or {site, unit}');
  const { nLayer, nEmbd, nInner } = modelInfo;
  const sizes = [3 * nEmbd, nEmbd, nInner, nEmbd];
  const site = Math.floor(Number(unit.site));
  const u = Math.floor(Number(unit.unit));
  if (!(site >= 0 && site < nLayer * 4)) fail(`unit.site must be 0..${nLayer * 4 - 1}`);
  if (!(u >= 0 && u < sizes[site & 3])) fail(`unit.unit must be 0..${sizes[site & 3] - 1} at site ${site}`);
  let id = 0;
  for (let s = 0; s < site; s++) id += sizes[s & 3];
  return id + u;
}

// One unit's response at every token of a sentence.
function traceUnit({ sentence, unit }) {
  requireBinding('traceUnit');
  if (typeof sentence !== 'string' || !sentence) fail('sentence must be a non-empty string');
  const id = unitId(unit);
  if (!(Number.isInteger(id) && id >= 0 && id < modelInfo.numUnits)) fail(`unit must be 0..${modelInfo.numUnits - 1} (got ${id})`);
  const r = check(model.traceUnit(sentence, id), 'trace');
  return { unit: id, tokens: r.tokens, values: r.values };
}

// The three methods side by side on a small grid (blocking: generations wait meanwhile).
function compareMethods({ table, positive, negative, opts }) {
  requireBinding('compareMethods');
  const o = {};
  for (const [k, v] of Object.entries(opts ?? {})) if (v !== undefined && v !== null) o[k] = v;
  if (o.prompts) strings(o.prompts, 'prompts');
  const r = check(model.compareMethods(knownTable(table), strings(positive, 'positive'), strings(negative, 'negative'), o), 'compare');
  return JSON.parse(r.json);
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
  init, loadModel, detokenize, addTable, exportTable, removeTable, startGeneration, cancel, rank, bench, benchRank, tokenize, memory,
  conceptWords, steeringVector, wordLogitBias, traceUnit, compareMethods,
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
    post({ id, ok: false, error: String(e.message || e.name || 'failed'), ...(e.name === 'AbortError' ? { name: 'AbortError' } : {}) });
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
