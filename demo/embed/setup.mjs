#!/usr/bin/env node
// Builds a site from the packed npm package only, as another project would get it:
//   node demo/embed/setup.mjs DIR        then: node web/serve.mjs --root DIR  -> /unbundled/, /bundled/
// 1. `npm pack` of the package (web/lib/) into DIR/pack/;
// 2. `npm install --offline` of that tarball into the empty DIR/site/ (no registry: the package
//    has no dependencies, and an unreachable registry makes any lookup fail loudly);
// 3. the two example pages (unbundled/, bundled/) copied into DIR/site/, the demo model and
//    tables linked as DIR/site/models/ and DIR/site/experts/;
// 4. the bundled page built with esbuild (bundled/build.mjs; web/node_modules's esbuild unless
//    ESBUILD is set).
// The browser tests (web/tests/embed.test.mjs) run this, serve DIR/site and drive both pages.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const pkgDir = join(repo, 'web', 'lib');

/** Returns {site, tarball, files: what npm packed, installed: version}. */
export function setup(dir, { log = () => {} } = {}) {
  const packDir = join(dir, 'pack');
  const site = join(dir, 'site');
  mkdirSync(packDir, { recursive: true });
  mkdirSync(site, { recursive: true });
  if (readdirSync(site).length) throw new Error(`${site} is not empty`);
  const npm = (args, cwd) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--no-update-notifier'], {
    cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, npm_config_registry: 'http://127.0.0.1:9/', npm_config_cache: join(dir, 'npm-cache') },
  });
  const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', packDir], pkgDir));
  const tarball = join(packDir, packed.filename);
  log(`packed ${tarball} (${packed.size} bytes, ${packed.entryCount} files)`);
  npm(['install', '--offline', '--prefix', site, tarball], site);
  const installed = JSON.parse(execFileSync(process.execPath, ['-e',
    'process.stdout.write(require("fs").readFileSync(require.resolve("selfcond/package.json", {paths: [process.argv[1]]}), "utf8"))', site],
  { encoding: 'utf8' })).version;
  log(`installed selfcond ${installed} into ${site}`);
  for (const page of ['unbundled', 'bundled']) {
    cpSync(join(here, page), join(site, page), { recursive: true, filter: (src) => !src.includes(`${page}/dist`) });
  }
  for (const d of ['models', 'experts']) symlinkSync(join(repo, 'demo', d), join(site, d));
  const esbuild = process.env.ESBUILD ?? join(repo, 'web', 'node_modules', 'esbuild', 'lib', 'main.js');
  if (!existsSync(esbuild)) throw new Error(`no esbuild at ${esbuild} (cd web && npm ci)`);
  log(execFileSync(process.execPath, [join(site, 'bundled', 'build.mjs')], {
    encoding: 'utf8', env: { ...process.env, ESBUILD: esbuild },
  }).trim());
  writeFileSync(join(dir, 'README.txt'), `node ${join(repo, 'web', 'serve.mjs')} --root ${site}\n`);
  return { site, tarball, files: packed.files.map((f) => f.path), installed };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: node demo/embed/setup.mjs DIR');
    process.exit(2);
  }
  const { site } = setup(resolve(dir), { log: console.log });
  console.log(`serve it: node web/serve.mjs --root ${site}   then open /unbundled/ and /bundled/`);
}
