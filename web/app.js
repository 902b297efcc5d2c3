// The selfcond demo page: plain modern JS, no build step. All model work happens in the Web
// Worker behind lib/selfcond.js, the npm package `selfcond` (web/lib/, its own package.json):
// the app uses the package's files in place, as an unbundled page would.
import { SelfCond } from './lib/selfcond.js';
import { ConceptLibrary } from './library.js';

const MODEL_URL = new URL('../demo/models/selfcond-mini-30m.scm', import.meta.url);
const params = new URLSearchParams(location.search);
// Origins besides the page's own that ?model= and table URLs may come from: the page's
// <meta name="selfcond-model-origins" content="https://a.example https://b.example">. Anything
// else is refused before it is fetched (a link must not make the page run an arbitrary model).
const ALLOWED_MODEL_ORIGINS = (document.querySelector('meta[name="selfcond-model-origins"]')?.content ?? '')
  .split(/\s+/).filter(Boolean).flatMap((o) => {
    try {
      const { origin } = new URL(o);
      if (origin !== 'null' && origin === o.replace(/\/+$/, '')) return [origin];
    } catch {}
    console.warn(`selfcond-model-origins: ignoring "${o}" (not an origin like https://host[:port])`);
    return [];
  });
const PRESETS = [
  { key: 'football', label: 'football', url: new URL('../demo/experts/football.json', import.meta.url) },
  { key: 'woman', label: 'woman', url: new URL('../demo/experts/woman.json', import.meta.url) },
  { key: 'man', label: 'man', url: new URL('../demo/experts/man.json', import.meta.url) },
];
const SITE_NAMES = ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'];
const SITE_COLORS = ['var(--site0)', 'var(--site1)', 'var(--site2)', 'var(--site3)'];

const DEFAULT_POS = `I chopped the onions and fried them in butter.
Simmer the sauce for ten minutes, stirring often.
She kneaded the dough and let it rise overnight.
Season the soup with salt, pepper and fresh herbs.
He roasted the vegetables in a hot oven.
Whisk the eggs with sugar until pale and fluffy.
The recipe calls for two cups of flour.
Grill the fish and serve it with lemon.`;
const DEFAULT_NEG = `The train to Berlin was delayed by an hour.
He fixed the bug in the compiler last night.
The committee will vote on the proposal next week.
A strong wind blew across the empty beach.
She painted the bedroom walls light blue.
The stock market fell sharply on Monday.
The children played chess in the library.
Our flight landed safely despite the storm.`;

const $ = (id) => document.getElementById(id);
const ui = {
  prompt: $('prompt'), concept: $('concept'), k: $('k'), kOut: $('k-out'),
  maxTokens: $('max-tokens'), temperature: $('temperature'), topK: $('top-k'), topP: $('top-p'),
  seed: $('seed'), reseed: $('reseed'), forceValue: $('force-value'),
  generate: $('generate'), stop: $('stop'),
  outBase: $('out-base'), outCond: $('out-cond'), metaBase: $('meta-base'), metaCond: $('meta-cond'),
  condTitle: $('cond-title'),
  customName: $('custom-name'), customPos: $('custom-pos'), customNeg: $('custom-neg'),
  rank: $('rank'), rankCancel: $('rank-cancel'), rankProgress: $('rank-progress'), rankFill: $('rank-fill'),
  rankLabel: $('rank-label'), downloads: $('downloads'), rankResult: $('rank-result'),
  dlJson: $('dl-json'), dlCsv: $('dl-csv'),
  status: $('status-text'), dot: $('status-dot'), loadbar: $('loadbar'), loadFill: $('loadbar-fill'),
  loadCancel: $('load-cancel'), loadModel: $('load-model'),
  banner: $('banner'), bannerText: $('banner-text'), bannerClose: $('banner-close'),
  chartLayers: $('chart-layers'), legendLayers: $('legend-layers'), chartAp: $('chart-ap'),
  chartK: $('chart-k'), expertsMeta: $('experts-meta'), runtimeInfo: $('runtime-info'),
};

const state = {
  sc: null,
  tables: new Map(),  // key -> {label, table}
  running: [],        // active generation handles
  lastRanked: null,
  rankAbort: null,
  loadAbort: null,
  modelReady: false,  // a model is loaded: Generate and Find experts may be used
};

// ---- messages --------------------------------------------------------------------------------

function showError(msg) {
  ui.bannerText.textContent = msg;
  ui.banner.hidden = false;
  console.warn(msg);  // a warning, not an error: the page handled it
}
function clearError() {
  ui.banner.hidden = true;
}
ui.bannerClose.onclick = clearError;

