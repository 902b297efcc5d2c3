// The app-level browser benchmark (`node web/tests/bench.mjs --app`): drives the real page
// (web/index.html served by web/serve.mjs, headless Chromium) by clicking its buttons, and in the
// same page, interleaved with it, measures the engine alone through a second SelfCond instance
// (same build, same thread count, same model) whose times are taken inside its worker. Per
// build (single-threaded, not isolated; pthreads, cross-origin isolated) and per version (this
// tree, and with --baseline REV a previous commit's web/ served next to it):
//
//  rank:   click "Find experts" with 20 + 20 sentences -> the result line is in the page, vs the
//          engine's startRanking + rankStep(all) + finishRanking in one go (worker op benchRank);
//  ttft:   click Generate with a 4-token prompt -> the first token of either column is in the
//          page, vs the engine's prefill + first step with the app's sampling settings;
//  stream: click Generate with 200 tokens per column -> both columns done; both streams' tokens
//          over click-to-done, vs the engine's greedy decode tok/s (and, for reference, its
//          decode with the app's sampling settings) at the same thread count.
//
// Each measurement is repeated (medians); app and engine alternate within each repeat so that
// load from other processes hits both alike. The first Generate and the first ranking after
// the page loaded are reported separately (cold): the JIT and first allocations are in them.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, repoDir, webDir } from './harness.mjs';

