// <selfcond-playground>: the core selfcond experience in one tag, for any page.
//
//   <script type="module">import 'selfcond/playground';</script>
//   <selfcond-playground model="models/selfcond-mini-30m.scm"
//                        concepts="football=experts/football.json woman=experts/woman.json"></selfcond-playground>
//
// A prompt, a concept picker, a strength slider (k: how many of the concept's top expert units
// are forced), the unconditioned and the conditioned continuation streaming side by side (same
// seed: any difference comes from the forced units), and a custom concept ranked from sentences
// typed in. Everything goes through the SelfCond API (./selfcond.js); this file only draws.
//
// Attributes (read when the element is connected; change `model` to load another):
//   model           URL of the .scm file (required)
//   concepts        expert tables: whitespace-separated URLs, each optionally `label=URL`
//   prompt          initial prompt (default "Once upon a time")
//   k, max-k        initial strength (default 50) and the slider's maximum (default 200)
//   max-tokens      tokens per column (default 40)
//   seed            fixed seed (default: a new random seed per Generate)
//   allowed-origins origins besides the page's that model and table URLs may come from
//   no-cache        download every time, store nothing in the browser
// Theming: CSS custom properties on the element or any ancestor (--selfcond-accent, -bg, -fg,
// -muted, -border, -radius, -font, -mono-font, -gap, -cond-bg, -focus; see STYLE), and
// ::part(status|prompt|columns|column|output|custom) for anything else.
// Events (bubbling, composed): selfcond-ready {model}, selfcond-generated {base, cond} (the
// results), selfcond-ranked {table}, selfcond-error {message}.
// Properties: .selfcond (the SelfCond instance once started), .ready (Promise of the model info).
import { SelfCond } from './selfcond.js';
import { loadModelAndTables, rankTyped, streamColumns } from './ui.js';

const STYLE = `
:host {
  --_accent: var(--selfcond-accent, #2f6fde);
  --_accent-fg: var(--selfcond-accent-fg, #fff);
  --_bg: var(--selfcond-bg, #fff);
  --_fg: var(--selfcond-fg, #1d2330);
  --_muted: var(--selfcond-muted, #5b6475);
  --_border: var(--selfcond-border, #cfd5e0);
  --_radius: var(--selfcond-radius, 8px);
  --_gap: var(--selfcond-gap, 12px);
  --_cond-bg: var(--selfcond-cond-bg, #f1f5ff);
  --_focus: var(--selfcond-focus, #f0a500);
  display: block;
  color: var(--_fg);
  background: var(--_bg);
  font: 15px/1.45 var(--selfcond-font, system-ui, sans-serif);
  border: 1px solid var(--_border);
  border-radius: var(--_radius);
  padding: var(--_gap);
}
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
form, fieldset { display: grid; gap: calc(var(--_gap) / 2); margin: 0; }
fieldset { border: 1px solid var(--_border); border-radius: var(--_radius); padding: var(--_gap); }
legend { font-weight: 600; padding: 0 4px; }
label { font-weight: 600; font-size: 0.9em; }
textarea, input, select, button { font: inherit; color: inherit; }
textarea, input[type="text"], select {
  width: 100%; background: var(--_bg); border: 1px solid var(--_border); border-radius: calc(var(--_radius) / 2);
  padding: 6px 8px;
}
textarea { resize: vertical; }
.row { display: flex; flex-wrap: wrap; gap: var(--_gap); align-items: end; }
.row > div { display: grid; gap: 4px; flex: 1 1 12em; }
.buttons { display: flex; gap: calc(var(--_gap) / 2); flex-wrap: wrap; }
button {
  border: 1px solid var(--_accent); border-radius: calc(var(--_radius) / 2); padding: 6px 14px; cursor: pointer;
  background: var(--_accent); color: var(--_accent-fg);
}
button.secondary { background: transparent; color: var(--_accent); }
button:disabled { opacity: 0.5; cursor: default; }
:is(button, input, select, textarea, summary):focus-visible { outline: 3px solid var(--_focus); outline-offset: 2px; }
.status { display: flex; gap: var(--_gap); align-items: center; color: var(--_muted); min-height: 1.5em; margin-bottom: var(--_gap); }
.status progress { flex: 0 0 10em; }
.error { color: #b3261e; margin: 0; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(16em, 1fr)); gap: var(--_gap); margin: var(--_gap) 0; }
.column { border: 1px solid var(--_border); border-radius: var(--_radius); padding: var(--_gap); min-width: 0; }
.column.cond { background: var(--_cond-bg); }
.column h3 { margin: 0 0 6px; font-size: 0.95em; }
.output { white-space: pre-wrap; overflow-wrap: anywhere; font-family: var(--selfcond-mono-font, inherit); min-height: 4.5em; }
.output .prompt { color: var(--_muted); }
.meta, .hint { color: var(--_muted); font-size: 0.85em; margin: 6px 0 0; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

const TEMPLATE = `
<div class="status" part="status">
  <span class="status-text" role="status" aria-live="polite">Starting…</span>
  <progress class="load" max="1" hidden aria-label="Loading the model"></progress>
