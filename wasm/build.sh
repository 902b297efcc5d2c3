#!/usr/bin/env bash
# Builds selfcond for WebAssembly (Emscripten). Idempotent and cached: re-running only rebuilds
# what changed (CMake + ninja, and ccache when installed).
#
#   wasm/build.sh                 both variants (single-threaded and pthreads) -> wasm/dist/
#   wasm/build.sh st              single-threaded only
#   wasm/build.sh mt              pthreads only
#   wasm/build.sh test            the Node kernel test harness and tests/kernels_test.cc built
#                                 for WASM (wasm/dist/tests/), then `node --test wasm/tests/`
#   wasm/build.sh clean           removes wasm/.cache/build-* and wasm/dist (keeps the Abseil tarball)
#
# Environment: JOBS (default 2), SELFCOND_EMSDK_NODE (node binary used by em++; default: `node`).
# Why the odd bits: see wasm/README.md (NODE_PATH for Debian's acorn, Abseil from npm re2).
set -euo pipefail

WASM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${WASM_DIR}/.." && pwd)"
CACHE="${WASM_DIR}/.cache"
DIST="${WASM_DIR}/dist"
JOBS="${JOBS:-2}"

# Abseil: vendored by the npm package re2 (the only Abseil source reachable from this network).
# Pinned by version and by tarball hash so builds are reproducible.
RE2_VERSION="1.24.0"
RE2_TGZ_SHA256="09536cb92d25ee341134af0285ff57dd3dd71dff83e689700fa851ad0626271b"
ABSL_DIR="${CACHE}/abseil-cpp-re2-${RE2_VERSION}"

# Debian's emscripten finds its JS parser (acorn) only through NODE_PATH.
export NODE_PATH="${NODE_PATH:-/usr/share/nodejs}"
# Keep ccache's cache for WASM objects next to the build (and out of the user's native cache).
export CCACHE_DIR="${CCACHE_DIR:-${CACHE}/ccache}"
# em++ is a Python script: ccache's default mtime check of the "compiler" would miss a clang
# upgrade; hash the emscripten version file + clang binary instead.
export CCACHE_COMPILERCHECK="${CCACHE_COMPILERCHECK:-cat /usr/share/emscripten/emscripten-version.txt; clang-14 --version}"

log() { printf '[wasm/build.sh] %s\n' "$*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || { log "missing tool: $1 ($2)"; exit 1; }
}

fetch_abseil() {
  if [[ -f "${ABSL_DIR}/CMakeLists.txt" ]]; then return; fi
  need npm "apt-get install npm"
  mkdir -p "${CACHE}"
  local tgz="${CACHE}/re2-${RE2_VERSION}.tgz"
  if [[ ! -f "${tgz}" ]]; then
    log "fetching Abseil via npm pack re2@${RE2_VERSION}"
    (cd "${CACHE}" && npm pack --silent "re2@${RE2_VERSION}" >/dev/null)
  fi
  local got
  got="$(sha256sum "${tgz}" | cut -d' ' -f1)"
  if [[ "${got}" != "${RE2_TGZ_SHA256}" ]]; then
    log "re2-${RE2_VERSION}.tgz sha256 ${got} != expected ${RE2_TGZ_SHA256}; delete it and retry"
    exit 1
  fi
  local tmp="${CACHE}/extract.$$"
  rm -rf "${tmp}" && mkdir -p "${tmp}"
  tar -xzf "${tgz}" -C "${tmp}" package/vendor/abseil-cpp
  rm -rf "${ABSL_DIR}"
  mv "${tmp}/package/vendor/abseil-cpp" "${ABSL_DIR}"
  rm -rf "${tmp}"
  log "Abseil source in ${ABSL_DIR}"
}

# configure_and_build <variant st|mt> <targets...>
configure_and_build() {
  local variant="$1"
  shift
  local bdir="${CACHE}/build-${variant}"
  local threads=OFF
  # Reproducible output: no checkout path in the binary (Abseil's and XNNPACK's __FILE__ strings
  # would otherwise differ between clones, and CI compares the committed engine with a fresh
  # build of it: web/update-wasm.sh --check).
  local shared
  shared="$(cd "${ROOT}/../shared" 2>/dev/null && pwd || echo "${ROOT}/../shared")"
  local flags="-ffile-prefix-map=${ROOT}=. -ffile-prefix-map=${shared}=shared"
  if [[ "${variant}" == "mt" ]]; then
    threads=ON
    # Every object (Abseil included) must be compiled with -pthread (atomics + shared memory).
    flags="${flags} -pthread"
  fi
  local launcher=()
  if command -v ccache >/dev/null 2>&1; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  # (Re)configured every time: cheap once configured, and a changed flag is picked up.
  if true; then
    log "configuring ${variant} in ${bdir}"
    emcmake cmake -S "${ROOT}" -B "${bdir}" -G Ninja \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_C_FLAGS="${flags}" -DCMAKE_CXX_FLAGS="${flags}" \
      -DSELFCOND_ABSL_SOURCE_DIR="${ABSL_DIR}" \
      -DSELFCOND_TESTS=OFF \
      -DSELFCOND_WASM_THREADS="${threads}" \
      -DSELFCOND_WASM_DIST_DIR="${DIST}" \
      "${launcher[@]}" >"${CACHE}/configure-${variant}.log" 2>&1 ||
      { tail -n 40 "${CACHE}/configure-${variant}.log"; exit 1; }
  fi
  log "building ${variant}: $*"
  nice cmake --build "${bdir}" -j "${JOBS}" --target "$@"
}

main() {
  local what="${1:-all}"
  if [[ "${what}" == "clean" ]]; then
    rm -rf "${CACHE}"/build-* "${DIST}"
    return
  fi
  need em++ "apt-get install emscripten"
  need emcmake "apt-get install emscripten"
  need cmake "apt-get install cmake"
  need ninja "apt-get install ninja-build"
  need node "apt-get install nodejs"
  fetch_abseil
  mkdir -p "${DIST}"
  local start=${SECONDS}
  case "${what}" in
    all)
      configure_and_build st selfcond_wasm
      configure_and_build mt selfcond_wasm
      ;;
    st | mt) configure_and_build "${what}" selfcond_wasm ;;
    test)
      local targets=(selfcond_wasm_kernels_harness)
      [[ -f /usr/src/googletest/googletest/src/gtest-all.cc ]] && targets+=(selfcond_wasm_kernels_gtest)
      configure_and_build st "${targets[@]}"
      (cd "${ROOT}" && SELFCOND_WASM_REQUIRE=1 node --test wasm/tests/)
      ;;
    *)
      log "unknown argument: ${what} (all|st|mt|test|clean)"
      exit 2
      ;;
  esac
  log "done in $((SECONDS - start)) s; outputs:"
  find "${DIST}" -maxdepth 2 -type f \( -name '*.mjs' -o -name '*.js' -o -name '*.wasm' \) \
    -printf '  %p %s bytes\n' >&2
}

main "$@"
