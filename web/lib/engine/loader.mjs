// Loads the right selfcond WebAssembly build: the pthreads one ("selfcond-mt") when threads > 1
// are wanted AND the page is cross-origin isolated (SharedArrayBuffer needs COOP/COEP headers),
// else the single-threaded one. Works in browsers, Web Workers and Node 20.
//
//   import { loadSelfcond } from './loader.mjs';
//   const { Module, threaded } = await loadSelfcond({ baseUrl: new URL('./', import.meta.url) });
//   const capi = new CApi(Module);        // the C API: capi-runtime.js
//
// The worker protocol and UI are in web/; this file chooses and instantiates the build, and
// tells an engine failure (a throw out of WebAssembly: out of memory, abort) from a JS error.

/** True where a SharedArrayBuffer-backed wasm memory can be used. */
export function canUseThreads() {
  return typeof SharedArrayBuffer !== 'undefined' && globalThis.crossOriginIsolated !== false;
}

/** The number of cores the platform reports (1 if unknown). */
export function hardwareThreads() {
  if (globalThis.navigator?.hardwareConcurrency) return navigator.hardwareConcurrency;
  return 1;
}

/**
 * @param {{baseUrl?: URL|string, threads?: number, wasmBinary?: ArrayBuffer}} [opts]
 * threads: wanted worker threads (default: hardwareThreads(), at most 4).
 * @returns {Promise<{Module: object, threaded: boolean, threads: number}>}
 */
export async function loadSelfcond(opts = {}) {
  const baseUrl = new URL(opts.baseUrl ?? './', import.meta.url);
  const wanted = Math.max(1, Math.min(opts.threads ?? hardwareThreads(), 4));
  const threaded = wanted > 1 && canUseThreads();
  const name = threaded ? 'selfcond-mt' : 'selfcond';
  const isNode = typeof process === 'object' && process.versions?.node;
  const moduleArgs = {};
  if (opts.wasmBinary) moduleArgs.wasmBinary = opts.wasmBinary;
  if (isNode) {
    // Emscripten 3.1.6's ES module output still uses require() and __dirname on Node, and Node
    // 20's fetch() cannot load file paths: provide both and read the .wasm ourselves.
    const { createRequire } = await import('node:module');
    const { fileURLToPath } = await import('node:url');
    const path = await import('node:path');
    const dir = fileURLToPath(baseUrl);
    globalThis.require ??= createRequire(import.meta.url);
    globalThis.__dirname ??= dir;
    if (!moduleArgs.wasmBinary) {
      const { readFileSync } = await import('node:fs');
      moduleArgs.wasmBinary = readFileSync(path.join(dir, `${name}.wasm`));
    }
  }
  const { default: create } = await import(new URL(`${name}.mjs`, baseUrl).href);
  const Module = await create(moduleArgs);
  return { Module, threaded, threads: threaded ? wanted : 1 };
}

/**
 * The most WebAssembly memory an instance may grow to: -sMAXIMUM_MEMORY=4GB in
 * wasm/CMakeLists.txt (keep the two in step). JS cannot read a Memory's maximum back.
 */
export const MAX_WASM_MEMORY = 4 * 1024 ** 3;

const MiB = (x) => `${Math.round(x / 1048576)} MiB`;

/**
 * Tells whether a value thrown by a call into the module means the instance is lost, and why.
 * The library never throws: its fallible calls return {ok: false, error}. What does come out of
 * WebAssembly as a throw is the runtime giving up half-way through a C++ call, which leaves the
 * instance's state (heap, locks, half-built objects) undefined, so it must be discarded:
 *   - a number (or "<number> - Exception catching is disabled ..."): a C++ exception escaped.
 *     The build does not catch exceptions and __cxa_throw throws the exception's address. The
 *     library reports errors as statuses, so in practice this is std::bad_alloc (or a
 *     container's length_error for an impossible size): out of memory.
 *   - WebAssembly.RuntimeError: abort() ("Aborted(...)"), unreachable, out-of-bounds access. A
 *     bare "Aborted()" is C's abort() with no message: the library never calls it, but libc++
 *     built without exceptions ends a failed allocation (operator new -> std::bad_alloc) that
 *     way, so it is reported as running out of memory too.
 *   - RangeError from growing memory or an ArrayBuffer.
 * Ordinary JS errors (TypeError, embind's BindingError for a bad argument, our own Errors) are
 * thrown before C++ runs or after it returned: null, the instance is fine.
 *
 * @param {unknown} err the thrown value
 * @param {{heapBytes?: number, maxBytes?: number}} [mem] the instance's memory size, for the message
 * @returns {null | {kind: 'oom' | 'abort', message: string}}
 */
export function engineFailure(err, { heapBytes = 0, maxBytes = MAX_WASM_MEMORY } = {}) {
  const mem = heapBytes ? `; wasm memory ${MiB(heapBytes)} of at most ${MiB(maxBytes)}` : '';
  const cxx = typeof err === 'number' || typeof err === 'bigint' ||
    (typeof err === 'string' && /^\d+( - |$)/.test(err));
  if (cxx) {
    const ptr = String(err).match(/^\d+/)[0];
    return {
      kind: 'oom',
      message: `engine ran out of memory (uncaught C++ exception ${ptr}, most likely std::bad_alloc${mem})`,
    };
  }
  const Runtime = globalThis.WebAssembly?.RuntimeError;
  const runtime = Runtime && err instanceof Runtime;
  const memError = err instanceof RangeError && /memory|allocat/i.test(err.message);
  if (runtime || memError) {
    const silent = runtime && /^Aborted\(\)/.test(err.message);
    const oom = memError || silent || /out of memory|enlarge memory|allocat|OOM/i.test(err.message) ||
      (heapBytes && heapBytes > 0.9 * maxBytes);
    const text = silent ? 'RuntimeError: Aborted() without a message, how a failed C++ allocation ends in this build'
      : `${err.name}: ${err.message}`;
    return { kind: oom ? 'oom' : 'abort', message: `${oom ? 'engine ran out of memory' : 'engine aborted'} (${text}${mem})` };
  }
  if (err instanceof Error) return null;
  // Anything else thrown (undefined, a plain object): not ours either, so the engine's.
  return { kind: 'abort', message: `engine aborted (it threw ${typeof err} ${String(err).slice(0, 100)}${mem})` };
}
