// The selfcond demo page: plain modern JS, no build step. All model work happens in the Web
// Worker behind lib/selfcond.js, the npm package `selfcond` (web/lib/, its own package.json):
// the app uses the package's files in place, as an unbundled page would.
import { SelfCond } from './lib/selfcond.js';
import { loadModelAndTables as loadInto, rankTyped, streamColumns } from './lib/ui.js';
import { ConceptLibrary } from './library.js';

const MODEL_URL = new URL('../demo/models/selfcond-mini-30m.scm', import.meta.url);
// The models the page serves, for the picker: {models: [{label, url, tables}]} (urls relative to
// the index; tables: true when the preset expert tables were ranked on that model). ?models=
// points at another index; ?model= picks (or adds) one.
const MODELS_URL = new URL('../demo/models/index.json', import.meta.url);
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
// The 60 + 60 sentence samples of the datasets the precomputed tables were ranked on: the
// steering vector, the concept words (logit bias) and the expert explorer are computed from them.
const SAMPLES = {
  football: new URL('../demo/concepts/football.json', import.meta.url),
  woman: new URL('../demo/concepts/woman.json', import.meta.url),
  man: new URL('../demo/concepts/man.json', import.meta.url),
};
// The method switch: how the conditioned column is steered, and its strength slider.
const METHODS = {
  experts: { label: 'expert units', unit: 'expert units forced (k)', symbol: 'k', min: 0, max: 200, step: 1 },
  steer: { label: 'steering vector', unit: '× the steering vector (α)', symbol: 'α', min: 0, max: 8, step: 0.5 },
  bias: { label: 'logit bias', unit: 'logit bias on the concept words (β)', symbol: 'β', min: 0, max: 10, step: 0.5 },
};
const CONCEPT_WORDS = 20;
// The linear layers of a block that hold units, as the loaded model names them (4 for GPT-2, 7
// for the Llama family); GPT-2's until a model is loaded.
const siteNames = () => state.sc?.model?.siteKinds ?? ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'];
const siteColor = (kind) => `var(--site${kind % 7})`;

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
  modelPicker: $('model-picker'),
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
  strengthUnit: $('strength-unit'), steerLayer: $('steer-layer'), steerLayerField: $('steer-layer-field'),
  methodInfo: $('method-info'),
  unitList: $('unit-list'), explorer: $('explorer'), explorerTitle: $('explorer-title'),
  explorerStatus: $('explorer-status'), explorerList: $('explorer-list'),
  compare: $('compare'), compareStatus: $('compare-status'), compareResult: $('compare-result'),
  chartCompare: $('chart-compare'), legendCompare: $('legend-compare'), compareTable: $('compare-table'),
  compareCaption: $('compare-caption'),
};
const methodInputs = [...document.querySelectorAll('input[name="method"]')];

const state = {
  sc: null,
  models: [],         // the picker's entries: {label, url (absolute), tables}
  tables: new Map(),  // key -> {label, table}
  running: [],        // active generation handles
  lastRanked: null,
  rankAbort: null,
  loadAbort: null,
  modelReady: false,  // a model is loaded: Generate and Find experts may be used
  method: 'experts',
  strength: { experts: 50, steer: 4, bias: 4 },  // the slider's value per method
  sentences: new Map(),  // concept key -> {positive, negative} typed (custom concepts)
  derived: new Map(),    // concept key -> {sentences, words, vectors: Map(layer -> vector)} (promises)
  comparing: false,      // compareMethods is running (the engine is busy for seconds)
  explore: 0,            // the explorer's current request (a newer click drops older results)
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
    state.derived.clear();
    closeExplorer();
    ui.concept.replaceChildren();
    updateCharts();
    setStatus('Engine restarted: load the model again', 'error');
    ui.loadModel.hidden = false;
    showError(`The engine failed and was restarted: ${ev.detail.error}`);
  });
  const rt = state.sc.runtime;
  state.runtimeText = `${rt.backend} · ${rt.threaded ? `${rt.threads} threads (cross-origin isolated)` : 'single-threaded'}`;
  ui.runtimeInfo.textContent = state.runtimeText;
  await fillModelPicker();
  await loadModelAndTables();
}

