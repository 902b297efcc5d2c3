#!/usr/bin/env bash
# The demo: install what is needed, build, generate with and without the football experts on the
# committed demo model, then serve the browser app on localhost (Ctrl-C to stop).
#   bash demo/run.sh [--no-serve] [--port N]
set -euo pipefail
cd "$(dirname "$0")/.."
serve=1; port=8080
while (( $# )); do
  case "$1" in
    --no-serve) serve=0 ;;
    --port) port=$2; shift ;;
    *) echo "usage: demo/run.sh [--no-serve] [--port N]" >&2; exit 2 ;;
  esac
  shift
done
bash scripts/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)" --target selfcond
SC=build/release/selfcond
MODEL=demo/models/selfcond-mini-30m.scm
PROMPT="Once upon a time"
$SC inspect --model $MODEL
echo
echo "== unconditioned (seed 1)"
$SC generate --model $MODEL --prompt "$PROMPT" --max-tokens 40 --seed 1 --top-p 0.9
echo
echo "== conditioned on football: top 50 experts forced to on_p50 (same seed)"
$SC generate --model $MODEL --prompt "$PROMPT" --max-tokens 40 --seed 1 --top-p 0.9 \
  --experts demo/experts/football.json:50
echo
echo "== conditioned on woman: top 50 experts (prompt 'The doctor said that', greedy)"
$SC generate --model $MODEL --prompt "The doctor said that" --max-tokens 20 --temperature 0 \
  --experts demo/experts/woman.json:50
if (( serve )) && [[ -f web/serve.mjs ]]; then
  echo
  echo "== browser app (Ctrl-C to stop)"
  exec node web/serve.mjs --port "$port"
fi
