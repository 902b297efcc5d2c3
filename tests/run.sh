#!/usr/bin/env bash
# The whole test suite (the README's test command; CI runs it through .ci/run).
#   1. native Release build + GoogleTest suite (ctest), memory bar, installed package (C demo,
#      Python binding: tests/run-package.sh)
#   2. clang ASan/UBSan build: parser/format tests + libFuzzer targets, each fuzzed briefly;
#      clang ThreadSanitizer build: the tests that run thread pools and concurrent sessions
#   3. WASM build + Node tests; browser test in headless Chromium (when wasm/ is present)
#   4. ARM64: cross build + the suite under qemu-aarch64 (tests/run-arm64.sh), when the cross
#      toolchain is installed (scripts/install-deps.sh --arm64); required when CI=true
# Needs ../shared beside the repo. Set SELFCOND_FUZZ_SECONDS (default 20) per fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${SELFCOND_FUZZ_SECONDS:-20}
[[ -d ../shared/models/selfcond-mini-30m ]] || { echo "tests need ../shared beside the repo" >&2; exit 1; }
# CI has 90 minutes for .ci/run (a cold run took 65 here, ccache off): each stage prints the time so far.
stage() { echo "== [$1] $2 ($((SECONDS / 60)) min $((SECONDS % 60)) s so far)"; }

stage 1/4 "native build + tests"
# The reference implementations the tests compare with (npm: @huggingface/tokenizers, ...).
(cd tests && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error)
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$JOBS"
(cd build/release && ctest --output-on-failure -j"$JOBS" --timeout 1200)
# Memory bar of the XNNPACK engine (issue: each weight once): peak RSS of `selfcond generate` on
# the GPT-2-small-shaped model <= 1.15 x file + KV cache used. bench writes that model (random
# weights) into build/bench-work the first time.
build/release/selfcond bench --work-dir build/bench-work --no-f32 --no-handwritten \
  --rank-concept none --repeats 1 --prompt-tokens 8 --decode-tokens 8 --out build/bench-smoke.json \
  2>&1 | tail -n 4
python3 scripts/check_memory.py build/release/selfcond build/bench-work/gpt2-small-shaped.scm
# The installed package as an app uses it: C demo (CMake package, pkg-config, static) and the
# Python binding, against a temporary prefix only.
bash tests/run-package.sh build/release

# The reference data stage 1 made (tokenizer vectors, llama.cpp's logits) serve the other builds.
export SELFCOND_TOKENIZER_VECTORS="$ROOT/build/release/test-tokenizers"
export SELFCOND_LLAMA_REF="$ROOT/build/release/test-llama"
# The native CLI converts the Llama checkpoints the WASM and browser tests load.
export SELFCOND_NATIVE_CLI="$ROOT/build/release/selfcond"

stage 2/4 "sanitizers (ASan+UBSan, clang) and fuzzers"
# Both sanitizer builds link the release build's XNNPACK microkernels rather than compiling
# them twice more (cmake/third_party.cmake says why that loses little).
KERNELS="-DSELFCOND_XNNPACK_MICROKERNELS=$ROOT/build/release/_deps/xnnpack-build/libxnnpack-microkernels-prod.a"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DSELFCOND_SANITIZE=ON -DSELFCOND_FUZZ=ON "$KERNELS" >/dev/null
cmake --build build/asan -j"$JOBS"
# The whole suite under the sanitizers (every malformed-input test of every parser included),
# except the long statistical runs, which exercise no code the other tests do not.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  build/asan/selfcond_tests --gtest_brief=1 \
  --gtest_filter='-Gpt2Test.Int8PerplexityWithin3PercentOfFloat:Gpt2Test.Int4AccuracyBars:ExperimentRunTest.*:RankTest.Int8TopExpertsOverlapFloatOnFootball'
mkdir -p build/fuzz-corpus
for f in build/asan/*_fuzz; do
  name=$(basename "$f")
  mkdir -p "build/fuzz-corpus/$name"
  seeds=()
  [[ -d "tests/fuzz_seeds/$name" ]] && seeds=("tests/fuzz_seeds/$name")
  limits=(-rss_limit_mb=4096)
  # The CSV reader must parse with a budget proportional to its input (issue 22).
  [[ "$name" == expert_csv_fuzz ]] && limits=(-rss_limit_mb=512 -malloc_limit_mb=64)
  echo "-- fuzzing $name for ${FUZZ_SECONDS}s"
  SELFCOND_SHARED_DIR="$ROOT/../shared" "$f" -max_total_time="$FUZZ_SECONDS" "${limits[@]}" \
    -print_final_stats=0 "build/fuzz-corpus/$name" "${seeds[@]}" 2>&1 | tail -n 3
done

# ThreadSanitizer over the tests that run work on thread pools (sessions, ranking workers, the
# C API's concurrent use): everything, XNNPACK's operators and pthreadpool included, is
# instrumented (CMakeLists.txt SELFCOND_TSAN), so TSan sees the pool's synchronization; only the
# prebuilt microkernels (leaf loops over one task's slice) are not.
echo "-- ThreadSanitizer: threaded tests"
cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DSELFCOND_TSAN=ON "$KERNELS" >/dev/null
cmake --build build/tsan -j"$JOBS" --target selfcond_tests
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build/tsan/selfcond_tests --gtest_brief=1 \
  --gtest_filter="${SELFCOND_TSAN_FILTER:-$(grep -v '^#' tests/tsan-tests.txt | grep -v '^-' | paste -sd:)-$(grep '^-' tests/tsan-tests.txt | cut -c2- | paste -sd:)}"

stage 3/4 "WASM build + Node tests, browser tests"
# The engine built from these sources, in this run: the Node tests run wasm/dist, and the browser
# tests run web/lib/engine, which must be exactly that build (the committed copy the demo uses).
bash wasm/build.sh all
bash web/update-wasm.sh --check
SELFCOND_WASM_TEST_MODEL="$ROOT/demo/models/selfcond-mini-30m.scm" bash wasm/build.sh test
if [[ -f web/test.sh ]]; then
  bash web/test.sh
fi
stage 4/4 "ARM64 (cross build, tests under qemu-aarch64)"
if command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null; then
  bash tests/run-arm64.sh build/release/selfcond
elif [[ "${CI:-}" == "true" ]]; then
  echo "CI: the ARM64 stage needs scripts/install-deps.sh --arm64" >&2
  exit 1
else
  echo "skipped: no aarch64 cross toolchain (scripts/install-deps.sh --arm64)"
fi
echo "all test stages passed in $((SECONDS / 60)) min $((SECONDS % 60)) s"
