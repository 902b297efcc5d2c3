// Offline support: caches the app, the WebAssembly engine, the demo model and the expert tables.
// Small files: network first (updates show up at once), cache as fallback. The model (.scm):
// cache first (30 MB; it changes only with a new model file name or a new CACHE version).
const CACHE = 'selfcond-v1';
const APP = [
  './', 'index.html', 'style.css', 'app.js', 'lib/selfcond.js', 'lib/worker.js',
  'library.js', 'library.css', '../demo/library/index.json',
  'wasm/loader.mjs', 'wasm/selfcond.mjs', 'wasm/selfcond.wasm',
  '../demo/experts/football.json', '../demo/experts/woman.json', '../demo/experts/man.json',
  '../demo/models/selfcond-mini-30m.scm',
];
const OPTIONAL = ['wasm/selfcond-mt.mjs', 'wasm/selfcond-mt.wasm', 'wasm/selfcond-mt.worker.js'];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(APP);
    // The threaded build is only there when it was built; do not fail the install without it.
    await Promise.all(OPTIONAL.map((u) => cache.add(u).catch(() => {})));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key !== CACHE) await caches.delete(key);
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET' || new URL(req.url).origin !== location.origin) return;
  const url = new URL(req.url);
  if (url.pathname.endsWith('.scm')) {
    event.respondWith((async () => {
      const hit = await caches.match(req, { ignoreSearch: true });
      if (hit) return hit;
      const res = await fetch(req);
      if (res.ok) (await caches.open(CACHE)).put(req, res.clone());
      return res;
    })());
    return;
  }
  event.respondWith((async () => {
    try {
      const res = await fetch(req);
      if (res.ok) (await caches.open(CACHE)).put(req, res.clone());
      return res;
    } catch (e) {
      const hit = await caches.match(req, { ignoreSearch: true });
      if (hit) return hit;
      throw e;
    }
  })());
});
