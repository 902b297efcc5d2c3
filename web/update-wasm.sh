#!/usr/bin/env bash
# The WebAssembly engine in the npm package's engine folder, web/lib/engine/ (next to the
# engine's worker.js and the C API glue), where the package, and through it the app, loads it
# from. The copies are committed so that the demo and the package need no WASM build; CI
# rebuilds the engine from the sources and fails when the committed copy differs (--check).
#   web/update-wasm.sh            # build both variants (wasm/build.sh), then copy
#   web/update-wasm.sh --no-build # copy what wasm/dist holds
#   web/update-wasm.sh --check    # exit 1 unless web/lib/engine holds exactly wasm/dist's build
set -euo pipefail
cd "$(dirname "$0")/.."
dest=web/lib/engine
files=(selfcond.mjs selfcond.wasm selfcond-mt.mjs selfcond-mt.wasm selfcond-mt.worker.js)
if [[ "${1:-}" == "--check" ]]; then
  stale=()
  for f in "${files[@]}"; do
    if [[ ! -f wasm/dist/$f ]]; then
      echo "update-wasm --check: wasm/dist/$f missing (build it: wasm/build.sh)" >&2
      exit 1
    fi
    cmp -s "wasm/dist/$f" "$dest/$f" || stale+=("$f")
  done
  if ((${#stale[@]})); then
    echo "update-wasm --check: web/lib/engine is not the engine these sources build: ${stale[*]}" >&2
    echo "  (rebuild and commit it: web/update-wasm.sh)" >&2
    for f in "${stale[@]}"; do
      printf '  %-22s committed %9s bytes, fresh build %9s bytes\n' "$f" \
        "$(stat -c %s "$dest/$f" 2>/dev/null || echo -)" "$(stat -c %s "wasm/dist/$f")" >&2
    done
    exit 1
  fi
  echo "update-wasm --check: web/lib/engine is the fresh build ($(stat -c %s wasm/dist/selfcond.wasm) + $(stat -c %s wasm/dist/selfcond-mt.wasm) bytes of wasm)"
  exit 0
fi
if [[ "${1:-}" != "--no-build" ]]; then
  bash wasm/build.sh
fi
mkdir -p "$dest"
# (The loader, engine/loader.mjs, and the C API glue, engine/capi*.js, are sources, not copies.)
for f in "${files[@]}"; do
  if [[ -f wasm/dist/$f ]]; then
    cp "wasm/dist/$f" "$dest/"
  else
    echo "update-wasm: wasm/dist/$f missing (not built?)" >&2
  fi
done
ls -l "$dest/"
