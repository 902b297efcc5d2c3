#!/usr/bin/env bash
# Installs what selfcond needs on Debian 12 (idempotent). Usage: scripts/install-deps.sh [--web]
#   native: compiler, CMake, XNNPACK + pthreadpool, Abseil, GoogleTest, clang (fuzzers, sanitizers)
#   --web:  also Emscripten (WASM build), Node/npm and Chromium (browser tests)
set -euo pipefail
pkgs=(cmake g++ make ccache pkg-config libxnnpack-dev libpthreadpool-dev libabsl-dev libgtest-dev
      libgmock-dev clang libclang-rt-14-dev python3)
if [[ "${1:-}" == "--web" ]]; then
  pkgs+=(emscripten ninja-build nodejs npm chromium)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from elsewhere (the machine image): do not fight it.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if (( ${#missing[@]} )); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
