// The concept library browser of the demo page: loads a library index (selfcond-library/1, as
// written by `python -m selfcond.library build` or scripts/make_library_index.py), lists its
// concepts with a search box, and hands the table of the concept picked to the app, which makes
// it the concept to generate with. The app owns the concept picker; this module owns only the
// #library markup in index.html (see web/README.md "Concept libraries").
//
// A library may hold thousands of concepts, each table about 1 MB: the index is loaded once per
// model, tables only when a concept is picked (then kept, by concept, until the model changes),
// and the list shows at most MAX_SHOWN matches.
import { checkUrl } from './lib/selfcond.js';

export const DEFAULT_LIBRARY_URL = new URL('../demo/library/index.json', import.meta.url);
export const LIBRARY_FORMAT = 'selfcond-library/1';
/** At most this many matches are rendered (the count says how many there are). */
export const MAX_SHOWN = 200;

const short = (hash) => String(hash).slice(0, 12);

/**
 * Checks a parsed index and returns what the browser needs from it:
 * {model: {name, hash}, concepts: [{concept, group, table (URL, resolved against the index's
 * URL), numPositive, numNegative, bestAp, bestUnit}]}. Throws an Error that says what is wrong.
 * @param {unknown} index the parsed index.json
 * @param {URL} url where it came from (table paths are relative to it)
 */
export function parseLibraryIndex(index, url) {
  if (!index || typeof index !== 'object' || Array.isArray(index)) throw new Error('not a library index (expected a JSON object)');
  if (index.format !== LIBRARY_FORMAT) {
    throw new Error(`not a library index this app reads (format ${JSON.stringify(index.format ?? null)}, expected "${LIBRARY_FORMAT}")`);
  }
  const hash = index.model?.hash;
  if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/i.test(hash)) {
    throw new Error('the index has no model hash (model.hash: 64 hex digits), so its tables cannot be matched to a model');
  }
  if (!Array.isArray(index.concepts)) throw new Error('the index has no "concepts" list');
  const seen = new Set();
  const num = (v) => (Number.isFinite(v) ? v : null);
  const concepts = index.concepts.map((c, i) => {
    if (!c || typeof c.concept !== 'string' || !c.concept || typeof c.table !== 'string' || !c.table) {
      throw new Error(`concepts[${i}] has no concept name or no table path`);
    }
    // The tables are cached by concept name: two entries of one name would be ambiguous.
    if (seen.has(c.concept)) throw new Error(`concept "${c.concept}" is listed twice`);
    seen.add(c.concept);
    let table;
    try {
      table = new URL(c.table, url);
    } catch {
      throw new Error(`concepts[${i}] (${c.concept}): bad table path ${JSON.stringify(c.table)}`);
    }
    const group = typeof c.group === 'string' ? c.group : '';
    return {
      concept: c.concept, group, table,
      numPositive: num(c.num_positive), numNegative: num(c.num_negative),
      bestAp: num(c.best_ap), bestUnit: typeof c.best_unit === 'string' ? c.best_unit : '',
      // What the search looks in: name and group, case-insensitive. The newline keeps a term
      // from matching across the two (terms never contain whitespace).
      haystack: `${c.concept}\n${group}`.toLowerCase(),
    };
  });
  return { model: { name: String(index.model.name ?? ''), hash: hash.toLowerCase() }, concepts };
}

/** The concepts whose name or group contain every whitespace-separated term of the query. */
export function filterConcepts(concepts, query) {
  const terms = String(query).toLowerCase().split(/\s+/).filter(Boolean);
  if (!terms.length) return concepts;
  return concepts.filter((c) => terms.every((t) => c.haystack.includes(t)));
}