// The concept library browser (library.js, #library in index.html): ?library=URL, else the
// demo's. A picked concept's table joins the concept picker like the presets.
const library = new ConceptLibrary({
  url: params.get('library'),
  allowedOrigins: ALLOWED_MODEL_ORIGINS,
  showError,
  onTable: (key, label, table, select) => {
    addTableOption(key, label, table);
    if (select) {
      ui.concept.value = key;
      updateCharts();
    }
  },
});

function setStatus(text, kind = '') {
  ui.status.textContent = text;
  ui.dot.className = `dot ${kind}`;
}

function fmtBytes(n) {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;
}

// ---- start-up --------------------------------------------------------------------------------

async function start() {
  ui.customPos.value = DEFAULT_POS;
  ui.customNeg.value = DEFAULT_NEG;
  if ('serviceWorker' in navigator && !params.has('nosw')) {
    navigator.serviceWorker.register('sw.js').catch((e) => console.info(`offline cache unavailable: ${e.message}`));
  }
  try {
    setStatus('Starting the engine…');
    // ?testhooks: the worker accepts injected faults (web/tests/browser.test.mjs uses them).
    state.sc = await SelfCond.create({ testHooks: params.has('testhooks') });
  } catch (e) {
    setStatus('Engine failed', 'error');
    showError(`The WebAssembly engine could not start: ${e.message}`);
    return;
  }
  if (params.has('testhooks')) window.selfcondApp = { sc: state.sc };
  // The engine failed (ran out of memory, aborted) and the worker replaced it with a fresh
  // one: whatever was running failed with the same message; the model must be loaded again.
  state.sc.addEventListener('restarted', (ev) => {
    setModelReady(false);
    library.detach('The engine restarted: the library opens again once the model is loaded.');
    state.tables.clear();
    ui.concept.replaceChildren();
    updateCharts();
    setStatus('Engine restarted: load the model again', 'error');
    ui.loadModel.hidden = false;
    showError(`The engine failed and was restarted: ${ev.detail.error}`);
  });
  const rt = state.sc.runtime;
  state.runtimeText = `${rt.backend} · ${rt.threaded ? `${rt.threads} threads (cross-origin isolated)` : 'single-threaded'}`;
  ui.runtimeInfo.textContent = state.runtimeText;
  await loadModelAndTables();
}

function setModelReady(ready) {
  state.modelReady = ready;
  ui.generate.disabled = !ready || state.running.length > 0;
  ui.rank.disabled = !ready || !!state.rankAbort;
}

// Downloads and loads the model (?model=, same-origin unless allowed) with a progress bar and a
// Cancel button, then the preset expert tables. After a cancel or a failure the "Load the model"
// button tries again.
async function loadModelAndTables() {
  clearError();
  setModelReady(false);
  library.detach();
  ui.loadModel.hidden = true;
  const modelUrl = params.get('model') ?? MODEL_URL;
  const abort = new AbortController();
  state.loadAbort = abort;
  ui.loadFill.style.width = '0%';
  ui.loadbar.hidden = false;
  try {
    setStatus('Downloading the model…');
    const info = await state.sc.loadModel(modelUrl, {
      signal: abort.signal,
      allowedOrigins: ALLOWED_MODEL_ORIGINS,
      verify: params.get('verify') !== '0',  // ?verify=0 skips the content hash check
      cache: !params.has('nocache'),  // ?nocache: always download, store nothing
      onProgress: ({ phase, loaded, total, fraction }) => {
        if (phase === 'cache') {
          ui.loadFill.style.width = '100%';
          setStatus(`Reading the model from the browser’s store… ${fmtBytes(loaded)}`);
          return;
        }
        if (phase === 'load') {
          ui.loadFill.style.width = '100%';
          setStatus('Checking and preparing the model…');
          return;
        }
        ui.loadFill.style.width = `${Math.round((fraction ?? 0) * 100)}%`;
        setStatus(`Downloading the model… ${fmtBytes(loaded)}${total ? ` / ${fmtBytes(total)}` : ''}`);
      },
    });
    ui.runtimeInfo.textContent = `${info.name} · ${info.nLayer} layers · ${info.numUnits.toLocaleString()} units · context ${info.nCtx} · ${state.runtimeText}${info.fromCache ? ' · from the browser’s store' : ''}`;
    ui.maxTokens.max = info.nCtx - 1;
  } catch (e) {
    ui.loadModel.hidden = false;
    if (e.name === 'AbortError') {
      setStatus('Loading cancelled', 'error');
      showError(`Loading the model was cancelled. Press “Load the model” to try again.`);
    } else {
      setStatus('Model failed to load', 'error');
      showError(`The model failed to load (${modelUrl}): ${e.message}`);
    }
    return;
  } finally {
    ui.loadbar.hidden = true;
    state.loadAbort = null;
  }
  setStatus('Loading expert tables…');
  state.tables.clear();
  ui.concept.replaceChildren();
  for (const p of PRESETS) {
    try {
      const table = await state.sc.loadExperts(p.url, { allowedOrigins: ALLOWED_MODEL_ORIGINS, cache: !params.has('nocache') });
      addTableOption(p.key, p.label, table);
    } catch (e) {
      showError(`Expert table “${p.label}” failed to load: ${e.message}`);
    }
  }
  if (!state.tables.size) {
    ui.concept.append(new Option('(no tables: rank your own below)', ''));
  }
  ui.concept.value = state.tables.has('football') ? 'football' : ui.concept.value;
  const rt = state.sc.runtime;
  setStatus(`Ready · ${state.sc.threaded ? `${rt.threads} threads` : '1 thread'}`, 'ready');
  setModelReady(true);
  updateCharts();
  library.attach(state.sc);  // not awaited: the page is usable while the index loads
  document.body.dataset.ready = '1';
}

