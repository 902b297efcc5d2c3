#!/usr/bin/env bash
# Installs what selfcond needs on Debian 12 (idempotent). Usage: scripts/install-deps.sh [--web] [--arm64]
#   native:  compiler, CMake, ninja, ccache, Abseil, GoogleTest, libcurl (selfcond pull), clang (fuzzers, sanitizers), python3
#            (+ venv, pip, setuptools, numpy: the Python binding's test; pkg-config: selfcond.pc)
#            (XNNPACK and its dependencies are built from pinned sources by CMake, not installed)
#   --web:   also Emscripten (WASM build), Node/npm and Chromium (browser tests)
#   --arm64: also the aarch64 cross compiler, qemu-user and Debian's arm64 Abseil + GoogleTest
#            (multiarch) for tests/run-arm64.sh
set -euo pipefail
web=0 arm64=0
for a in "$@"; do
  case "$a" in
    --web) web=1 ;;
    --arm64) arm64=1 ;;
    *) echo "install-deps.sh: unknown option $a (--web, --arm64)" >&2; exit 2 ;;
  esac
done
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
pkgs=(cmake g++ make ninja-build ccache pkg-config libabsl-dev libgtest-dev libgmock-dev libcurl4-openssl-dev clang
      libclang-rt-14-dev python3 python3-venv python3-pip python3-setuptools python3-wheel python3-numpy
      python3-dask python3-distributed python3-pandas openjdk-17-jdk-headless)
if (( web )); then
  pkgs+=(emscripten nodejs npm chromium)
fi
if (( arm64 )); then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
  fi
  pkgs+=(g++-aarch64-linux-gnu qemu-user libabsl-dev:arm64 libgtest-dev:arm64)
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
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