// The picker: the served index's models, and ?model= when it is not one of them.
async function fillModelPicker() {
  const indexUrl = params.has('models') ? new URL(params.get('models'), location.href) : MODELS_URL;
  try {
    const r = await fetch(indexUrl);
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const index = await r.json();
    state.models = (index.models ?? []).map((m) => ({ label: String(m.label ?? m.url), url: new URL(m.url, indexUrl).href, tables: !!m.tables }));
  } catch (e) {
    console.info(`model index ${indexUrl} not available (${e.message}): the default model only`);
    state.models = [{ label: 'selfcond-mini-30m', url: MODEL_URL.href, tables: true }];
  }
  if (params.has('model')) {
    const url = new URL(params.get('model'), location.href).href;
    if (!state.models.some((m) => m.url === url)) state.models.push({ label: url.split('/').pop(), url, tables: false });
  }
  ui.modelPicker.replaceChildren(...state.models.map((m) => new Option(m.label, m.url)));
  const want = params.has('model') ? new URL(params.get('model'), location.href).href : state.models[0]?.url;
  ui.modelPicker.value = want;
}

ui.modelPicker.onchange = () => {
  state.loadAbort?.abort();
  state.running.forEach((h) => h.cancel());
  state.rankAbort?.abort();
  loadModelAndTables();
};

function setModelReady(ready) {
  state.modelReady = ready;
  refreshButtons();
}

// What may run now: one Generate at a time, one ranking, and the comparison alone (it blocks the
// engine for seconds: the streams and the ranking would only wait for it).
function refreshButtons() {
  const ready = state.modelReady;
  ui.generate.disabled = !ready || state.running.length > 0 || state.comparing;
  ui.rank.disabled = !ready || !!state.rankAbort || state.comparing;
  ui.compare.disabled = !ready || state.running.length > 0 || !!state.rankAbort || state.comparing;
}

// Downloads and loads the model (?model=, same-origin unless allowed) with a progress bar and a
// Cancel button, then the preset expert tables. After a cancel or a failure the "Load the model"
// button tries again.
async function loadModelAndTables() {
  clearError();
  setModelReady(false);
  library.detach();
  ui.loadModel.hidden = true;
  const entry = state.models[ui.modelPicker.selectedIndex];
  const modelUrl = entry?.url ?? params.get('model') ?? MODEL_URL;
  const abort = new AbortController();
  state.loadAbort = abort;
  ui.loadFill.style.width = '0%';
  ui.loadbar.hidden = false;
  let loaded;
  try {
    setStatus('Downloading the model…');
    loaded = await loadInto(state.sc, modelUrl, {
      signal: abort.signal,
      allowedOrigins: ALLOWED_MODEL_ORIGINS,
      verify: params.get('verify') !== '0',  // ?verify=0 skips the content hash check
      cache: !params.has('nocache'),  // ?nocache: always download, store nothing
      // The preset tables were ranked on the demo model: other models start without (rank a
      // concept of your own, or one of the library's).
      tables: entry && !entry.tables ? [] : PRESETS,
      onStatus: (text, fraction) => {
        ui.loadFill.style.width = `${Math.round((fraction ?? 0) * 100)}%`;
        setStatus(text);
      },
      onTableError: (label, e) => showError(`Expert table “${label}” failed to load: ${e.message}`),
    });
    const info = loaded.info;
    ui.runtimeInfo.textContent = `${info.name} · ${info.nLayer} layers · ${info.numUnits.toLocaleString()} units · context ${info.nCtx} · ${state.runtimeText}${info.fromCache ? ' · from the browser’s store' : ''}`;
    ui.maxTokens.max = info.nCtx - 1;
    ui.steerLayer.max = info.nLayer - 1;
    if (!(Number(ui.steerLayer.value) <= info.nLayer - 1) || !state.steerLayerSet) ui.steerLayer.value = Math.floor(info.nLayer / 2);
    legend();
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
  // Tables belong to the model they were loaded for: the picker holds the new model's only, and
  // steering vectors computed on the previous model go too.
  state.tables.clear();
  state.derived.clear();
  closeExplorer();
  ui.concept.replaceChildren();
  for (const t of loaded.tables) addTableOption(t.key, t.label, t.table);
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
  const forcing = { value: ui.forceValue.value };
  // Steering vector and logit bias need the concept's sentences (fetched or computed once per
  // concept and block): done before either column starts, so both start together.
  state.running = [{ cancel() {} }];
  refreshButtons();
  let cond;
  try {
    cond = await conditioning();
  } catch (e) {
    state.running = [];
    refreshButtons();
    showError(e.message);
    return;
  }
  ui.condTitle.textContent = cond.title;
  ui.stop.disabled = false;
  const run = streamColumns(state.sc, { ...opts, forcing }, [
    { out: ui.outBase, meta: ui.metaBase, options: { experts: [] } },
    { out: ui.outCond, meta: ui.metaCond, options: cond.opts },
  ]);
  state.running = run.handles;
  const results = await run.done;
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) showError(`Generation failed: ${failed.reason.message}`);
  state.running = [];
  refreshButtons();
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
  state.strength[state.method] = Number(ui.k.value);
  if (state.method === 'experts') updateCharts();
};
ui.concept.onchange = () => {
  updateCharts();
  updateMethodInfo();
};
for (const r of methodInputs) r.onchange = () => r.checked && setMethod(r.value);
ui.steerLayer.onchange = () => {
  state.steerLayerSet = true;
  updateMethodInfo();
};