export class ConceptLibrary {
  /**
   * @param {object} o
   * @param {string|URL|null} o.url the index (?library=); null or '': the demo library
   * @param {string[]|'*'} o.allowedOrigins origins besides the page's for the index and tables
   * @param {(key: string, label: string, table: object, select: boolean) => void} o.onTable
   *   a picked concept's table is loaded: add it to the app's concepts (and select it if asked:
   *   only the latest pick is selected, an earlier one that finishes later is only added)
   * @param {(msg: string) => void} o.showError the app's banner
   */
  constructor({ url, allowedOrigins, onTable, showError }) {
    this.url = url || DEFAULT_LIBRARY_URL;
    // The demo's library belongs to the demo model: with another model picked it is simply not
    // offered (a note in the panel). A library the page was asked for (?library=) that does not
    // match the model is an error worth the banner.
    this.explicit = Boolean(url);
    this.allowedOrigins = allowedOrigins;
    this.onTable = onTable;
    this.showError = showError;
    const $ = (id) => document.getElementById(id);
    this.el = { status: $('library-status'), search: $('library-search'), count: $('library-count'), list: $('library-list') };
    this.sc = null;
    this.lib = null;
    this.tables = new Map();  // concept -> Promise<ExpertTable> (tables live in the loaded model)
    this.ready = new Set();   // concepts whose table has loaded
    this.current = null;      // the concept picked last
    this.epoch = 0;           // bumped when the model goes or changes: late answers are dropped
    this.picks = 0;           // the latest pick wins the concept picker
    this.el.search.addEventListener('input', () => this.render());
    // One listener for the whole list (thousands of rows would otherwise mean thousands).
    this.el.list.addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-concept]');
      const c = b && this.lib?.concepts.find((x) => x.concept === b.dataset.concept);
      if (c) this.pick(c);
    });
    this.setStatus('The library opens once the model is loaded.');
    this.el.search.disabled = true;
  }

  setStatus(text, kind = '') {
    this.el.status.textContent = text;
    this.el.status.className = `library-status ${kind}`;
  }

  /**
   * The model is gone (loading another, or the engine restarted): its tables went with it, so
   * forget them and the index (checked against that model).
   */
  detach(why = 'The library opens once the model is loaded.') {
    this.epoch++;
    this.sc = null;
    this.lib = null;
    this.tables.clear();
    this.ready.clear();
    this.current = null;
    this.el.search.disabled = true;
    this.el.list.replaceChildren();
    this.el.count.textContent = '';
    this.setStatus(why);
  }

  /** A model is loaded in sc: loads the index and refuses it unless it is for this model. */
  async attach(sc) {
    this.detach('Loading the concept library…');
    const epoch = this.epoch;
    this.sc = sc;
    let url;
    try {
      url = checkUrl(this.url, this.allowedOrigins);
      let res;
      try {
        res = await fetch(url, { credentials: 'same-origin' });
      } catch (e) {
        throw new Error(`could not fetch it: ${e.message}`);
      }
      if (!res.ok) throw new Error(`could not fetch it: HTTP ${res.status} ${res.statusText}`);
      let json;
      try {
        json = await res.json();
      } catch {
        throw new Error('it is not JSON');
      }
      const lib = parseLibraryIndex(json, url);
      const model = sc.model;
      if (lib.model.hash !== String(model?.hash).toLowerCase()) {
        // Unit numbers only mean something for the model they were ranked on; the engine would
        // refuse each table anyway, but say it once, up front, with both models named.
        if (!this.explicit) {
          if (epoch !== this.epoch) return;
          this.setStatus(`The demo's concept library was built for “${lib.model.name}”, not for ` +
            `“${model?.name}”: rank a concept of your own, or open a library built for this model ` +
            '(?library=URL).');
          return;
        }
        throw new Error(`it was built for the model “${lib.model.name}” (sha256 ${short(lib.model.hash)}…), ` +
          `but the loaded model is “${model?.name}” (sha256 ${short(model?.hash)}…). Build a library with ` +
          'this model (python -m selfcond.library build --model <this model> ...) and open that one.');
      }
      if (epoch !== this.epoch) return;
      this.lib = lib;
    } catch (e) {
      if (epoch !== this.epoch) return;
      const msg = `Concept library ${url?.href ?? String(this.url)} refused: ${e.message}`;
      this.setStatus(msg, 'error');
      this.showError(msg);
      return;
    }
    const n = this.lib.concepts.length;
    this.setStatus(`${n.toLocaleString()} concept${n === 1 ? '' : 's'} for ${this.lib.model.name || 'this model'} · pick one to generate with it`);
    this.el.search.disabled = false;
    this.render();
  }

  /** Renders the first MAX_SHOWN concepts matching the search box, and how many match. */
  render() {
    if (!this.lib) return;
    const all = this.lib.concepts;
    const q = this.el.search.value.trim();
    const matches = filterConcepts(all, q);
    const shown = matches.slice(0, MAX_SHOWN);
    const total = all.length.toLocaleString();
    this.el.count.textContent = !matches.length ? `No concept matches “${q}” (of ${total}).`
      : `${q ? `${matches.length.toLocaleString()} of ${total} match` : `${total} concepts`}` +
        (matches.length > shown.length ? ` · showing the first ${shown.length}: refine the search` : '');
    const frag = document.createDocumentFragment();
    for (const c of shown) {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'library-item';
      b.dataset.concept = c.concept;
      if (this.ready.has(c.concept)) b.classList.add('loaded');
      else if (this.tables.has(c.concept)) b.setAttribute('aria-busy', 'true');
      if (this.current === c.concept) b.setAttribute('aria-current', 'true');
      b.title = `${c.concept}${c.bestUnit ? ` · best unit ${c.bestUnit}` : ''}`;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = c.concept;
      const meta = document.createElement('span');
      meta.className = 'meta';
      const ap = c.bestAp === null ? 'AP –' : `AP ${c.bestAp.toFixed(3)}`;
      const size = c.numPositive === null ? '' : ` · ${c.numPositive.toLocaleString()}+ / ${(c.numNegative ?? 0).toLocaleString()}−`;
      meta.textContent = `${c.group ? `${c.group} · ` : ''}${ap}${size}`;
      b.append(name, meta);
      li.append(b);
      frag.append(li);
    }
    this.el.list.replaceChildren(frag);
  }

  /** Loads a concept's table (once per model) and passes it to the app. */
  async pick(c) {
    const sc = this.sc;
    if (!sc || !this.lib) return;
    const epoch = this.epoch;
    const pick = ++this.picks;
    this.current = c.concept;
    let p = this.tables.get(c.concept);
    if (!p) {
      this.setStatus(`Loading the table of ${c.concept}…`);
      p = sc.loadExperts(c.table, { allowedOrigins: this.allowedOrigins, name: c.concept }).then((t) => {
        // A table that is not the one the index names would silently steer with the wrong
        // concept (an index older than its tables): refuse it.
        if (t.concept !== c.concept) {
          sc.removeTable(t).catch(() => {});
          throw new Error(`the index lists “${c.concept}” but ${c.table.href} holds “${t.concept}” (rebuild the index)`);
        }
        return t;
      });
      this.tables.set(c.concept, p);
      this.render();
    }
    let table;
    try {
      table = await p;
    } catch (e) {
      if (epoch !== this.epoch) return;
      // Not cached: picking it again tries again.
      if (this.tables.get(c.concept) === p) this.tables.delete(c.concept);
      if (this.current === c.concept) this.current = null;
      const msg = `The library's table for “${c.concept}” failed to load: ${e.message}`;
      this.setStatus(msg, 'error');
      this.showError(msg);
      this.render();
      return;
    }
    if (epoch !== this.epoch) return;
    this.ready.add(c.concept);
    const latest = pick === this.picks;
    this.onTable(`library:${c.concept}`, `${c.concept} (library)`, table, latest);
    if (latest) this.setStatus(`Selected ${c.concept} for generation (best AP ${table.units.ap[0].toFixed(3)}): press Generate.`, 'ok');
    this.render();
  }
}
