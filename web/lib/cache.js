// The browser's copy of downloaded models and expert tables (Cache Storage), so a second visit
// loads without the network and a changed file is fetched again.
//
// Two kinds of entries in one cache (CACHE_NAME), both under synthetic URLs of the page's
// origin (Cache Storage keys must be http(s) URLs; these never reach a server):
//   .../.selfcond-store/sha256/<hex>   the file's bytes, keyed by its content hash: for a model
//                                      the SHA-256 its header names (the engine checks it against
//                                      the contents on every load), for a table the SHA-256 of
//                                      its text (computed here, checked again when read back)
//   .../.selfcond-store/url/<url>      a small JSON record: which content a URL gave, with the
//                                      server's validators (ETag, Last-Modified, Content-Length)
// A load of a stored URL first asks the server for the file's validators (HEAD, no body): the
// same ones -> the stored bytes; different ones (or none to compare) -> the file is fetched
// again; no answer at all (offline, blocked) -> the stored bytes (and no request at all while
// navigator.onLine is false). Content is written only after the engine accepted it, so a
// truncated or corrupted download is never stored, and two URLs with the same content share
// one copy.

export const CACHE_NAME = 'selfcond-store-v1';
const PREFIX = '/.selfcond-store/';

/** True where the page can store files (Cache Storage exists only in secure contexts). */
export function cacheAvailable() {
  return typeof caches !== 'undefined' && !!globalThis.location?.origin && globalThis.isSecureContext !== false;
}

function contentKey(sha256) {
  return new URL(`${PREFIX}sha256/${sha256}`, location.origin).href;
}
function recordKey(url) {
  return new URL(`${PREFIX}url/${encodeURIComponent(String(url))}`, location.origin).href;
}

async function open() {
  return caches.open(CACHE_NAME);
}

/** The validators of a response, as stored in a record. */
export function validatorsOf(headers) {
  const len = headers.get('Content-Length');
  return {
    etag: headers.get('ETag') || null,
    lastModified: headers.get('Last-Modified') || null,
    contentLength: len != null && len !== '' ? Number(len) : null,
  };
}

/**
 * Whether a server's current headers describe the stored file. A record without ETag and
 * Last-Modified cannot tell (Content-Length alone does not change with every edit): not the same.
 */
export function sameValidators(record, headers) {
  const now = validatorsOf(headers);
  if (!record.etag && !record.lastModified) return false;
  if (record.etag && now.etag !== record.etag) return false;
  if (record.lastModified && now.lastModified !== record.lastModified) return false;
  if (record.contentLength != null && now.contentLength != null && now.contentLength !== record.contentLength) return false;
  return true;
}

/** SHA-256 of bytes as lowercase hex (Web Crypto; secure contexts only, like Cache Storage). */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function readRecord(cache, url) {
  const res = await cache.match(recordKey(url));
  if (!res) return null;
  try {
    return await res.json();
  } catch {
    return null;
  }
}

/**
 * What the store holds for a URL, if it is still what the server has (or the server cannot be
 * reached): {record, bytes: Uint8Array, revalidated: boolean}. null: fetch it from the network.
 * revalidated false means the server did not answer and the stored copy was used as it is.
 */
export async function lookup(url, { signal } = {}) {
  if (!cacheAvailable()) return null;
  let cache;
  let record;
  try {
    cache = await open();
    record = await readRecord(cache, url);
  } catch {
    return null;  // storage unavailable (private mode, storage blocked): just download
  }
  if (!record) return null;
  let revalidated = false;
  // The browser knows it is offline: no request (it could only fail, and be logged as failed).
  if (globalThis.navigator?.onLine === false) return readContent(cache, url, record, false);
  try {
    // no-store: the validators must come from the server, not from the HTTP cache's copy.
    const head = await fetch(url, { method: 'HEAD', cache: 'no-store', credentials: 'same-origin', signal });
    if (head.ok) {
      if (!sameValidators(record, head.headers)) return null;  // changed: fetch it again
      revalidated = true;
    } else if (head.status < 500) {
      // 404 (gone), 405 (no HEAD), 403...: let the GET decide; a file that is gone must not
      // keep loading from the store.
      return null;
    }
    // 5xx: the server is there but failing; the stored copy is as good as an offline one.
  } catch (e) {
    if (signal?.aborted) throw e;
    // No answer (offline, DNS, blocked): the stored copy.
  }
  return readContent(cache, url, record, revalidated);
}