// ---- method switch: expert units / steering vector / logit bias -------------------------------

function setMethod(method) {
  const m = METHODS[method];
  if (!m) return;
  state.method = method;
  for (const r of methodInputs) r.checked = r.value === method;
  // Range first, then the value (a value outside the old range would be clamped).
  Object.assign(ui.k, { min: m.min, max: m.max, step: m.step });
  ui.k.value = state.strength[method];
  ui.kOut.textContent = ui.k.value;
  ui.strengthUnit.textContent = m.unit;
  ui.k.setAttribute('aria-label', `Strength: ${m.unit}`);
  ui.steerLayerField.hidden = method !== 'steer';
  updateMethodInfo();
}

// The concept's sentences: a custom concept's typed ones, or the sample of a precomputed
// table's dataset (fetched once). null when there are none (a table from elsewhere).
function sampleKey(key) {
  if (SAMPLES[key]) return key;
  const concept = state.tables.get(key)?.table?.concept ?? '';
  const name = concept.split('-')[0].toLowerCase();
  return SAMPLES[name] ? name : null;
}

function conceptData(key) {
  let d = state.derived.get(key);
  if (d) return d;
  d = { vectors: new Map(), words: null };
  const typed = state.sentences.get(key);
  const sample = sampleKey(key);
  if (typed) {
    d.sentences = Promise.resolve(typed);
  } else if (sample) {
    d.sentences = fetch(SAMPLES[sample]).then(async (r) => {
      if (!r.ok) throw new Error(`could not fetch the ${sample} sentences: HTTP ${r.status}`);
      const j = await r.json();
      const positive = j.sentences?.positive ?? [], negative = j.sentences?.negative ?? [];
      if (!positive.length || !negative.length) throw new Error(`the ${sample} sample has no sentences`);
      return { positive, negative, source: `the ${sample} sample` };
    });
  } else {
    const label = state.tables.get(key)?.label ?? key;
    d.sentences = Promise.reject(new Error(`“${label}” has no sentences here: the steering vector, the logit bias and the explorer need the concept's sentences (rank your own concept below).`));
  }
  d.sentences.catch(() => state.derived.delete(key));
  state.derived.set(key, d);
  return d;
}

function conceptSentences(key) {
  return conceptData(key).sentences;
}

function conceptWords(key) {
  const d = conceptData(key);
  d.words ??= d.sentences.then((s) => state.sc.conceptWords({ ...s, maxWords: CONCEPT_WORDS }));
  d.words.catch(() => { d.words = null; });
  return d.words;
}