</div>
<p class="error" role="alert" hidden></p>
<form class="generate" part="prompt">
  <label for="prompt">Prompt</label>
  <textarea id="prompt" rows="2" aria-describedby="prompt-hint"></textarea>
  <p id="prompt-hint" class="hint">Ctrl+Enter generates, Escape stops.</p>
  <div class="row">
    <div>
      <label for="concept">Concept</label>
      <select id="concept"></select>
    </div>
    <div>
      <label for="k">Strength: <output id="k-out" for="k"></output> expert units forced</label>
      <input type="range" id="k" min="0" max="200" step="1">
    </div>
  </div>
  <div class="buttons">
    <button type="submit" id="generate" disabled>Generate</button>
    <button type="button" id="stop" class="secondary" disabled>Stop</button>
  </div>
</form>
<div class="columns" part="columns">
  <section class="column base" part="column" aria-labelledby="base-title">
    <h3 id="base-title">Unconditioned</h3>
    <div id="out-base" class="output" part="output" aria-live="polite" aria-busy="false"></div>
    <p id="meta-base" class="meta"></p>
  </section>
  <section class="column cond" part="column" aria-labelledby="cond-title">
    <h3 id="cond-title">Conditioned</h3>
    <div id="out-cond" class="output" part="output" aria-live="polite" aria-busy="false"></div>
    <p id="meta-cond" class="meta"></p>
  </section>
</div>
<form class="custom" part="custom">
  <fieldset>
    <legend>Custom concept</legend>
    <label for="custom-name">Name</label>
    <input type="text" id="custom-name" value="custom" autocomplete="off">
    <label for="custom-pos">Sentences with the concept (one per line)</label>
    <textarea id="custom-pos" rows="4" placeholder="The cat purred on the sofa."></textarea>
    <label for="custom-neg">Sentences without it (one per line)</label>
    <textarea id="custom-neg" rows="4" placeholder="The train left at noon."></textarea>
    <div class="buttons">
      <button type="submit" id="rank" disabled>Find experts</button>
      <progress id="rank-progress" max="1" hidden aria-label="Ranking progress"></progress>
    </div>
    <p id="rank-result" class="meta" role="status" aria-live="polite"></p>
  </fieldset>
