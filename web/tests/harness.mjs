// Shared test plumbing: start web/serve.mjs on a free port, launch Debian's headless Chromium.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const webDir = join(dirname(fileURLToPath(import.meta.url)), '..');
export const repoDir = join(webDir, '..');
export const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const demoModel = join(repoDir, 'demo', 'models', 'selfcond-mini-30m.scm');
/** Why the browser tests cannot run here (false when they can). */
export function browserSkip() {
  if (!existsSync(chromiumPath)) return `no Chromium at ${chromiumPath}`;
  if (!existsSync(demoModel)) return `no demo model at ${demoModel}`;
  if (!existsSync(join(webDir, 'lib', 'engine', 'selfcond.wasm'))) return 'no web/lib/engine/selfcond.wasm (run web/update-wasm.sh)';
  return false;
}

/** Starts serve.mjs (root: another directory to serve); resolves {url, stop()} once it prints its URL. */
export function startServer({ isolated = true, root } = {}) {
  const args = [join(webDir, 'serve.mjs'), '--port', '0', '--quiet'];
  if (!isolated) args.push('--no-isolation');
  if (root) args.push('--root', root);
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.on('exit', (code) => reject(new Error(`serve.mjs exited with ${code}`)));
    proc.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/^(http:\/\/\S+)\n/);
      if (m) resolve({ url: m[1], stop: () => proc.kill('SIGTERM') });
    });
  });
}

/** Headless Chromium with a fresh profile. */
export async function launchBrowser() {
  const profile = mkdtempSync(join(tmpdir(), 'selfcond-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1360, height: 1000 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
      // Extra switches for diagnosis, e.g. SELFCOND_CHROMIUM_ARGS=--js-flags=--no-wasm-dynamic-tiering
      ...(process.env.SELFCOND_CHROMIUM_ARGS ?? '').split(' ').filter(Boolean)],
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export const haveChromium = existsSync(chromiumPath);

// A page that records console errors (a blocked eval or fetch in a worker is one, "Refused to
// ..."), uncaught exceptions and the page's securitypolicyviolation events. ready: the selector
// that says the page is done starting (default: the app's); null: return once it is loaded.
export async function openPage(context, url, timeout = 180_000, { ready = 'body[data-ready="1"], #banner:not([hidden])', before } = {}) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console.error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  await page.exposeFunction('__cspViolation', (v) => problems.push(`CSP violation: ${v}`));
  await page.addInitScript(() => {
    addEventListener('securitypolicyviolation', (e) =>
      window.__cspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || '(inline)'} in ${e.sourceFile}:${e.lineNumber}`));
  });
  await before?.(page);
  await page.goto(url);
  if (ready) await page.waitForSelector(ready, { timeout });
  return { page, problems };
}

// page.waitForFunction without eval: Playwright evaluates its predicate with eval() in the page,
// which the page's Content-Security-Policy (no 'unsafe-eval') forbids, and bypassCSP would
// switch off the very policy under test. page.evaluate goes through the DevTools protocol,
// which CSP does not govern, so poll with it.
export async function waitFor(page, fn, arg, { timeout = 180_000, interval = 100 } = {}) {
  const t0 = Date.now();
  for (;;) {
    if (await page.evaluate(fn, arg)) return;
    if (Date.now() - t0 > timeout) throw new Error(`waitFor: timed out after ${timeout} ms: ${fn}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}