function steeringVector(key, layer) {
  const d = conceptData(key);
  let v = d.vectors.get(layer);
  if (!v) {
    v = d.sentences.then((s) => state.sc.steeringVector({ ...s, layer }));
    d.vectors.set(layer, v);
    v.catch(() => d.vectors.delete(layer));
  }
  return v;
}

function steerLayer() {
  const max = state.sc?.model ? state.sc.model.nLayer - 1 : Number(ui.steerLayer.max);
  return readNumber(ui.steerLayer, 'Block', { min: 0, max, integer: true });
}

// What the conditioned column gets: generate() options and its title.
async function conditioning() {
  const key = ui.concept.value;
  const entry = currentTable();
  const method = state.method;
  const v = state.strength[method];
  const m = METHODS[method];
  if (!entry || !(v > 0)) {
    return { opts: { experts: [] }, title: `Conditioned (nothing applied: pick a concept and ${m.symbol} > 0)` };
  }
  if (method === 'experts') {
    return { opts: { experts: [{ table: entry.table, k: v }] }, title: `Conditioned · ${entry.label} · k=${v}` };
  }
  if (method === 'steer') {
    const layer = steerLayer();
    ui.metaCond.textContent = 'computing the steering vector…';
    const sv = await steeringVector(key, layer);
    showSteerInfo(sv, await conceptSentences(key));
    return {
      opts: { experts: [], steer: { vector: sv.vector, layer, alpha: v } },
      title: `Conditioned · ${entry.label} · steering α=${v} (block ${layer})`,
    };
  }
  ui.metaCond.textContent = 'finding the concept words…';
  const words = await conceptWords(key);
  if (!words.length) throw new Error(`“${entry.label}”: no concept words: none of its words (function words aside) occurs in 3 or more positive sentences more often than in the negatives. Add sentences.`);
  const bias = await state.sc.wordLogitBias({ words: words.map((w) => w.word), beta: v });
  showWords(words, bias.tokens.length);
  return { opts: { experts: [], bias }, title: `Conditioned · ${entry.label} · logit bias β=${v}` };
}

function showSteerInfo(sv, s) {
  ui.methodInfo.textContent = `Steering vector of block ${sv.layer}: mean residual of ${s.positive.length} positive minus ${s.negative.length} negative sentences, norm ${sv.norm.toFixed(1)}.`;
  delete ui.methodInfo.dataset.words;
}

function showWords(words, tokens) {
  ui.methodInfo.textContent = `Bias on ${tokens} tokens of the concept words: ${words.map((w) => w.word).join(', ')}.`;
  ui.methodInfo.dataset.words = words.map((w) => w.word).join(' ');
}

// The info line under the slider for the current concept and method (once computed; nothing is
// computed just for it).
let infoRequest = 0;
async function updateMethodInfo() {
  const req = ++infoRequest;
  ui.methodInfo.textContent = '';
  delete ui.methodInfo.dataset.words;
  const key = ui.concept.value;
  const d = state.derived.get(key);
  if (!d || state.method === 'experts') return;
  try {
    if (state.method === 'bias' && d.words) {
      const words = await d.words;
      if (req === infoRequest) showWords(words, '');
    }
    if (state.method === 'steer') {
      const v = d.vectors.get(Number(ui.steerLayer.value));
      if (v) {
        const [sv, s] = await Promise.all([v, d.sentences]);
        if (req === infoRequest) showSteerInfo(sv, s);
      }
    }
  } catch {
    // Shown when it is used.
  }
}

// ---- custom concept --------------------------------------------------------------------------