async function readContent(cache, url, record, revalidated) {
  const res = await cache.match(contentKey(record.sha256));
  if (!res) {
    await cache.delete(recordKey(url)).catch(() => {});
    return null;
  }
  return { record, bytes: new Uint8Array(await res.arrayBuffer()), revalidated };
}

/**
 * Stores a file under its content hash and records what the URL gave. bytes: a Blob or buffer
 * (copied by the Response). Errors (quota) are reported as a warning, never thrown: the file was
 * loaded, it is just not stored.
 */
export async function store(url, { kind, sha256, bytes, validators = {}, name }) {
  if (!cacheAvailable()) return false;
  try {
    const cache = await open();
    const size = bytes.size ?? bytes.byteLength;
    await cache.put(contentKey(sha256), new Response(bytes, {
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
    }));
    const record = {
      url: String(url), kind, sha256, name: name ?? null, bytes: size, storedAt: new Date().toISOString(),
      etag: validators.etag ?? null, lastModified: validators.lastModified ?? null,
      contentLength: validators.contentLength ?? null,
    };
    await cache.put(recordKey(url), new Response(JSON.stringify(record), { headers: { 'Content-Type': 'application/json' } }));
    // An older content of this URL that no other record uses is garbage now.
    await collectGarbage(cache);
    return true;
  } catch (e) {
    console.warn(`selfcond: could not store ${url} in the browser (${e?.name ?? 'Error'}: ${e?.message ?? e}); it will be downloaded again next time`);
    return false;
  }
}

/** Removes the record of one URL (a stored copy that turned out wrong) and its unused content. */
export async function forget(url) {
  if (!cacheAvailable()) return;
  try {
    const cache = await open();
    await cache.delete(recordKey(url));
    await collectGarbage(cache);
  } catch {}
}

async function records(cache) {
  const out = [];
  for (const req of await cache.keys()) {
    if (!new URL(req.url).pathname.startsWith(`${PREFIX}url/`)) continue;
    const res = await cache.match(req);
    try {
      out.push(await res.json());
    } catch {}
  }
  return out;
}

async function collectGarbage(cache) {
  const used = new Set((await records(cache)).map((r) => r.sha256));
  for (const req of await cache.keys()) {
    const path = new URL(req.url).pathname;
    if (path.startsWith(`${PREFIX}sha256/`) && !used.has(path.slice(`${PREFIX}sha256/`.length))) await cache.delete(req);
  }
}

/**
 * What the browser holds: [{url, kind: 'model'|'table', sha256, name, bytes, storedAt, etag,
 * lastModified, contentLength}], oldest first.
 */
export async function listCached() {
  if (!cacheAvailable() || !(await caches.has(CACHE_NAME))) return [];
  const list = await records(await open());
  return list.sort((a, b) => String(a.storedAt).localeCompare(String(b.storedAt)));
}

/**
 * Removes stored files: all of them (no argument), or those matching every given field of
 * {url, kind, sha256}. Resolves to the number of URLs removed.
 */
export async function clearCached(filter = {}) {
  if (!cacheAvailable() || !(await caches.has(CACHE_NAME))) return 0;
  const cache = await open();
  const all = await records(cache);
  const want = { ...filter };
  // A URL is matched as the loads stored it: resolved against the page.
  if (want.url != null) want.url = new URL(want.url, globalThis.document?.baseURI ?? location.href).href;
  const keys = Object.keys(want).filter((k) => want[k] != null);
  const hit = all.filter((r) => keys.every((k) => String(r[k]) === String(want[k])));
  if (hit.length === all.length) {
    await caches.delete(CACHE_NAME);
    return hit.length;
  }
  for (const r of hit) await cache.delete(recordKey(r.url));
  await collectGarbage(cache);
  return hit.length;
}
