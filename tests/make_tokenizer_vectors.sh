#!/usr/bin/env bash
# The tokenizer.json test files and their reference ids (tests/hf_tokenizer_test.cc reads them):
# scripts/make_test_tokenizers.py writes one small tokenizer per family, then
# tests/tokenizer_reference.mjs encodes fixed and seeded random texts with npm
# @huggingface/tokenizers. Needs python3 and node with tests/node_modules (cd tests && npm ci).
#
#   tests/make_tokenizer_vectors.sh OUT_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: tests/make_tokenizer_vectors.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
stamp="$OUT/.stamp"
# Up to date when newer than the scripts that make them.
if [[ -f "$stamp" && "$stamp" -nt "$ROOT/scripts/make_test_tokenizers.py" &&
      "$stamp" -nt "$ROOT/tests/tokenizer_reference.mjs" ]]; then
  exit 0
fi
if [[ ! -d "$ROOT/tests/node_modules/@huggingface/tokenizers" ]]; then
  echo "tests/node_modules lacks @huggingface/tokenizers: run (cd tests && npm ci)" >&2
  exit 1
fi
/usr/bin/python3 "$ROOT/scripts/make_test_tokenizers.py" "$OUT" --shared "$ROOT/../shared"
(cd "$ROOT/tests" && node tokenizer_reference.mjs "$OUT")
touch "$stamp"