async function rankCustom() {
  clearError();
  const name = ui.customName.value.trim() || 'custom';
  ui.rankCancel.hidden = false;
  ui.rankProgress.hidden = false;
  ui.downloads.hidden = true;
  ui.rankFill.style.transform = 'scaleX(0)';
  ui.rankLabel.textContent = 'starting…';
  const abort = new AbortController();
  state.rankAbort = abort;
  refreshButtons();
  const t0 = performance.now();
  try {
    const { table, positive, negative } = await rankTyped(state.sc, {
      name, positiveText: ui.customPos.value, negativeText: ui.customNeg.value, signal: abort.signal,
      onProgress: (fraction, done, total) => {
        ui.rankFill.style.transform = `scaleX(${fraction})`;
        ui.rankLabel.textContent = `${done} / ${total} sentences`;
      },
    });
    const secs = (performance.now() - t0) / 1000;
    const key = `custom:${name}`;
    if (state.tables.has(key)) await state.sc.removeTable(state.tables.get(key).table).catch(() => {});
    addTableOption(key, `${name} (yours)`, table);
    state.sentences.set(key, { positive, negative, source: 'your sentences' });
    state.derived.delete(key);
    ui.concept.value = key;
    state.lastRanked = table;
    ui.rankResult.textContent = `“${name}”: ${positive.length} + ${negative.length} sentences ranked in ${secs.toFixed(1)} s, best AP ${table.units.ap[0].toFixed(3)}. Selected above: press Generate.`;
    ui.downloads.hidden = false;
    updateCharts();
  } catch (e) {
    showError(`Ranking “${name}” failed: ${e.message}`);
  } finally {
    state.rankAbort = null;
    refreshButtons();
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
      const r = svgEl('rect', { x: L + layer * bw + bw * 0.18, y, width: bw * 0.64, height: h, fill: siteColor(kind), rx: 2 });
      r.append(svgEl('title', {}, `layer ${layer} ${siteNames()[kind]}: ${n}`));
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
  const k = state.strength.experts;
  ui.chartK.textContent = k;
  const entry = currentTable();
  if (!entry) {
    ui.chartLayers.replaceChildren();
    ui.chartAp.replaceChildren();
    ui.expertsMeta.textContent = '';
    ui.unitList.replaceChildren();
    closeExplorer();
    return;
  }
  const t = entry.table;
  const kth = k > 0 ? t.units.ap[Math.min(k, t.units.ap.length) - 1] : NaN;
  ui.expertsMeta.textContent = `${entry.label} · ${t.numUnits.toLocaleString()} units ranked · best AP ${t.units.ap[0].toFixed(3)}${k > 0 ? ` · AP of #${k}: ${kth.toFixed(3)}` : ''}`;
  drawLayers(t, k);
  drawAp(t, k);
  drawUnitList(ui.concept.value, t);
}

// ---- expert explorer ---------------------------------------------------------------------------

const EXPLORER_UNITS = 20;  // units listed
const EXPLORER_SENTENCES = 10;  // sentences shown, by the unit's max response

function unitName(table, rank) {
  return `L${table.units.layer[rank]} ${siteNames()[table.units.kind[rank]]} #${table.units.unit[rank]}`;
}

function drawUnitList(key, table) {
  const n = Math.min(EXPLORER_UNITS, table.units.site.length);
  const items = [];
  for (let i = 0; i < n; i++) {
    const unit = table.units.unit[i], ap = table.units.ap[i];
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'unit';
    b.dataset.rank = i;
    b.setAttribute('aria-pressed', 'false');
    b.setAttribute('aria-label', `Unit ${i + 1}: layer ${table.units.layer[i]} ${siteNames()[table.units.kind[i]]} unit ${unit}, AP ${ap.toFixed(3)}. Show where it fires.`);
    const name = document.createElement('span');
    name.textContent = `${i + 1}. ${unitName(table, i)}`;
    const apEl = document.createElement('span');
    apEl.className = 'ap';
    apEl.textContent = `AP ${ap.toFixed(3)}`;
    b.append(name, apEl);
    b.onclick = () => exploreUnit(key, table, i, b);
    li.append(b);
    items.push(li);
  }
  ui.unitList.replaceChildren(...items);
  // Another concept's unit stays open only while its concept is selected.
  if (state.exploring && state.exploring !== key) closeExplorer();
}

function closeExplorer() {
  state.explore++;
  state.exploring = null;
  ui.explorer.hidden = true;
  ui.explorerList.replaceChildren();
}

// Traces the unit over every sentence of the concept (positive and negative), then lists the
// sentences where its response peaks highest, each token shaded by the unit's value there.
async function exploreUnit(key, table, rank, button) {
  clearError();
  const req = ++state.explore;
  state.exploring = key;
  for (const b of ui.unitList.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b === button));
  const site = table.units.site[rank], unit = table.units.unit[rank], id = table.units.id[rank];
  const entry = state.tables.get(key);
  ui.explorer.hidden = false;
  ui.explorer.dataset.unit = `${site}:${unit}`;
  ui.explorerTitle.textContent = `Where unit ${unitName(table, rank)} fires · ${entry?.label ?? key}`;
  ui.explorerList.replaceChildren();
  ui.explorerStatus.textContent = 'Reading the concept’s sentences…';
  try {
    const s = await conceptSentences(key);
    if (req !== state.explore) return;
    const all = [...s.positive.map((t) => ({ text: t, positive: true })), ...s.negative.map((t) => ({ text: t, positive: false }))];
    let done = 0;
    ui.explorerStatus.textContent = `Tracing the unit over ${all.length} sentences…`;
    const traces = await Promise.all(all.map((x) => state.sc.traceUnit({ sentence: x.text, unit: id }).then((r) => {
      if (++done % 20 === 0 && req === state.explore) ui.explorerStatus.textContent = `Tracing the unit over ${all.length} sentences… ${done}`;
      return r;
    })));
    if (req !== state.explore) return;
    const rows = all.map((x, i) => {
      const t = traces[i];
      let best = 0;
      for (let j = 1; j < t.values.length; j++) if (t.values[j] > t.values[best]) best = j;
      return { ...x, tokens: t.tokens, values: t.values, max: t.values.length ? t.values[best] : -Infinity, at: best };
    }).sort((a, b) => b.max - a.max);
    const top = rows.slice(0, EXPLORER_SENTENCES);
    const scale = Math.max(1e-6, ...top.map((r) => r.max));
    ui.explorerList.replaceChildren(...top.map((r) => sentenceItem(r, scale)));
    const posTop = top.filter((r) => r.positive).length;
    ui.explorerStatus.textContent = `Top ${top.length} of ${all.length} sentences (${s.source ?? 'the concept'}) by the unit’s largest response: ${posTop} of them are the concept’s. Darker tokens: larger response.`;
  } catch (e) {
    if (req !== state.explore) return;
    ui.explorerStatus.textContent = `Could not trace the unit: ${e.message}`;
  }
}

