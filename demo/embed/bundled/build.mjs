#!/usr/bin/env node
// Bundles main.js with esbuild into dist/ and copies the package's engine/ folder next to the
// bundle. esbuild keeps `new URL('./engine/worker.js', import.meta.url)` as it is, and in the
// bundle import.meta.url is dist/main.js's URL: the worker, its loader and both WebAssembly
// builds must be in dist/engine/.
//   npm install selfcond esbuild && node build.mjs
// ESBUILD=/path/to/esbuild/lib/main.js uses an esbuild installed elsewhere (web/tests does).
import { cpSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const esbuild = await import(process.env.ESBUILD ? pathToFileURL(process.env.ESBUILD).href : 'esbuild');
rmSync(join(here, 'dist'), { recursive: true, force: true });
await esbuild.build({
  absWorkingDir: here, entryPoints: ['main.js'], outdir: 'dist', bundle: true, format: 'esm', target: 'es2022',
  minify: true, sourcemap: true, logLevel: 'warning',
});
const engine = dirname(fileURLToPath(import.meta.resolve('selfcond/engine/worker.js')));
cpSync(engine, join(here, 'dist', 'engine'), { recursive: true });
console.log(`bundled ${join(here, 'dist', 'main.js')} (+ engine/ from ${engine})`);
