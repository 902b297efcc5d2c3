// Runs the WASM kernel harness (wasm/tests/kernels_harness.cc, built by `wasm/build.sh test`)
// under Node and asserts that the SIMD128 backend matches the scalar reference on every case.
// Timings are printed as test diagnostics, never asserted.
//
//   node --test wasm/tests/
// Without a built harness the test is skipped, unless SELFCOND_WASM_REQUIRE=1 (build.sh sets it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const harness = join(here, '..', 'dist', 'tests', 'kernels_harness.js');
const required = process.env.SELFCOND_WASM_REQUIRE === '1';

function runHarness(args) {
  const r = spawnSync(process.execPath, [harness, ...args], {
    encoding: 'utf8',
    timeout: 300_000,
    maxBuffer: 64 << 20,
  });
  assert.equal(r.error, undefined, `harness failed to start: ${r.error}`);
  assert.equal(r.status, 0, `harness exited with ${r.status}\n${r.stderr}`);
  return r.stdout.trim().split('\n').map((line, i) => {
    try {
      return JSON.parse(line);
    } catch {
      assert.fail(`harness output line ${i + 1} is not JSON: ${line}`);
    }
  });
}

test('wasm_simd128 kernels match the scalar reference', {
  skip: !existsSync(harness) && !required ? `not built: run wasm/build.sh test (${harness})` : false,
}, (t) => {
  assert.ok(existsSync(harness), `missing ${harness}: run wasm/build.sh test`);
  const out = runHarness(['--bench']);

  const backends = out.find((o) => o.kind === 'backends');
  assert.ok(backends, 'no backends line');
  assert.equal(backends.available[0], 'wasm_simd128', 'SIMD128 must be the preferred backend');
  assert.equal(backends.available.at(-1), 'scalar');
  assert.equal(backends.default, 'wasm_simd128');

  const cases = out.filter((o) => ['quantize', 'gemm_i8', 'gemm_f32'].includes(o.kind));
  const done = out.find((o) => o.kind === 'done');
  assert.ok(done, 'harness did not finish');
  assert.equal(done.cases, cases.length);
  // The harness's case list (all three ops, ragged n, sub-ranges, strides): a truncated run
  // must not pass.
  for (const kind of ['quantize', 'gemm_i8', 'gemm_f32']) {
    assert.ok(cases.filter((c) => c.kind === kind).length >= 30, `too few ${kind} cases`);
  }
  assert.ok(cases.some((c) => c.kind === 'quantize' && c.data === 'special'));
  assert.ok(cases.some((c) => c.kind === 'gemm_i8' && c.range[0] % 16 !== 0));

  for (const c of cases) {
    const what = JSON.stringify(c);
    assert.equal(c.mismatches, 0, `mismatch vs scalar: ${what}`);
    if ('outside_writes' in c) assert.equal(c.outside_writes, 0, `wrote outside range: ${what}`);
  }

  for (const tm of out.filter((o) => o.kind === 'timing')) {
    t.diagnostic(`${tm.backend} m=${tm.m} n=${tm.n} k=${tm.k}: quantize ${tm.quantize_ms} ms, ` +
                 `gemm_i8 ${tm.gemm_i8_ms} ms, gemm_f32 ${tm.gemm_f32_ms} ms`);
  }
});

// tests/kernels_test.cc (the native GoogleTest suite) compiled to WASM: every available
// backend, wasm_simd128 included, against scalar.cc.
const gtest = join(here, '..', 'dist', 'tests', 'kernels_gtest.js');
test('tests/kernels_test.cc passes under WASM', {
  skip: !existsSync(gtest) && !required ? `not built: run wasm/build.sh test (${gtest})` : false,
}, () => {
  assert.ok(existsSync(gtest), `missing ${gtest}: run wasm/build.sh test`);
  const r = spawnSync(process.execPath, [gtest], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /\[  PASSED  \] \d+ tests?\./);
  assert.doesNotMatch(r.stdout, /\[  FAILED  \]/);
});
