#!/usr/bin/env bash
# The Llama family's reference outputs (tests/llama_test.cc compares selfcond with them):
#   1. random-init Hugging Face checkpoints of every family, and the same weights as GGUF F32
#      (scripts/make_llama_checkpoints.py; the test tokenizers come from
#      tests/make_tokenizer_vectors.sh);
#   2. llama.cpp's logits and greedy tokens for their prompts: tests/reference/llama_logits.cc,
#      built against the prebuilt llama.cpp in npm @node-llama-cpp/linux-x64 (tests/node_modules,
#      headers from node-llama-cpp's bundled llama.cpp of the same commit); nothing of llama.cpp
#      is compiled.
#
#   tests/llama_reference.sh OUT_DIR TOKENIZER_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: tests/llama_reference.sh OUT_DIR TOKENIZER_DIR}
TOK=${2:?usage: tests/llama_reference.sh OUT_DIR TOKENIZER_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
stamp="$OUT/.stamp"
if [[ -f "$stamp" && "$stamp" -nt "$ROOT/scripts/make_llama_checkpoints.py" &&
      "$stamp" -nt "$ROOT/tests/reference/llama_logits.cc" && "$stamp" -nt "$TOK/.stamp" ]]; then
  exit 0
fi
NM="$ROOT/tests/node_modules"
BINS="$NM/@node-llama-cpp/linux-x64/bins/linux-x64"
BUNDLE="$NM/node-llama-cpp/llama/gitRelease.bundle"
for f in "$BINS/libllama.v0.4.0.so" "$BUNDLE"; do
  [[ -e "$f" ]] || { echo "missing $f: run (cd tests && npm ci)" >&2; exit 1; }
done
/usr/bin/python3 "$ROOT/scripts/make_llama_checkpoints.py" "$OUT" --tokenizers "$TOK"
# llama.h / ggml.h of the commit the binaries were built from.
if [[ ! -f "$OUT/llama-inc/include/llama.h" ]]; then
  rm -rf "$OUT/llama-src" "$OUT/llama-inc"
  git clone -q --no-checkout "$BUNDLE" "$OUT/llama-src"
  mkdir -p "$OUT/llama-inc"
  git -C "$OUT/llama-src" archive HEAD include ggml/include | tar -x -C "$OUT/llama-inc"
  rm -rf "$OUT/llama-src"
fi
g++ -O2 -std=c++17 -I "$OUT/llama-inc/include" -I "$OUT/llama-inc/ggml/include" \
  "$ROOT/tests/reference/llama_logits.cc" -o "$OUT/llama_logits" \
  "$BINS/libllama.v0.4.0.so" "$BINS/libggml.v0.4.0.so" "$BINS/libggml-base.so" -Wl,-rpath,"$BINS"
for g in "$OUT"/*.gguf; do
  name=$(basename "$g" .gguf)
  NLC_BINS="$BINS" "$OUT/llama_logits" "$g" "$OUT/$name.prompts.json" "$OUT/$name.llama_cpp"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('  llama.cpp', sys.argv[2] + ':', len(d['cases']), 'prompts, min top-2 margin', round(min(c['min_margin'] for c in d['cases']), 3))" "$OUT/$name.llama_cpp.json" "$name"
done
touch "$stamp"
