// Browser benchmark: drives web/bench.html in headless Chromium, single-threaded (page not
// isolated) and threaded (cross-origin isolated, all cores), and writes the result in the shape
// of the native `selfcond bench` JSON (models[].runs[], models[].ranking[]), plus the worker's
// WebAssembly memory per run (models[].runs[].memory: after loading, and the peak after two
// concurrent streams and a ranking, next to the file, packed-weight and KV cache sizes).
//
//   node web/tests/bench.mjs [--out docs/browser-bench.json] [--sentences 200] [--repeats 3]
//                            [--small build/bench-work/gpt2-small-shaped.scm | --small none]
//                            [--small A.scm,B.scm,...] [--no-demo]
//   node web/tests/bench.mjs --verify-cost [--out file.json]
//   node web/tests/bench.mjs --app [--repeats 5] [--baseline REV] [--out docs/browser-bench.json]
// --app: the app-level benchmark (app-bench.mjs): the real page (index.html) clicked against the
// engine alone in the same page: ranking 20 + 20 sentences of football.json, time to first
// token, both streams' throughput; both builds. --baseline REV also measures REV's web/ in the
// same session. With --out, an existing file's engine figures are kept, its "app" replaced.
// --verify-cost: only the cost of verifying the model's content hash on load (the default),
// for the demo model: one load with and one without verification per build (bench.js
// measureVerify), nothing else.
// --small: also the GPT-2-small-shaped model (`selfcond bench --work-dir build/bench-work` writes
// it), generation only; the path must be inside the repository (the server's root). Several
// comma-separated paths measure each (scripts/bench_llama_peers.sh: the Llama-shaped models);
// --no-demo skips the demo model (and its ranking).
// Ranking uses the first N/2 positive and N/2 negative sentences of
// $SELFCOND_SHARED_DIR/concepts/football.json (default ../shared), or bench.html's own sample.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join, relative, sep } from 'node:path';
import { startServer, launchBrowser, repoDir, chromiumPath } from './harness.mjs';
import { runAppBench } from './app-bench.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : def);
const out = opt('out', '');
const sentences = Number(opt('sentences', 200));
const repeats = Number(opt('repeats', 3));
const smallPath = opt('small', join(repoDir, 'build', 'bench-work', 'gpt2-small-shaped.scm'));
const conceptPath = join(process.env.SELFCOND_SHARED_DIR ?? join(repoDir, '..', 'shared'), 'concepts', 'football.json');

let positive, negative, concept = 'bench.html sample';
if (existsSync(conceptPath)) {
  const c = JSON.parse(readFileSync(conceptPath, 'utf8'));
  positive = c.sentences.positive.slice(0, sentences / 2);
  negative = c.sentences.negative.slice(0, sentences / 2);
  concept = `${conceptPath} (first ${positive.length} positive + ${negative.length} negative)`;
} else {
  // Not comparable with the 200-sentence figures: the sample's 50 sentences are short.
  console.error(`bench: ${conceptPath} not found (set SELFCOND_SHARED_DIR); ranking bench.html's 50-sentence sample`);
}

