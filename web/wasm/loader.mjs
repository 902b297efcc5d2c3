// Loads the right selfcond WebAssembly build: the pthreads one ("selfcond-mt") when threads > 1
// are wanted AND the page is cross-origin isolated (SharedArrayBuffer needs COOP/COEP headers),
// else the single-threaded one. Works in browsers, Web Workers and Node 20.
//
//   import { loadSelfcond } from './loader.mjs';
//   const { Module, threaded } = await loadSelfcond({ baseUrl: new URL('./dist/', import.meta.url) });
//   const engine = new Module.Engine();   // API: wasm/bindings.cc
//
// The full worker protocol and UI come later (web/); this file only chooses and instantiates.

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
  const baseUrl = new URL(opts.baseUrl ?? './dist/', import.meta.url);
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
