// The package's TypeScript declarations against the C header: capi.d.ts is what
// scripts/gen_bindings.py generates from include/selfcond/selfcond.h (not a stale copy), and
// selfcond.d.ts, built on it, type-checks with a usage sample (tests/types/usage.ts) that also
// expects the compiler to refuse what the engine would refuse (@ts-expect-error lines).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoDir, webDir } from './harness.mjs';

test('the generated bindings match the C header', () => {
  const r = spawnSync('/usr/bin/python3', [join(repoDir, 'scripts', 'gen_bindings.py'), '--check'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('selfcond.d.ts type-checks against capi.d.ts (tsc --strict)', () => {
  const tsc = join(webDir, 'node_modules', 'typescript', 'bin', 'tsc');
  assert.ok(existsSync(tsc), 'typescript is a devDependency: npm ci in web/');
  const r = spawnSync(process.execPath, [tsc, '-p', join(webDir, 'tests', 'types', 'tsconfig.json')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
