#!/usr/bin/env bash
# The ARM64 stage (phones, edge boxes): cross-build the library, CLI and GoogleTest suite with
# Debian's aarch64-linux-gnu toolchain, run the suite under qemu-aarch64 -cpu max (XNNPACK's
# NEON dotprod / i8mm kernels run there), check that greedy generation on the reference prompts
# gives the same tokens as the x86 build, and report the stripped sizes.
#
#   tests/run-arm64.sh [X86_CLI]     X86_CLI: the native build's selfcond (default
#                                    build/release/selfcond) for the greedy comparison
#
# Needs: scripts/install-deps.sh --arm64 (cross compiler, qemu-user, arm64 Abseil/GoogleTest),
# root (a private mount namespace gives qemu an ARM /proc/cpuinfo: qemu-user passes the host's
# x86 one through and cpuinfo, hence XNNPACK, cannot initialize on it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-$(nproc)}
X86_CLI=${1:-build/release/selfcond}
BUILD=build/aarch64
CPUINFO=tests/arm64/cpuinfo-neoverse-n1-i8mm

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake >/dev/null
nice cmake --build "$BUILD" -j"$JOBS" --target selfcond selfcond_tests selfcond_shared selfcond_static

# qemu with an ARM /proc/cpuinfo (Neoverse-N1-like, with dotprod and i8mm), in a private mount
# namespace so the host is untouched. Single-threaded: Debian 12's qemu-user (7.2) hangs in the
# first pthread_create on this machine kind's kernel (6.18), even for a plain std::thread
# program, so every pool is capped at one thread (SELFCOND_MAX_THREADS, src/util/parallel.h).
export SELFCOND_MAX_THREADS=1
arm() {
  unshare -m sh -c "mount --bind '$ROOT/$CPUINFO' /proc/cpuinfo && \
    exec qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu -E SELFCOND_MAX_THREADS=1 \"\$@\"" arm "$@"
}

echo "-- GoogleTest suite under qemu-aarch64 (subset: see docs/kernels.md, ARM64)"
# Left out under emulation (qemu runs ~20-50x slower than native): the three long statistical
# runs (729-sentence perplexity, full football.json ranking, the paper experiment) and the
# f32-only ranking reference test; everything else runs, including the reference-prompt
# accuracy tests (Gpt2Test.*) and int8 ranking on football_small (RankTest.ThreadCount...).
# Also left out: the SIGTERM test of temporary files (qemu-user 7.2 does not deliver a signal a
# handler re-raises for itself: the child spins; the test runs natively and under ASan).
arm "$BUILD/selfcond_tests" --gtest_brief=1 \
  --gtest_filter='-Gpt2Test.Int8PerplexityWithin3PercentOfFloat:Gpt2Test.Int4RunsOnXnnpackAndIsMeasured:ExperimentRunTest.*:RankTest.Int8TopExpertsOverlapFloatOnFootball:RankTest.FootballSmallMatchesReferenceTop50:RankTest.PooledResponsesMatchReference:FileUtilTest.SigtermRemovesRegisteredTempFiles'

echo "-- XNNPACK's plain NEON kernels too: qemu -cpu cortex-a53 (no dotprod / i8mm), a subset"
unshare -m sh -c "mount --bind '$ROOT/tests/arm64/cpuinfo-cortex-a53' /proc/cpuinfo && \
  exec qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu -E SELFCOND_MAX_THREADS=1 \
  '$BUILD/selfcond_tests' --gtest_brief=1 \
  --gtest_filter='XnnpackTest.*:Gpt2Test.Int8Top1AndGreedyPrefix:Gpt2Test.KvCacheChunkingConsistent'"

echo "-- greedy tokens on the reference prompts: aarch64 (qemu) vs x86"
python3 - "$X86_CLI" <<'EOF'
import json, subprocess, sys
x86 = sys.argv[1]
ref = json.load(open("../shared/models/selfcond-mini-30m/reference/reference.json"))
cpuinfo = "tests/arm64/cpuinfo-neoverse-n1-i8mm"
bad = 0
for case in ref["cases"]:
    args = ["generate", "--prompt", case["prompt"], "--max-tokens", "20", "--temperature", "0",
            "--no-stop"]
    native = subprocess.run([x86] + args, capture_output=True, text=True, check=True).stdout
    arm = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         f"mount --bind {cpuinfo} /proc/cpuinfo && exec qemu-aarch64 -cpu max "
         f"-L /usr/aarch64-linux-gnu -E SELFCOND_MAX_THREADS=1 build/aarch64/selfcond \"$@\"",
         "arm"] + args,
        capture_output=True, text=True, check=True).stdout
    same = native == arm
    bad += not same
    print(f"  {'same' if same else 'DIFFERENT'}: {case['prompt']!r}")
    if not same:
        print(f"    x86:     {native!r}\n    aarch64: {arm!r}")
sys.exit(1 if bad else 0)
EOF

echo "-- stripped sizes (aarch64)"
tmp=$(mktemp -d)
aarch64-linux-gnu-strip -o "$tmp/selfcond" "$BUILD/selfcond"
# What an app embeds: the C library, shared (exports selfcond_* only) or static (XNNPACK inside).
aarch64-linux-gnu-strip -o "$tmp/libselfcond.so" "$BUILD/libselfcond.so"
aarch64-linux-gnu-strip --strip-debug -o "$tmp/libselfcond.a" "$BUILD/libselfcond.a"
for f in "$tmp/selfcond" "$tmp/libselfcond.so" "$tmp/libselfcond.a"; do
  awk -v n="$(basename "$f")" -v s="$(stat -c %s "$f")" 'BEGIN { printf "  %-22s %9.1f KiB\n", n, s / 1024 }'
done
rm -rf "$tmp"
echo "arm64 stage passed"
