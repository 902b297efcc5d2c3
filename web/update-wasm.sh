#!/usr/bin/env bash
# Rebuilds the WebAssembly engine (wasm/build.sh) and copies it into web/wasm/, where the app
# loads it from; the copies are committed so users need no build step.
#   web/update-wasm.sh            # build both variants, then copy
#   web/update-wasm.sh --no-build # copy what wasm/dist holds
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--no-build" ]]; then
  bash wasm/build.sh
fi
mkdir -p web/wasm
cp wasm/loader.mjs web/wasm/
for f in selfcond.mjs selfcond.wasm selfcond-mt.mjs selfcond-mt.wasm selfcond-mt.worker.js; do
  if [[ -f wasm/dist/$f ]]; then
    cp "wasm/dist/$f" web/wasm/
  else
    echo "update-wasm: wasm/dist/$f missing (not built?)" >&2
  fi
done
ls -l web/wasm/