function sentenceItem(r, scale) {
  const li = document.createElement('li');
  li.className = r.positive ? 'pos' : 'neg';
  li.dataset.max = String(r.max);
  const badge = document.createElement('span');
  badge.className = 'badge';
  badge.textContent = r.positive ? 'concept' : 'other';
  const text = document.createElement('span');
  text.className = 'tokens';
  r.tokens.forEach((tok, j) => {
    const span = document.createElement('span');
    span.className = 'tok';
    const v = r.values[j];
    const a = Math.min(1, Math.max(0, v / scale));
    // A custom property (CSSOM, allowed by the page's style-src 'self'), read by .tok's background.
    span.style.setProperty('--a', a.toFixed(3));
    if (a > 0.6) span.classList.add('hot');
    span.dataset.value = String(v);
    span.title = `${JSON.stringify(tok)}: ${v.toFixed(3)}`;
    span.setAttribute('aria-label', `${tok.trim() || '(space)'}: ${v.toFixed(2)}`);
    span.textContent = tok;
    text.append(span);
  });
  const max = document.createElement('span');
  max.className = 'max';
  max.textContent = `max ${r.max.toFixed(2)} at “${(r.tokens[r.at] ?? '').trim()}”`;
  li.append(badge, text, max);
  return li;
}

// ---- compare methods -----------------------------------------------------------------------------

const COMPARE_GRID = { seeds: 2, newTokens: 16, ks: [10, 20, 50], alphas: [1, 2, 4], betas: [2, 4, 6] };
const COMPARE_SECOND_PROMPT = 'The news today is that';
const METHOD_NAMES = { none: 'unconditioned', experts: 'expert units', steer: 'steering vector', bias: 'logit bias' };
const METHOD_SYMBOL = { experts: 'k', steer: 'α', bias: 'β' };

