#!/usr/bin/env bash
# Rebuilds the WebAssembly engine (wasm/build.sh) and copies it into the npm package's engine
# folder, web/lib/engine/ (next to the engine's worker.js), where the package, and through it
# the app, loads it from; the copies are committed so users need no build step.
#   web/update-wasm.sh            # build both variants, then copy
#   web/update-wasm.sh --no-build # copy what wasm/dist holds
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--no-build" ]]; then
  bash wasm/build.sh
fi
dest=web/lib/engine
mkdir -p "$dest"
# The package's one copy of the loader (its source is wasm/loader.mjs).
cp wasm/loader.mjs "$dest/"
for f in selfcond.mjs selfcond.wasm selfcond-mt.mjs selfcond-mt.wasm selfcond-mt.worker.js; do
  if [[ -f wasm/dist/$f ]]; then
    cp "wasm/dist/$f" "$dest/"
  else
    echo "update-wasm: wasm/dist/$f missing (not built?)" >&2
  fi
done
ls -l "$dest/"