ui.loadCancel.onclick = () => state.loadAbort?.abort();
ui.loadModel.onclick = () => loadModelAndTables();

function addTableOption(key, label, table) {
  state.tables.set(key, { label, table });
  let opt = [...ui.concept.options].find((o) => o.value === key);
  if (!opt) {
    opt = new Option(label, key);
    ui.concept.append(opt);
  }
  opt.textContent = `${label}`;
}

function currentTable() {
  return state.tables.get(ui.concept.value) ?? null;
}

// ---- generation ------------------------------------------------------------------------------

function readNumber(input, name, { min, max, integer = false }) {
  const v = Number(input.value);
  if (input.value.trim() === '' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max) {
    throw new Error(`${name} must be ${integer ? 'an integer' : 'a number'} between ${min} and ${max} (got “${input.value}”).`);
  }
  return v;
}

function renderStart(el, prompt) {
  el.replaceChildren();
  const p = document.createElement('span');
  p.className = 'prompt';
  p.textContent = prompt;
  const body = document.createElement('span');
  body.className = 'body caret';
  el.append(p, body);
  return body;
}

// Streams text into `body`: tokens are collected and appended to one text node at most every
// TEXT_UPDATE_MS. Setting textContent per token (as before) replaced the node each time and made
// the page restyle, lay out, repaint and re-raster for every token of both streams: with two
// streams at ~200 tokens/s each, the page's rendering took about half a core, which on a 2-core
// machine came out of the engine's share (web/README.md, "App speed"). The first text is
// written at once (time to first token); flush() writes what is pending (before the result).
const TEXT_UPDATE_MS = 100;
function textSink(body) {
  const node = document.createTextNode('');
  body.append(node);
  let pending = '';
  let timer = 0;
  const flush = () => {
    clearTimeout(timer);
    timer = 0;
    if (pending) node.appendData(pending);
    pending = '';
  };
  return {
    push(text) {
      if (!node.length) {
        node.appendData(text);
        return;
      }
      pending += text;
      timer ||= setTimeout(flush, TEXT_UPDATE_MS);
    },
    flush,
  };
}

