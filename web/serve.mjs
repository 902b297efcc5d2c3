#!/usr/bin/env node
// A tiny static file server for the selfcond web app (no npm dependencies).
//
//   node web/serve.mjs [--port 8080] [--host 127.0.0.1] [--root <repo>] [--no-isolation]
//
// Serves the repository root (the app loads demo/models/*.scm and demo/experts/*.json from it)
// with Cross-Origin-Opener-Policy / Cross-Origin-Embedder-Policy headers, so the page is
// cross-origin isolated and can use the threaded (SharedArrayBuffer) WebAssembly build.
// --no-isolation leaves them out (the app then runs the single-threaded build).
// Every response carries a Content-Security-Policy (see CSP below and web/README.md).
// --port 0 picks a free port; the URL is printed on the first line of stdout.
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { createReadStream, promises as fs } from 'node:fs';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
function flag(name, def) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}
const root = resolve(flag('root', join(here, '..')));
const host = flag('host', '127.0.0.1');
const port = Number(flag('port', process.env.PORT ?? 8080));
const isolate = !args.includes('--no-isolation');
const quiet = args.includes('--quiet');

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.md': 'text/markdown; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.csv': 'text/csv; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
  '.ts': 'text/plain; charset=utf-8',
  '.scm': 'application/octet-stream',
};

// Content-Security-Policy of the pages: only this origin's scripts (no inline script, no eval;
// 'wasm-unsafe-eval' lets them compile WebAssembly), workers, styles and fetches; images also
// from data: (the favicon). index.html and bench.html carry the same policy in a <meta> tag
// (minus frame-ancestors, which only works as a header) for when another server hosts them.
// An inline import map (<script type="importmap">, demo/embed's unbundled page: browsers have no
// external import maps) is a script to CSP: a page that has one gets its SHA-256 added to
// script-src, that map and nothing else.
function pageCsp(scriptHashes = []) {
  return [
    "default-src 'self'", ["script-src 'self' 'wasm-unsafe-eval'", ...scriptHashes.map((h) => `'sha256-${h}'`)].join(' '),
    "worker-src 'self'", "connect-src 'self'", "img-src 'self' data:", "style-src 'self'", "font-src 'self'",
    "object-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
  ].join('; ');
}
/** Base64 SHA-256 of each inline import map of an HTML page (the hash CSP matches). */
function importMapHashes(html) {
  return [...html.matchAll(/<script type="importmap">([\s\S]*?)<\/script>/g)]
    .map((m) => createHash('sha256').update(m[1], 'utf8').digest('base64'));
}
// A worker's policy comes from its own script's response, not from the page. The engine's
// workers (the package's engine/worker.js and the threaded build's pthread workers) call the
// C API compiled to WebAssembly through generated glue: no eval, no new Function (the build has
// no embind and -sDYNAMIC_EXECUTION=0), so 'wasm-unsafe-eval' is all they get: compiling the
// engine's own .wasm. Nothing else runs there (no DOM, no HTML), and they may fetch and import
// only from here.
const ENGINE_WORKER_CSP = [
  "default-src 'self'", "script-src 'self' 'wasm-unsafe-eval'", "worker-src 'self'",
  "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
].join('; ');
// Matched by the end of the path: the package's engine folder wherever it is served from
// (/web/lib/engine/, an installed node_modules/selfcond/engine/, the copy next to a bundle),
// /wasm/dist/selfcond-mt.worker.js, and the layout before the package (/lib/worker.js,
// /wasm/selfcond-mt.worker.js: web/tests/bench.mjs --app --baseline serves a previous commit's
// web/ next to this one).
const ENGINE_WORKER_SUFFIXES = ['/engine/worker.js', '/engine/selfcond-mt.worker.js', '/lib/worker.js',
  '/wasm/selfcond-mt.worker.js', '/dist/selfcond-mt.worker.js'];
const isEngineWorker = (pathname) => ENGINE_WORKER_SUFFIXES.some((s) => pathname.endsWith(s));

function commonHeaders(extra = {}, pathname = '', scriptHashes = []) {
  const h = {
    'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff',
    'Content-Security-Policy': isEngineWorker(pathname) ? ENGINE_WORKER_CSP : pageCsp(scriptHashes),
    'Referrer-Policy': 'no-referrer',
    ...extra,
  };
  if (isolate) {
    h['Cross-Origin-Opener-Policy'] = 'same-origin';
    h['Cross-Origin-Embedder-Policy'] = 'require-corp';
    h['Cross-Origin-Resource-Policy'] = 'same-origin';
  }
  return h;
}

function fail(res, code, msg) {
  res.writeHead(code, commonHeaders({ 'Content-Type': 'text/plain; charset=utf-8' }));
  res.end(`${code} ${msg}\n`);
}

const server = createServer(async (req, res) => {
  try {
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(res, 405, 'method not allowed');
    const url = new URL(req.url, 'http://x');
    let rel;
    try {
      rel = decodeURIComponent(url.pathname);
    } catch {
      return fail(res, 400, 'bad path');
    }
    if (rel === '/') {
      res.writeHead(302, commonHeaders({ Location: '/web/' }));
      return res.end();
    }
    const path = normalize(join(root, rel));
    if (path !== root && !path.startsWith(root + sep)) return fail(res, 403, 'forbidden');
    let st = await fs.stat(path).catch(() => null);
    let file = path;
    if (st?.isDirectory()) {
      if (!rel.endsWith('/')) {
        res.writeHead(301, commonHeaders({ Location: `${url.pathname}/${url.search}` }));
        return res.end();
      }
      file = join(path, 'index.html');
      st = await fs.stat(file).catch(() => null);
    }
    if (!st?.isFile()) return fail(res, 404, 'not found');
    const type = MIME[extname(file).toLowerCase()] ?? 'application/octet-stream';
    const hashes = type.startsWith('text/html') ? importMapHashes(await fs.readFile(file, 'utf8')) : [];
    const headers = commonHeaders({
      'Content-Type': type,
      'Content-Length': st.size,
      'Last-Modified': st.mtime.toUTCString(),
      // Size and modification time in ms: a file replaced within the same second (Last-Modified
      // has whole seconds) still gets a new validator (the package's store revalidates by them).
      ETag: `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`,
    }, url.pathname, hashes);
    res.writeHead(200, headers);
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).on('error', () => res.destroy()).pipe(res);
  } catch (e) {
    fail(res, 500, String(e?.message ?? e));
  }
});

server.listen(port, host, () => {
  const { port: p } = server.address();
  const shown = host === '0.0.0.0' || host === '::' ? 'localhost' : host;
  console.log(`http://${shown}:${p}/web/`);
  if (!quiet) {
    console.log(`serving ${root} (${isolate ? 'cross-origin isolated: threaded build' : 'not isolated: single-threaded build'})`);
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