const browser = await launchBrowser();
let version = 'Chromium';
try {
  version = execFileSync(chromiumPath, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
} catch {}
if (args.includes('--verify-cost')) {
  const runs = [];
  try {
    for (const s of [{ isolated: false, threads: 1 }, { isolated: true, threads: cpus().length }]) {
      const server = await startServer({ isolated: s.isolated });
      try {
        const page = await browser.context.newPage();
        await page.goto(`${server.url}bench.html?threads=${s.threads}`);
        await page.waitForSelector('body[data-ready="1"]');
        const r = await page.evaluate((cfg) => window.measureVerify(cfg), { threads: s.threads });
        await page.close();
        console.error(`  ${r.model}, ${r.build}: engine load ${r.engine_load_ms.no_verify.toFixed(0)} ms without verification, ` +
          `${r.engine_load_ms.verify.toFixed(0)} ms with (x${r.engine_load_ms.ratio.toFixed(2)}); page load ` +
          `${r.page_load_ms.no_verify.toFixed(0)} / ${r.page_load_ms.verify.toFixed(0)} ms`);
        runs.push(r);
      } finally {
        server.stop();
      }
    }
  } finally {
    await browser.close();
  }
  const text = `${JSON.stringify({ command: ['node web/tests/bench.mjs', ...args].join(' '), machine: { cores: cpus().length, browser: `${version} (headless)`, node: process.version }, verify_cost: runs }, null, 2)}\n`;
  if (out) writeFileSync(out, text);
  else process.stdout.write(text);
  process.exit(0);
}
if (args.includes('--app')) {
  // The app-level benchmark (app-bench.mjs): the real page against the engine, same page.
  if (!positive) throw new Error(`--app needs ${conceptPath} (SELFCOND_SHARED_DIR)`);
  const n = Number(opt('app-sentences', 40));
  const pos = positive.slice(0, n / 2), neg = negative.slice(0, n / 2);
  let app;
  try {
    app = await runAppBench(browser, { positive: pos, negative: neg, repeats, streamTokens: Number(opt('stream-tokens', 200)), baseline: opt('baseline', '') });
  } finally {
    await browser.close();
  }
  const cpuModel = (() => {
    try {
      return readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m)?.[1] ?? cpus()[0]?.model;
    } catch {
      return cpus()[0]?.model;
    }
  })();
  const section = {
    command: ['node web/tests/bench.mjs', ...args].join(' '),
    machine: {
      cores: cpus().length, cpu: cpuModel, hardware_concurrency: app[0]?.versions[0]?.hardware_concurrency,
      browser: `${version} (headless)`, node: process.version, load_average: loadavg().map((x) => +x.toFixed(2)),
    },
    concept: `${conceptPath} (first ${pos.length} positive + ${neg.length} negative)`,
    builds: app,
  };
  // --out FILE: a file that already holds the engine benchmark (models[]) keeps it; only its
  // "app" section is replaced.
  let doc = { app: section };
  if (out && existsSync(out)) {
    const old = JSON.parse(readFileSync(out, 'utf8'));
    if (old.models) doc = { ...old, app: section };
  }
  const text = `${JSON.stringify(doc, null, 2)}\n`;
  if (out) writeFileSync(out, text);
  else process.stdout.write(text);
  process.exit(0);
}
const cores = cpus().length;
const settings = [{ isolated: false, threads: 1 }, { isolated: true, threads: cores }];
const targets = args.includes('--no-demo') ? [] : [{ modelUrl: undefined, rank: true }];
for (const p of smallPath === 'none' ? [] : smallPath.split(',')) {
  if (existsSync(p)) targets.push({ modelUrl: `/${relative(repoDir, p).split(sep).join('/')}`, rank: false });
  else if (p !== join(repoDir, 'build', 'bench-work', 'gpt2-small-shaped.scm')) throw new Error(`--small: no such file ${p}`);
}
if (!targets.length) throw new Error('nothing to measure (--no-demo and no --small model)');
const results = [];
try {
  for (const t of targets) {
    for (const s of settings) {
      const server = await startServer({ isolated: s.isolated });
      try {
        const page = await browser.context.newPage();
        await page.goto(`${server.url}bench.html?threads=${s.threads}`);
        await page.waitForSelector('body[data-ready="1"]');
        const r = await page.evaluate((cfg) => window.runBench(cfg),
          { threads: s.threads, repeats, positive, negative, concept: 'football', modelUrl: t.modelUrl, rank: t.rank });
        await page.close();
        console.error(`  ${r.model}, ${r.build}, ${r.run.threads} thread(s): prefill ${r.run.prefill_tok_s.toFixed(1)} tok/s, decode ${r.run.decode_tok_s.toFixed(1)} tok/s` +
          (r.ranking ? `, rank ${r.ranking.sentences_per_s.toFixed(1)} sentences/s` : '') +
          (r.memory ? `; wasm memory ${r.memory.wasm_mib_loaded.toFixed(1)} MiB loaded, ${r.memory.wasm_mib_peak.toFixed(1)} MiB peak` +
            ` (file ${r.memory.file_mib.toFixed(1)} + packed ${r.memory.packed_mib.toFixed(1)} + KV ${r.memory.kv_cache_mib.toFixed(1)} MiB)` : ''));
        results.push(r);
      } finally {
        server.stop();
      }
    }
  }
} finally {
  await browser.close();
}

const first = results[0];
const byModel = new Map();
for (const r of results) {
  if (!byModel.has(r.model)) byModel.set(r.model, []);
  byModel.get(r.model).push(r);
}
const json = {
  command: ['node web/tests/bench.mjs', ...args].join(' '),
  machine: { cores, backend: first.backend, browser: `${version} (headless)`, node: process.version },
  models: [...byModel.values()].map((rs) => ({
    model: rs[0].model, precision: rs[0].precision, engine: rs[0].backend,
    load_ms: rs[0].load_ms, file_mib: rs[0].file_mib,
    prompt_tokens: rs[0].prompt_tokens, decode_tokens: rs[0].decode_tokens,
    runs: rs.map((r) => ({ ...r.run, build: r.build, load_ms: r.load_ms, memory: r.memory })),
    ...(rs[0].ranking ? { ranking: rs.map((r) => r.ranking), ranking_concept: concept } : {}),
  })),
};
const text = `${JSON.stringify(json, null, 2)}\n`;
if (out) writeFileSync(out, text);
else process.stdout.write(text);