async function generate() {
  clearError();
  const prompt = ui.prompt.value;
  let opts;
  try {
    opts = {
      prompt,
      maxTokens: readNumber(ui.maxTokens, 'Tokens', { min: 1, max: Number(ui.maxTokens.max) || 1023, integer: true }),
      temperature: readNumber(ui.temperature, 'Temperature', { min: 0, max: 5 }),
      topK: readNumber(ui.topK, 'Top-k', { min: 0, max: 1e6, integer: true }),
      topP: readNumber(ui.topP, 'Top-p', { min: 0.01, max: 1 }),
      seed: readNumber(ui.seed, 'Seed', { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true }),
    };
    if (!prompt.trim()) throw new Error('Type a prompt first.');
  } catch (e) {
    showError(e.message);
    return;
  }
  const entry = currentTable();
  const k = Number(ui.k.value);
  ui.condTitle.textContent = entry && k > 0 ? `Conditioned · ${entry.label} · k=${k}` : 'Conditioned (no experts: pick a concept and k > 0)';
  const experts = entry && k > 0 ? [{ table: entry.table, k }] : [];
  const forcing = { value: ui.forceValue.value };
  ui.generate.disabled = true;
  ui.stop.disabled = false;
  const columns = [
    { el: ui.outBase, meta: ui.metaBase, experts: [] },
    { el: ui.outCond, meta: ui.metaCond, experts },
  ];
  state.running = columns.map((c) => {
    const body = renderStart(c.el, prompt);
    const sink = textSink(body);
    c.meta.textContent = 'generating…';
    const h = state.sc.generate({ ...opts, experts: c.experts, forcing }, (t) => sink.push(t.text));
    c.finished = h.done.then(
      (r) => {
        sink.flush();
        body.classList.remove('caret');
        const why = { eos: 'end of text', max_tokens: '', context_full: 'context full', cancelled: 'stopped' }[r.stop] ?? r.stop;
        c.meta.textContent = `${r.tokens} tokens${r.tokensPerSecond ? ` · ${r.tokensPerSecond.toFixed(1)} tok/s` : ''}${why ? ` · ${why}` : ''}`;
        return h;
      },
      (e) => {
        sink.flush();
        body.classList.remove('caret');
        c.meta.textContent = 'error';
        const err = document.createElement('div');
        err.className = 'error-text';
        err.textContent = e.message;
        c.el.append(err);
        throw e;
      },
    );
    return h;
  });
  const results = await Promise.allSettled(columns.map((c) => c.finished));
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) showError(`Generation failed: ${failed.reason.message}`);
  state.running = [];
  ui.generate.disabled = !state.modelReady;
  ui.stop.disabled = true;
}

ui.generate.onclick = generate;
ui.stop.onclick = () => state.running.forEach((h) => h.cancel());
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !ui.generate.disabled) generate();
});
ui.reseed.onclick = () => {
  ui.seed.value = Math.floor(Math.random() * 100000);
};
ui.k.oninput = () => {
  ui.kOut.textContent = ui.k.value;
  updateCharts();
};
ui.concept.onchange = updateCharts;

// ---- custom concept --------------------------------------------------------------------------

function lines(text) {
  return text.split('\n').map((s) => s.trim()).filter(Boolean);
}

async function rankCustom() {
  clearError();
  const name = ui.customName.value.trim() || 'custom';
  const positive = lines(ui.customPos.value);
  const negative = lines(ui.customNeg.value);
  ui.rank.disabled = true;
  ui.rankCancel.hidden = false;
  ui.rankProgress.hidden = false;
  ui.downloads.hidden = true;
  ui.rankFill.style.transform = 'scaleX(0)';
  ui.rankLabel.textContent = 'starting…';
  const abort = new AbortController();
  state.rankAbort = abort;
  const t0 = performance.now();
  try {
    const table = await state.sc.rank({
      concept: name, positive, negative, signal: abort.signal,
      onProgress: ({ done, total }) => {
        ui.rankFill.style.transform = `scaleX(${done / Math.max(total, 1)})`;
        ui.rankLabel.textContent = `${done} / ${total} sentences`;
      },
    });
    const secs = (performance.now() - t0) / 1000;
    const key = `custom:${name}`;
    if (state.tables.has(key)) await state.sc.removeTable(state.tables.get(key).table).catch(() => {});
    addTableOption(key, `${name} (yours)`, table);
    ui.concept.value = key;
    state.lastRanked = table;
    ui.rankResult.textContent = `“${name}”: ${positive.length} + ${negative.length} sentences ranked in ${secs.toFixed(1)} s, best AP ${table.units.ap[0].toFixed(3)}. Selected above: press Generate.`;
    ui.downloads.hidden = false;
    updateCharts();
  } catch (e) {
    showError(`Ranking “${name}” failed: ${e.message}`);
  } finally {
    state.rankAbort = null;
    ui.rank.disabled = !state.modelReady;
    ui.rankCancel.hidden = true;
    ui.rankProgress.hidden = true;
  }
}

ui.rank.onclick = rankCustom;
ui.rankCancel.onclick = () => state.rankAbort?.abort();
ui.dlJson.onclick = () => state.lastRanked?.download('json').catch((e) => showError(e.message));
ui.dlCsv.onclick = () => state.lastRanked?.download('csv').catch((e) => showError(e.message));