async function compareMethods() {
  clearError();
  const key = ui.concept.value;
  const entry = currentTable();
  if (!entry) {
    showError('Pick a concept first.');
    return;
  }
  state.comparing = true;
  refreshButtons();
  const t0 = performance.now();
  const tick = () => {
    ui.compareStatus.textContent = `Running the three methods on ${entry.label}… ${Math.round((performance.now() - t0) / 1000)} s (the engine is busy; the page is not)`;
  };
  tick();
  const timer = setInterval(tick, 500);
  try {
    const layer = steerLayer();
    const s = await conceptSentences(key);
    const prompt = ui.prompt.value.trim();
    const prompts = prompt && prompt !== COMPARE_SECOND_PROMPT ? [prompt, COMPARE_SECOND_PROMPT] : ['Once upon a time', COMPARE_SECOND_PROMPT];
    const r = await state.sc.compareMethods({ table: entry.table, positive: s.positive, negative: s.negative, prompts, layer, ...COMPARE_GRID });
    const secs = (performance.now() - t0) / 1000;
    drawCompare(r, entry.label, prompts);
    ui.compareStatus.textContent = `${entry.label}: ${r.points.length} settings × ${prompts.length} prompts × ${COMPARE_GRID.seeds} seeds × ${COMPARE_GRID.newTokens} tokens in ${secs.toFixed(1)} s.`;
  } catch (e) {
    ui.compareStatus.textContent = '';
    showError(`Comparing the methods failed: ${e.message}`);
  } finally {
    clearInterval(timer);
    state.comparing = false;
    refreshButtons();
  }
}
ui.compare.onclick = compareMethods;

function fmtStrength(p) {
  return p.method === 'none' ? '—' : `${METHOD_SYMBOL[p.method]}=${p.strength}`;
}

