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

/** Starts serve.mjs; resolves {url, stop()} once it prints its URL. */
export function startServer({ isolated = true } = {}) {
  const args = [join(webDir, 'serve.mjs'), '--port', '0', '--quiet'];
  if (!isolated) args.push('--no-isolation');
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
      '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
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