// ---- charts (plain SVG) ----------------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';
function svgEl(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(v) {
  if (v <= 5) return Math.max(1, Math.ceil(v));
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((x) => x >= v);
}

function drawLayers(table, k) {
  const W = 420, H = 210, L = 34, R = 8, T = 10, B = 28;
  const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `top-${k} expert units per layer` });
  const counts = table.siteCounts(k);
  const totals = counts.map((c) => c.reduce((a, b) => a + b, 0));
  const ymax = niceMax(Math.max(1, ...totals));
  const plotH = H - T - B, plotW = W - L - R;
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4, y = T + plotH - (plotH * v) / ymax;
    svg.append(svgEl('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#eceef4' }));
    svg.append(svgEl('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, Number.isInteger(v) ? v : v.toFixed(1)));
  }
  const bw = plotW / counts.length;
  counts.forEach((c, layer) => {
    let y = T + plotH;
    c.forEach((n, kind) => {
      if (!n) return;
      const h = (plotH * n) / ymax;
      y -= h;
      const r = svgEl('rect', { x: L + layer * bw + bw * 0.18, y, width: bw * 0.64, height: h, fill: SITE_COLORS[kind], rx: 2 });
      r.append(svgEl('title', {}, `layer ${layer} ${SITE_NAMES[kind]}: ${n}`));
      svg.append(r);
    });
    if (totals[layer]) svg.append(svgEl('text', { x: L + (layer + 0.5) * bw, y: y - 4, 'text-anchor': 'middle' }, totals[layer]));
    svg.append(svgEl('text', { x: L + (layer + 0.5) * bw, y: H - 10, 'text-anchor': 'middle' }, `layer ${layer}`));
  });
  ui.chartLayers.replaceChildren(svg);
}

function drawAp(table, k) {
  const W = 420, H = 210, L = 46, R = 14, T = 10, B = 28, BINS = 40;
  const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'histogram of the AP of all units' });
  const ap = table.units.ap;
  const all = new Array(BINS).fill(0), top = new Array(BINS).fill(0);
  for (let i = 0; i < ap.length; i++) {
    if (!Number.isFinite(ap[i])) continue;
    const b = Math.min(BINS - 1, Math.max(0, Math.floor(ap[i] * BINS)));
    all[b]++;
    if (i < k) top[b]++;
  }
  const ymax = Math.max(1, ...all);
  const decades = Math.ceil(Math.log10(ymax + 1));
  const plotH = H - T - B, plotW = W - L - R;
  const yOf = (n) => T + plotH - (plotH * Math.log10(n + 1)) / decades;
  for (let d = 0; d <= decades; d++) {
    const y = yOf(10 ** d - 1);
    svg.append(svgEl('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#eceef4' }));
    svg.append(svgEl('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, d === 0 ? '0' : (10 ** d).toLocaleString()));
  }
  const bw = plotW / BINS;
  for (let b = 0; b < BINS; b++) {
    if (!all[b]) continue;
    const r = svgEl('rect', { x: L + b * bw + 0.5, y: yOf(all[b]), width: bw - 1, height: T + plotH - yOf(all[b]), fill: '#c7cbe0' });
    r.append(svgEl('title', {}, `AP ${(b / BINS).toFixed(3)}–${((b + 1) / BINS).toFixed(3)}: ${all[b]} units${top[b] ? `, ${top[b]} forced` : ''}`));
    svg.append(r);
    if (top[b]) svg.append(svgEl('rect', { x: L + b * bw + 0.5, y: yOf(top[b]), width: bw - 1, height: T + plotH - yOf(top[b]), fill: 'var(--cond)' }));
  }
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(svgEl('text', { x: L + v * plotW, y: H - 10, 'text-anchor': 'middle' }, v.toFixed(2)));
  }
  ui.chartAp.replaceChildren(svg);
}

function updateCharts() {
  const k = Number(ui.k.value);
  ui.chartK.textContent = k;
  const entry = currentTable();
  if (!entry) {
    ui.chartLayers.replaceChildren();
    ui.chartAp.replaceChildren();
    ui.expertsMeta.textContent = '';
    return;
  }
  const t = entry.table;
  const kth = k > 0 ? t.units.ap[Math.min(k, t.units.ap.length) - 1] : NaN;
  ui.expertsMeta.textContent = `${entry.label} · ${t.numUnits.toLocaleString()} units ranked · best AP ${t.units.ap[0].toFixed(3)}${k > 0 ? ` · AP of #${k}: ${kth.toFixed(3)}` : ''}`;
  drawLayers(t, k);
  drawAp(t, k);
}

ui.legendLayers.replaceChildren(...SITE_NAMES.map((n, i) => {
  const s = document.createElement('span');
  const sw = document.createElement('i');
  sw.style.background = SITE_COLORS[i];
  s.append(sw, n);
  return s;
}));

start();
