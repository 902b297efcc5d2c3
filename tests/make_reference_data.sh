#!/usr/bin/env bash
# Reference data the test suite compares with, made before any test runs (a ctest fixture; the
# ARM64 stage reuses the x86 build's): the tokenizer.json test files with their ids from npm
# @huggingface/tokenizers (tests/make_tokenizer_vectors.sh), and the Llama-family checkpoints
# with llama.cpp's logits (tests/llama_reference.sh). Needs tests/node_modules (npm ci).
#
#   tests/make_reference_data.sh BUILD_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:?usage: tests/make_reference_data.sh BUILD_DIR}
bash "$HERE/make_tokenizer_vectors.sh" "$BUILD/test-tokenizers"
bash "$HERE/llama_reference.sh" "$BUILD/test-llama" "$BUILD/test-tokenizers"