const median = (a) => {
  const s = a.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** A previous commit's web/ in a temporary server root, next to this tree's web/ (web-new). */
function baselineRoot(rev) {
  const dir = mkdtempSync(join(tmpdir(), 'selfcond-baseline-'));
  const tar = execFileSync('git', ['-C', repoDir, 'archive', rev, 'web'], { maxBuffer: 1 << 30 });
  execFileSync('tar', ['-x', '-C', dir], { input: tar });
  symlinkSync(join(repoDir, 'demo'), join(dir, 'demo'));
  symlinkSync(webDir, join(dir, 'web-new'));
  const commit = execFileSync('git', ['-C', repoDir, 'rev-parse', '--short', rev], { encoding: 'utf8' }).trim();
  return { dir, commit, engineLib: '/web-new/lib/selfcond.js', cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

// CPU time (ms) of this process's descendants (the browser) by thread kind, from /proc (Linux;
// null elsewhere): the engine's threads are Web Workers ("DedicatedWorker": the library's worker
// and the threaded build's pthreads), everything else is the browser's own work for the page
// (main thread, compositor, raster, viz). Independent of other processes' load, unlike times.
function cpuSnapshot() {
  try {
    const hz = 100;  // USER_HZ
    const parent = new Map();
    const pids = readdirSync('/proc').filter((x) => /^\d+$/.test(x));
    for (const pid of pids) {
      try {
        const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
        parent.set(pid, st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      } catch {}
    }
    const mine = (pid) => {
      for (let p = pid, i = 0; p && p !== '0' && p !== '1' && i < 32; p = parent.get(p), i++) if (p === String(process.pid)) return true;
      return false;
    };
    const threads = new Map();
    for (const pid of pids.filter((p) => p !== String(process.pid) && mine(p))) {
      let tids = [];
      try {
        tids = readdirSync(`/proc/${pid}/task`);
      } catch {}
      for (const tid of tids) {
        try {
          const st = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
          const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
          const comm = st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'));
          threads.set(`${pid}/${tid}`, { worker: /Worker/.test(comm) && !/ThreadPool/.test(comm), ms: ((+f[11]) + (+f[12])) * 1000 / hz });
        } catch {}
      }
    }
    return threads;
  } catch {
    return null;
  }
}

function cpuSince(before) {
  const after = cpuSnapshot();
  if (!before || !after) return null;
  const out = { engine_workers_ms: 0, other_ms: 0 };
  for (const [id, t] of after) {
    const d = t.ms - (before.get(id)?.ms ?? 0);
    if (t.worker) out.engine_workers_ms += d;
    else out.other_ms += d;
  }
  return out;
}

// ---- in the page (page.evaluate: these functions are serialized, they cannot use closures) ----

async function setup({ engineLib, positive, negative, prompt, sampling, streamTokens }) {
  const $ = (id) => document.getElementById(id);
  const { SelfCond } = await import(engineLib);
  // The app's own thread count (lib/selfcond.js's default), for the engine instance too.
  const threads = crossOriginIsolated ? Math.min(navigator.hardwareConcurrency || 1, 4) : 1;
  const eng = await SelfCond.create({ threads });
  await eng.loadModel('/demo/models/selfcond-mini-30m.scm');
  const football = await eng.loadExperts('/demo/experts/football.json');
  window.__bench = { eng, threads, football };
  // A seed with which neither column meets the end of text before streamTokens (the app stops
  // there), so that both streams run the whole time. The app's settings: football, k = 50.
  let seed = sampling.seed;
  for (; seed < sampling.seed + 100; seed++) {
    const res = await Promise.all([[], [{ table: football, k: 50 }]].map((experts) =>
      eng.generate({ prompt, maxTokens: streamTokens, ...sampling, seed, experts, forcing: { value: 'on_p50' } }).done));
    if (res.every((r) => r.tokens === streamTokens)) break;
  }
  $('seed').value = String(seed);
  // The app's inputs: the benchmark's sentences and its default sampling settings.
  $('custom-name').value = 'football-40';
  $('custom-pos').value = positive.join('\n');
  $('custom-neg').value = negative.join('\n');
  $('prompt').value = 'Once upon a time';
  return { seed, threads, appRuntime: $('runtime-info').textContent, hardwareConcurrency: navigator.hardwareConcurrency, engineRuntime: eng.runtime };
}

// Clicks `button` and resolves with {clickMs, ...times} as soon as the DOM satisfies each named
// predicate (checked after every DOM mutation, in the MutationObserver's microtask: no polling
// delay), plus `paintMs`: the frame after the last one.
function clickAndWatch(button, preds) {
  return new Promise((resolve, reject) => {
    const times = {};
    const names = Object.keys(preds);
    let t0 = 0;
    const check = () => {
      for (const n of names) if (times[n] === undefined && preds[n]()) times[n] = performance.now() - t0;
      if (names.every((n) => times[n] !== undefined)) {
        mo.disconnect();
        clearTimeout(timer);
        requestAnimationFrame(() => requestAnimationFrame(() => resolve({ ...times, paintMs: performance.now() - t0 })));
      }
    };
    const mo = new MutationObserver(check);
    mo.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
    const timer = setTimeout(() => {
      mo.disconnect();
      reject(new Error(`timed out; got ${JSON.stringify(times)}; banner: ${document.getElementById('banner-text').textContent}`));
    }, 120_000);
    t0 = performance.now();
    button.click();
  });
}

async function appRank() {
  const $ = (id) => document.getElementById(id);
  // (The click handler hides the result line synchronously; its showing again is the result.)
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const t = await window.__clickAndWatch($('rank'), {
    resultMs: () => !$('downloads').hidden && /ranked in/.test($('rank-result').textContent),
  });
  return { ...t, text: $('rank-result').textContent };
}

async function appGenerate({ maxTokens }) {
  const $ = (id) => document.getElementById(id);
  $('max-tokens').value = String(maxTokens);
  // The precomputed football table (the app selects a table it has just ranked).
  if ($('concept').value !== 'football') {
    $('concept').value = 'football';
    $('concept').dispatchEvent(new Event('change'));
  }
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const body = (id) => $(id).querySelector('.body')?.textContent ?? '';
  const meta = (id) => $(id).textContent;
  const finished = (id) => /tokens/.test(meta(id)) && !$(id.replace('meta', 'out')).querySelector('.caret');
  const t = await window.__clickAndWatch($('generate'), {
    firstMs: () => body('out-base').length > 0 || body('out-cond').length > 0,
    bothMs: () => body('out-base').length > 0 && body('out-cond').length > 0,
    doneMs: () => finished('meta-base') && finished('meta-cond') && !$('generate').disabled,
  });
  const tokens = ['meta-base', 'meta-cond'].map((id) => Number(meta(id).match(/(\d+) tokens/)?.[1] ?? NaN));
  return { ...t, tokens, meta: [meta('meta-base'), meta('meta-cond')] };
}

async function engineRank({ positive, negative }) {
  return window.__bench.eng.benchRank({ positive, negative, concept: 'football-40' });
}

// The engine's API without the UI: the library's rank() (worker steps, progress, table summary).
async function apiRank({ positive, negative }) {
  const t0 = performance.now();
  const t = await window.__bench.eng.rank({ positive, negative, concept: 'api-40' });
  const ms = performance.now() - t0;
  await window.__bench.eng.removeTable(t);
  return ms;
}

// Two streams through the library without the UI (the app's settings, the callbacks do nothing).
async function apiStream({ prompt, maxTokens, sampling }) {
  const { eng, football } = window.__bench;
  const seed = Number(document.getElementById('seed').value);
  const t0 = performance.now();
  const res = await Promise.all([[], [{ table: football, k: 50 }]].map((experts) =>
    eng.generate({ prompt, maxTokens, ...sampling, seed, experts, forcing: { value: 'on_p50' } }, () => {}).done));
  const ms = performance.now() - t0;
  return { ms, tokens: res.map((r) => r.tokens), tok_s: (res[0].tokens + res[1].tokens) / (ms / 1000) };
}

async function engineDecode({ prompt, decodeTokens, sampling }) {
  return window.__bench.eng.bench({ prompt, decodeTokens, sampling });
}

async function teardown() {
  window.__bench?.eng.terminate();
}

// ---- driver -----------------------------------------------------------------------------------

// The app's default sampling (index.html): temperature 0.8, top-k 40, top-p 0.95, seed 1.
const APP_SAMPLING = { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 };
const PROMPT = 'Once upon a time';

// Opens a version's page (its own server) and warms it: the first Generate and the first ranking
// of the page are kept as the cold figures.
async function openVersion(browser, { isolated, root, engineLib, label, positive, negative, streamTokens }) {
  const server = await startServer({ isolated, root });
  const page = await browser.context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(e.message));
  try {
    await page.goto(`${server.url}?nosw`);
    await page.waitForSelector('body[data-ready="1"]', { timeout: 180_000 });
    // A helper the other page functions call (DevTools' evaluate is not subject to the page's CSP).
    await page.evaluate(`window.__clickAndWatch = ${clickAndWatch}`);
    const env = await page.evaluate(setup, { engineLib, positive, negative, prompt: PROMPT, sampling: APP_SAMPLING, streamTokens });
    const coldGen = await page.evaluate(appGenerate, { maxTokens: 30 });
    const coldRank = await page.evaluate(appRank);
    // Warm the engine instance the same way (its first ranking and decode are cold too).
    await page.evaluate(engineRank, { positive, negative });
    await page.evaluate(engineDecode, { prompt: PROMPT, decodeTokens: 30, sampling: APP_SAMPLING });
    return { label, server, page, problems, env, coldGen, coldRank, runs: [] };
  } catch (e) {
    await page.close();
    server.stop();
    throw e;
  }
}

// One repeat of every measurement, app and engine alternating.
async function repeatOnce(v, { positive, negative, streamTokens, log }) {
  const { page } = v;
  await page.bringToFront();
  const x = {};
  x.engineRank = await page.evaluate(engineRank, { positive, negative });
  x.appRank = await page.evaluate(appRank);
  x.apiRankMs = await page.evaluate(apiRank, { positive, negative });
  x.engineFirst = await page.evaluate(engineDecode, { prompt: PROMPT, decodeTokens: 1, sampling: APP_SAMPLING });
  x.appTtft = await page.evaluate(appGenerate, { maxTokens: 30 });
  x.engineGreedy = await page.evaluate(engineDecode, { prompt: PROMPT, decodeTokens: streamTokens });
  let cpu = cpuSnapshot();
  x.appStream = await page.evaluate(appGenerate, { maxTokens: streamTokens });
  x.appStreamCpu = cpuSince(cpu);
  x.engineSampled = await page.evaluate(engineDecode, { prompt: PROMPT, decodeTokens: streamTokens, sampling: APP_SAMPLING });
  cpu = cpuSnapshot();
  x.apiStream = await page.evaluate(apiStream, { prompt: PROMPT, maxTokens: streamTokens, sampling: APP_SAMPLING });
  x.apiStreamCpu = cpuSince(cpu);
  v.runs.push(x);
  log(`    ${v.label} #${v.runs.length}: rank app ${x.appRank.resultMs.toFixed(0)} / engine ${x.engineRank.totalMs.toFixed(0)} ms; ` +
    `ttft app ${x.appTtft.firstMs.toFixed(1)} / engine ${x.engineFirst.firstTokenMs.toFixed(1)} ms; ` +
    `stream app ${appTps(x.appStream).toFixed(0)} / api ${x.apiStream.tok_s.toFixed(0)} / engine ${decodeTps(x.engineGreedy).toFixed(0)} tok/s`);
}

const decodeTps = (b) => (b.decodeTokens - 1) / (b.decodeMs / 1000);  // n tokens: n - 1 forward passes
const appTps = (g) => (g.tokens[0] + g.tokens[1]) / (g.doneMs / 1000);

async function closeVersion(v) {
  try {
    await v.page.evaluate(teardown);
    await v.page.close();
  } finally {
    v.server.stop();
  }
}

function summarize(v, { positive, negative, streamTokens }) {
  const { runs, env, coldGen, coldRank } = v;
  const m = (f) => median(runs.map(f));
  return {
    version: v.label,
    threads: env.threads,
    app_runtime: env.appRuntime,
    repeats: runs.length,
    rank: {
      sentences: positive.length + negative.length,
      app_click_to_result_ms: m((x) => x.appRank.resultMs),
      app_click_to_paint_ms: m((x) => x.appRank.paintMs),
      api_ms: m((x) => x.apiRankMs),
      engine_ms: m((x) => x.engineRank.totalMs),
      engine_breakdown_ms: { start: m((x) => x.engineRank.startMs), sentences: m((x) => x.engineRank.stepMs), finish: m((x) => x.engineRank.finishMs) },
      ratio: m((x) => x.appRank.resultMs / x.engineRank.totalMs),
      cold_app_click_to_result_ms: coldRank.resultMs,
    },
    ttft: {
      prompt: PROMPT, prompt_tokens: runs[0].engineFirst.promptTokens,
      app_first_token_ms: m((x) => x.appTtft.firstMs),
      app_both_columns_ms: m((x) => x.appTtft.bothMs),
      engine_first_token_ms: m((x) => x.engineFirst.firstTokenMs),
      engine_prefill_ms: m((x) => x.engineFirst.prefillMs),
      app_30_tokens_done_ms: m((x) => x.appTtft.doneMs),
      cold_app_first_token_ms: coldGen.firstMs,
      cold_app_30_tokens_done_ms: coldGen.doneMs,
    },
    stream: {
      tokens_per_stream: streamTokens,
      seed: env.seed,
      app_tokens: runs[runs.length - 1].appStream.tokens,
      app_total_tok_s: m((x) => appTps(x.appStream)),
      app_click_to_done_ms: m((x) => x.appStream.doneMs),
      api_total_tok_s: m((x) => x.apiStream.tok_s),
      engine_decode_tok_s: m((x) => decodeTps(x.engineGreedy)),
      engine_decode_sampled_tok_s: m((x) => decodeTps(x.engineSampled)),
      ratio: m((x) => appTps(x.appStream) / decodeTps(x.engineGreedy)),
      ratio_vs_sampled: m((x) => appTps(x.appStream) / decodeTps(x.engineSampled)),
      // CPU time of the browser's threads during the app's run and during the same two streams
      // through the API: the engine's (workers) and everything else (the page's rendering).
      cpu_ms: runs[0].appStreamCpu ? {
        app_engine_workers: m((x) => x.appStreamCpu.engine_workers_ms), app_other: m((x) => x.appStreamCpu.other_ms),
        api_engine_workers: m((x) => x.apiStreamCpu.engine_workers_ms), api_other: m((x) => x.apiStreamCpu.other_ms),
      } : null,
    },
    hardware_concurrency: env.hardwareConcurrency,
    page_errors: v.problems,
  };
}

/**
 * Runs the app benchmark for both builds. baseline: a git revision whose web/ is measured too,
 * in the same session (its page, this tree's engine instance next to it).
 */
export async function runAppBench(browser, { positive, negative, repeats = 5, streamTokens = 200, baseline, log = console.error }) {
  const cores = (await import('node:os')).cpus().length;
  const builds = [
    { isolated: false, build: 'selfcond (single-threaded)' },
    { isolated: true, build: 'selfcond-mt (pthreads)' },
  ];
  const base = baseline ? baselineRoot(baseline) : null;
  const results = [];
  try {
    for (const b of builds) {
      // Baseline and current are open side by side and alternate per repeat, so that both see
      // the same machine load.
      const todo = [
        ...(base ? [{ label: `baseline ${base.commit}`, root: base.dir, engineLib: base.engineLib }] : []),
        { label: 'current', root: undefined, engineLib: '/web/lib/selfcond.js' },
      ];
      const opts = { positive, negative, streamTokens, log };
      const open = [];
      let versions;
      try {
        for (const v of todo) {
          log(`  app bench: ${b.build}, ${v.label}`);
          open.push(await openVersion(browser, { ...b, ...v, ...opts }));
        }
        for (let r = 0; r < repeats; r++) for (const v of open) await repeatOnce(v, opts);
        versions = open.map((v) => summarize(v, opts));
      } finally {
        for (const v of open) await closeVersion(v).catch(() => {});
      }
      results.push({ build: b.build, cores, versions });
    }
  } finally {
    base?.cleanup();
  }
  return results;
}