</form>
`;

// Style sheets built in script (adoptedStyleSheets) are not inline <style> to a
// Content-Security-Policy: the element works on pages with style-src 'self'.
let sheet = null;
function styleSheet() {
  if (!sheet) {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLE);
  }
  return sheet;
}

/** Parses the concepts attribute: [{label, url}] from "label=url" or "url" entries. */
export function parseConcepts(attr) {
  return String(attr ?? '').split(/[\s,]+/).filter(Boolean).map((entry) => {
    const m = entry.match(/^([\w\-.]+)=(.+)$/);
    if (m) return { label: m[1], url: m[2] };
    const file = entry.split(/[?#]/)[0].split('/').pop() || entry;
    return { label: file.replace(/(\.experts)?\.(json|csv)$/i, ''), url: entry };
  });
}

export class SelfCondPlayground extends HTMLElement {
  static get observedAttributes() {
    return ['model'];
  }

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    root.adoptedStyleSheets = [styleSheet()];
    root.innerHTML = TEMPLATE;
    const $ = (id) => root.getElementById(id);
    this._ui = {
      status: root.querySelector('.status-text'), load: root.querySelector('progress.load'), error: root.querySelector('.error'),
      form: root.querySelector('form.generate'), prompt: $('prompt'), concept: $('concept'), k: $('k'), kOut: $('k-out'),
      generate: $('generate'), stop: $('stop'), outBase: $('out-base'), outCond: $('out-cond'),
      metaBase: $('meta-base'), metaCond: $('meta-cond'), condTitle: $('cond-title'),
      custom: root.querySelector('form.custom'), customName: $('custom-name'), customPos: $('custom-pos'),
      customNeg: $('custom-neg'), rank: $('rank'), rankProgress: $('rank-progress'), rankResult: $('rank-result'),
    };
    this.selfcond = null;
    this._tables = [];      // [{label, table, custom}] in picker order
    this._running = [];
    this._modelReady = false;
    this._ranking = false;
    this._started = false;
    this._loadAbort = null;
    let resolveReady;
    let rejectReady;
    this.ready = new Promise((res, rej) => {
      resolveReady = res;
      rejectReady = rej;
    });
    this.ready.catch(() => {});  // reported in the element and as selfcond-error
    this._readyCallbacks = { resolveReady, rejectReady };
    this._wire();
  }

  connectedCallback() {
    const ui = this._ui;
    if (this._started) return;
    this._started = true;
    ui.prompt.value ||= this.getAttribute('prompt') ?? 'Once upon a time';
    ui.k.max = String(Number(this.getAttribute('max-k')) || 200);
    ui.k.value = String(Number(this.getAttribute('k') ?? 50));
    this._showK();
    this._start();
  }

  disconnectedCallback() {
    // Moved within the page: connected again in the same task; really removed: free the worker
    // (its WebAssembly memory holds the model).
    queueMicrotask(() => {
      if (this.isConnected) return;
      this._loadAbort?.abort();
      this.selfcond?.terminate();
      this.selfcond = null;
      this._started = false;
      this._setModelReady(false);
    });
  }

  attributeChangedCallback(name, before, after) {
    if (name === 'model' && before !== null && before !== after && this.selfcond) this._loadAll();
  }

  _wire() {
    const ui = this._ui;
    ui.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.generate();
    });
    ui.stop.addEventListener('click', () => this.stop());
    ui.prompt.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        if (!ui.generate.disabled) this.generate();
      }
    });
    this.shadowRoot.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this._running.length) this.stop();
    });
    ui.k.addEventListener('input', () => this._showK());
    ui.concept.addEventListener('change', () => this._showK());
    ui.custom.addEventListener('submit', (e) => {
      e.preventDefault();
      this.rankCustom();
    });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  _setStatus(text) {
    this._ui.status.textContent = text;
  }

  _showError(message) {
    const el = this._ui.error;
    el.textContent = message;
    el.hidden = !message;
    if (message) this._emit('selfcond-error', { message });
  }

  _showK() {
    const ui = this._ui;
    ui.kOut.textContent = ui.k.value;
    const entry = this._tables[ui.concept.selectedIndex];
    ui.k.setAttribute('aria-valuetext', `${ui.k.value} expert units${entry ? ` of ${entry.label}` : ''}`);
  }

  _setModelReady(ready) {
    const ui = this._ui;
    this._modelReady = ready;
    ui.generate.disabled = !ready || this._running.length > 0;
    ui.rank.disabled = !ready || this._ranking;
  }

  _options() {
    const origins = (this.getAttribute('allowed-origins') ?? '').split(/\s+/).filter(Boolean);
    return { allowedOrigins: origins, cache: !this.hasAttribute('no-cache') };
  }

  async _start() {
    try {
      this._setStatus('Starting the engine…');
      this.selfcond = await SelfCond.create();
      this.selfcond.addEventListener('restarted', (ev) => {
        this._setModelReady(false);
        this._tables = [];
        this._ui.concept.replaceChildren();
        this._setStatus('The engine restarted');
        this._showError(`The engine failed and was restarted (${ev.detail.error}); reloading the model.`);
        this._loadAll();
      });
    } catch (e) {
      this._setStatus('The engine failed to start');
      this._showError(`The WebAssembly engine could not start: ${e.message}`);
      this._readyCallbacks.rejectReady(e);
      return;
    }
    await this._loadAll();
  }

  /** Loads the model, then the concepts' tables. */
  async _loadAll() {
    const ui = this._ui;
    const sc = this.selfcond;
    const model = this.getAttribute('model');
    this._setModelReady(false);
    this._showError('');
    if (!model) {
      this._setStatus('No model: set the model attribute');
      return;
    }
    this._loadAbort?.abort();
    const abort = new AbortController();
    this._loadAbort = abort;
    ui.load.hidden = false;
    ui.load.removeAttribute('value');  // indeterminate until the size is known
    let loaded;
    try {
      loaded = await loadModelAndTables(sc, new URL(model, document.baseURI), {
        ...this._options(),
        signal: abort.signal,
        tables: parseConcepts(this.getAttribute('concepts')).map((c) => ({ key: c.label, label: c.label, url: new URL(c.url, document.baseURI) })),
        onStatus: (text, fraction) => {
          if (fraction != null) ui.load.value = fraction;
          this._setStatus(text);
        },
        onTableError: (label, e) => this._showError(`The expert table ${label} failed to load: ${e.message}`),
      });
    } catch (e) {
      if (e.name === 'AbortError') return;
      ui.load.hidden = true;
      this._setStatus('The model failed to load');
      this._showError(`The model failed to load (${model}): ${e.message}`);
      this._readyCallbacks.rejectReady(e);
      return;
    }
    ui.load.hidden = true;
    const info = loaded.info;
    // Tables belong to the model they were loaded for or ranked on: a new model starts without.
    this._tables = [];
    ui.concept.replaceChildren();
    for (const t of loaded.tables) this._addTable(t.label, t.table, false);
    const rt = sc.runtime;
    this._setStatus(`Ready: ${info.name}, ${rt.threaded ? `${rt.threads} threads` : 'single-threaded'}` +
      `${info.fromCache ? ', loaded from the browser’s store' : ''}`);
    this._setModelReady(true);
    this._readyCallbacks.resolveReady(info);
    this._emit('selfcond-ready', { model: info });
  }

  _addTable(label, table, custom) {
    const ui = this._ui;
    const old = this._tables.findIndex((t) => t.label === label && t.custom === custom);
    const option = new Option(custom ? `${label} (custom)` : label, String(table.id));
    if (old >= 0) {
      this.selfcond.removeTable(this._tables[old].table).catch(() => {});
      this._tables[old] = { label, table, custom };
      ui.concept.options[old].replaceWith(option);
    } else {
      this._tables.push({ label, table, custom });
      ui.concept.append(option);
    }
    return option;
  }

  /** Starts both columns (the Generate button). Resolves when both are done. */
  async generate() {
    const ui = this._ui;
    if (!this._modelReady || this._running.length) return;
    const prompt = ui.prompt.value;
    if (!prompt.trim()) {
      this._showError('Type a prompt first.');
      ui.prompt.focus();
      return;
    }
    this._showError('');
    const entry = this._tables[ui.concept.selectedIndex];
    const k = Number(ui.k.value);
    const experts = entry && k > 0 ? [{ table: entry.table, k }] : [];
    ui.condTitle.textContent = experts.length ? `Conditioned: ${entry.label}, k = ${k}` : 'Conditioned (no experts forced: pick a concept and k > 0)';
    const seed = this.hasAttribute('seed') ? Number(this.getAttribute('seed')) : Math.floor(Math.random() * 1e9);
    const opts = {
      prompt, seed, maxTokens: Number(this.getAttribute('max-tokens')) || 40, temperature: 0.8, topK: 40, topP: 0.95,
    };
    ui.generate.disabled = true;
    ui.stop.disabled = false;
    this._setStatus('Generating…');
    const run = streamColumns(this.selfcond, opts, [
      { out: ui.outBase, meta: ui.metaBase, options: { experts: [] } },
      { out: ui.outCond, meta: ui.metaCond, options: { experts } },
    ]);
    this._running = run.handles;
    const results = await run.done;
    this._running = [];
    ui.stop.disabled = true;
    this._setModelReady(this._modelReady);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      this._setStatus('Generation failed');
      this._showError(`Generation failed: ${failed.reason.message}`);
      return;
    }
    this._setStatus(`Done: ${results.map((r) => r.value.tokens).join(' + ')} tokens`);
    this._emit('selfcond-generated', { base: results[0].value, cond: results[1].value });
  }

  /** Stops both columns after their current token. */
  stop() {
    this._running.forEach((h) => h.cancel());
  }

  /** Ranks the custom concept from the sentences typed in and makes it the one generated with. */
  async rankCustom() {
    const ui = this._ui;
    if (!this._modelReady || this._ranking) return;
    const name = ui.customName.value.trim() || 'custom';
    this._showError('');
    this._ranking = true;
    this._setModelReady(this._modelReady);
    ui.rankProgress.hidden = false;
    ui.rankProgress.value = 0;
    ui.rankResult.textContent = 'Ranking…';
    try {
      const { table, sentences } = await rankTyped(this.selfcond, {
        name, positiveText: ui.customPos.value, negativeText: ui.customNeg.value,
        onProgress: (fraction) => {
          ui.rankProgress.value = fraction;
        },
      });
      const option = this._addTable(name, table, true);
      ui.concept.value = option.value;
      this._showK();
      ui.rankResult.textContent = `Found experts for “${name}”: best unit AP ${table.units.ap[0].toFixed(3)} ` +
        `(${table.numUnits.toLocaleString()} units ranked). Selected for generation.`;
      this._emit('selfcond-ranked', { table, sentences });
    } catch (e) {
      ui.rankResult.textContent = '';
      this._showError(e.missing ? e.message : `Ranking failed: ${e.message}`);
      if (e.missing) (e.missing === 'negative' ? ui.customNeg : ui.customPos).focus();
    } finally {
      this._ranking = false;
      ui.rankProgress.hidden = true;
      this._setModelReady(this._modelReady);
    }
  }
}

if (!customElements.get('selfcond-playground')) customElements.define('selfcond-playground', SelfCondPlayground);

export default SelfCondPlayground;
