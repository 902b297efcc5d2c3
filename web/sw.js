// Offline support: caches the app and the WebAssembly engine (network first: updates show up at
// once, the cache is the fallback). The model is not cached here: the package (lib/cache.js)
// keeps models and expert tables in its own Cache Storage cache, keyed by content hash and
// revalidated against the server, and its requests for models pass through untouched.
// v2: v1 also held the 30 MB model; activating v2 deletes it.
const CACHE = 'selfcond-v2';
const APP = [
  './', 'index.html', 'style.css', 'app.js', 'lib/selfcond.js', 'lib/cache.js', 'lib/engine/worker.js',
  'library.js', 'library.css', '../demo/library/index.json',
  'lib/engine/loader.mjs', 'lib/engine/selfcond.mjs', 'lib/engine/selfcond.wasm',
];
const OPTIONAL = ['lib/engine/selfcond-mt.mjs', 'lib/engine/selfcond-mt.wasm', 'lib/engine/selfcond-mt.worker.js'];

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
    // Only this worker's own older caches: the package's store (selfcond-store-*) stays.
    for (const key of await caches.keys()) if (/^selfcond-v\d+$/.test(key) && key !== CACHE) await caches.delete(key);
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET' || new URL(req.url).origin !== location.origin) return;
  // Models: the package's store handles them (see above). Tables (a few KB) pass through here
  // too; a second copy of those costs nothing.
  if (new URL(req.url).pathname.endsWith('.scm')) return;
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