function drawCompare(r, label, prompts) {
  const pts = r.points.filter((p) => Number.isFinite(p.ppl) && p.ppl > 0);
  const none = pts.find((p) => p.method === 'none');
  const W = 560, H = 310, L = 48, R = 28, T = 24, B = 40;
  const plotW = W - L - R, plotH = H - T - B;
  const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `Concept rate against perplexity for ${label}: ${pts.map((p) => `${METHOD_NAMES[p.method]} ${fmtStrength(p)}: ${(p.mention_rate * 100).toFixed(0)}%, perplexity ${p.ppl.toFixed(1)}`).join('; ')}` });
  // x: perplexity, log scale, whole decades' nice ticks; y: concept rate 0-100 %.
  const lo = Math.log10(Math.min(...pts.map((p) => p.ppl)) / 1.15), hi = Math.log10(Math.max(...pts.map((p) => p.ppl)) * 1.15);
  const span = Math.max(hi - lo, 0.05);
  const xOf = (ppl) => L + (plotW * (Math.log10(ppl) - lo)) / span;
  const yMax = Math.min(100, Math.max(20, Math.ceil((Math.max(...pts.map((p) => p.mention_rate * 100)) + 5) / 20) * 20));
  const yOf = (rate) => T + plotH - (plotH * rate * 100) / yMax;
  for (let v = 0; v <= yMax; v += yMax / 4) {
    const y = T + plotH - (plotH * v) / yMax;
    svg.append(svgEl('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#eceef4' }));
    svg.append(svgEl('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, `${v}%`));
  }
  const ticks = [];
  for (let d = Math.floor(lo); d <= Math.ceil(hi); d++) for (const m of [1, 2, 3, 5, 7]) ticks.push(m * 10 ** d);
  for (const t of ticks.filter((t) => Math.log10(t) >= lo && Math.log10(t) <= hi)) {
    const x = xOf(t);
    svg.append(svgEl('line', { x1: x, x2: x, y1: T, y2: T + plotH, stroke: '#eceef4' }));
    svg.append(svgEl('text', { x, y: T + plotH + 14, 'text-anchor': 'middle' }, t >= 1 ? String(t) : t.toPrecision(1)));
  }
  svg.append(svgEl('text', { x: L + plotW / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis-title' }, 'perplexity (log scale)'));
  svg.append(svgEl('text', { x: 12, y: T + plotH / 2, 'text-anchor': 'middle', class: 'axis-title', transform: `rotate(-90 12 ${T + plotH / 2})` }, 'concept rate'));
  for (const method of ['experts', 'steer', 'bias']) {
    const series = pts.filter((p) => p.method === method).sort((a, b) => a.strength - b.strength);
    if (!series.length) continue;
    const g = svgEl('g', { class: `series m-${method}`, 'data-method': method });
    const line = none ? [none, ...series] : series;
    g.append(svgEl('path', { class: 'series-line', d: line.map((p, i) => `${i ? 'L' : 'M'}${xOf(p.ppl).toFixed(1)},${yOf(p.mention_rate).toFixed(1)}`).join(' ') }));
    for (const p of series) {
      const c = svgEl('circle', { class: 'series-pt', cx: xOf(p.ppl), cy: yOf(p.mention_rate), r: 4 });
      c.append(svgEl('title', {}, `${METHOD_NAMES[method]} ${fmtStrength(p)}: concept rate ${(p.mention_rate * 100).toFixed(0)}%, perplexity ${p.ppl.toFixed(1)}, Self-BLEU ${p.self_bleu.toFixed(3)}`));
      g.append(c);
      // Labels on different sides per method, so that points close together stay readable.
      const at = { experts: { dx: 6, dy: -6, anchor: 'start' }, steer: { dx: 6, dy: 14, anchor: 'start' }, bias: { dx: -6, dy: -6, anchor: 'end' } }[method];
      g.append(svgEl('text', { class: 'pt-label series-label', x: xOf(p.ppl) + at.dx, y: yOf(p.mention_rate) + at.dy, 'text-anchor': at.anchor }, fmtStrength(p)));
    }
    svg.append(g);
  }
  if (none) {
    const g = svgEl('g', { class: 'series m-none', 'data-method': 'none' });
    const c = svgEl('circle', { class: 'series-pt', cx: xOf(none.ppl), cy: yOf(none.mention_rate), r: 5 });
    c.append(svgEl('title', {}, `unconditioned: concept rate ${(none.mention_rate * 100).toFixed(0)}%, perplexity ${none.ppl.toFixed(1)}`));
    g.append(c, svgEl('text', { class: 'pt-label series-label', x: xOf(none.ppl), y: yOf(none.mention_rate) - 10, 'text-anchor': 'middle' }, 'none'));
    svg.append(g);
  }
  ui.chartCompare.replaceChildren(svg);
  ui.legendCompare.replaceChildren(...['none', 'experts', 'steer', 'bias'].map((m) => {
    const s = document.createElement('span');
    s.className = `m-${m}`;
    s.append(document.createElement('i'), METHOD_NAMES[m]);
    return s;
  }));
  const rows = r.points.map((p) => {
    const tr = document.createElement('tr');
    tr.className = p.method;
    tr.dataset.method = p.method;
    for (const v of [METHOD_NAMES[p.method] ?? p.method, fmtStrength(p), `${(p.mention_rate * 100).toFixed(0)}%`,
      Number.isFinite(p.ppl) ? p.ppl.toFixed(1) : '—', Number.isFinite(p.self_bleu) ? p.self_bleu.toFixed(3) : '—']) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  });
  ui.compareTable.tBodies[0].replaceChildren(...rows);
  const words = (r.concept_words ?? []).slice(0, 12).map((w) => w.word).join(', ');
  ui.compareCaption.textContent = `${label} · prompts: ${prompts.map((p) => `“${p}”`).join(', ')} · block ${r.options?.steer_layer ?? ''} (norm ${Number(r.steer_norm).toFixed(1)}) · concept words: ${words}`;
  ui.compareResult.hidden = false;
}

// The chart's legend: one swatch per linear layer of a block (drawn again for each model).
function legend() {
  ui.legendLayers.replaceChildren(...siteNames().map((n, i) => {
    const s = document.createElement('span');
    const sw = document.createElement('i');
    sw.style.background = siteColor(i);
    s.append(sw, n);
    return s;
  }));
}

legend();
start();
