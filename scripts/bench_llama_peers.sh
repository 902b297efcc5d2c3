#!/usr/bin/env bash
# selfcond against llama.cpp on random models shaped like the Llama-family models devices ship
# (SmolLM2-135M, Qwen2.5-0.5B, Llama-3.2-1B), in one run on one machine: the same weights as a
# selfcond int8 file (selfcond convert) and as a GGUF Q8_0 (scripts/make_llama_checkpoints.py's
# writer), a 128-token prompt, 128 greedy tokens, at 1 and 2 threads, median of 3.
#
#   bash scripts/bench_llama_peers.sh [--shapes all|NAME,...] [--out DIR] [--repeats N] [--prepare]
#                                       [--browser]
#
# --prepare: only write the models and build the harness (no measurement; safe on a busy machine).
# --browser: also in headless Chromium: selfcond's engine (node web/tests/bench.mjs, int8, WASM)
#   and wllama 3.8.1 (Q8_0; ../shared/tools/peers/web, npm-installed in $WLLAMA_WEB_DIR, default
#   /tmp/peers/web). wllama only takes a text prompt: ../shared/tools/peers/prompt128.txt, which
#   the test tokenizers cut into 212 tokens (context 512); selfcond's page builds a 128-token one.
#
# llama.cpp is the prebuilt library of npm @node-llama-cpp/linux-x64 (tests/node_modules, as the
# correctness tests use it), driven by ../shared/tools/peers/nlc_capi_bench.cpp (prefill = the
# prompt in one llama_decode; decode = 127 single-token llama_decode calls with a persistent
# threadpool), with the headers of the same llama.cpp commit. selfcond is `selfcond bench` on
# build/release. Writes DIR/table.md and DIR/summary.json (with the CPU); progress on stderr.
# Needs build/release (cmake --build build/release) and tests/node_modules (cd tests && npm ci).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHAPES=all OUT="$ROOT/build/bench-llama" REPEATS=3 PREPARE=0 BROWSER=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --shapes) SHAPES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --prepare) PREPARE=1; shift ;;
    --browser) BROWSER=1; shift ;;
    -h|--help) sed -n 2,21p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_llama_peers.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$REPEATS" =~ ^[1-9][0-9]?$ ]] || { echo "--repeats must be 1..99" >&2; exit 2; }
SHARED=${SELFCOND_SHARED_DIR:-$ROOT/../shared}
CLI="$ROOT/build/release/selfcond"
NM="$ROOT/tests/node_modules"
BINS="$NM/@node-llama-cpp/linux-x64/bins/linux-x64"
BUNDLE="$NM/node-llama-cpp/llama/gitRelease.bundle"
for f in "$CLI" "$BINS/libllama.v0.4.0.so" "$BUNDLE" "$SHARED/tools/peers/nlc_capi_bench.cpp"; do
  [[ -e "$f" ]] || { echo "missing $f (see --help)" >&2; exit 1; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The browser bench fetches the models from a server rooted at the repository.
if [[ $BROWSER == 1 && "$OUT/" != "$ROOT/"* ]]; then
  echo "bench_llama_peers.sh: --browser needs --out inside $ROOT (the page fetches the models from there)" >&2
  exit 2
fi
log() { echo "[bench_llama_peers] $*" >&2; }

# 1. The test tokenizers (their vocabularies are padded to each shape's size).
TOK="$OUT/tokenizers"
if [[ ! -f "$TOK/.stamp" ]]; then
  log "writing test tokenizers"
  /usr/bin/python3 "$ROOT/scripts/make_test_tokenizers.py" "$TOK" --shared "$SHARED" >&2
  touch "$TOK/.stamp"
fi

# 2. Checkpoints, GGUF Q8_0 and selfcond int8 files (cached by name).
names=$(/usr/bin/python3 -c "
import sys; sys.path.insert(0, '$ROOT/scripts')
import make_llama_checkpoints as m
want = '$SHAPES'.split(',')
print(' '.join(v['name'] for v in m.BENCH_SHAPES if want == ['all'] or v['name'] in want))")
[[ -n "$names" ]] || { echo "--shapes: no such shape: $SHAPES" >&2; exit 2; }
for n in $names; do
  if [[ ! -f "$OUT/$n.gguf" || ! -f "$OUT/$n.bench-prompt.json" ]]; then
    log "writing $n (random weights, safetensors + GGUF Q8_0)"
    /usr/bin/python3 "$ROOT/scripts/make_llama_checkpoints.py" "$OUT" --tokenizers "$TOK" \
      --bench-shapes "$n" >&2
  fi
  if [[ ! -f "$OUT/$n.scm" ]]; then
    log "converting $n to int8"
    "$CLI" convert "$OUT/$n" "$OUT/$n.scm" >&2
  fi
done

# 3. The llama.cpp harness, against the prebuilt libraries.
if [[ ! -x "$OUT/nlc_capi_bench" ]]; then
  log "building the llama.cpp harness"
  rm -rf "$OUT/llama-src" "$OUT/llama-inc"
  git clone -q --no-checkout "$BUNDLE" "$OUT/llama-src"
  mkdir -p "$OUT/llama-inc"
  git -C "$OUT/llama-src" archive HEAD include ggml/include | tar -x -C "$OUT/llama-inc"
  g++ -O2 -std=c++17 -I "$OUT/llama-inc/include" -I "$OUT/llama-inc/ggml/include" \
    "$SHARED/tools/peers/nlc_capi_bench.cpp" -o "$OUT/nlc_capi_bench" \
    "$BINS/libllama.v0.4.0.so" "$BINS/libggml.v0.4.0.so" "$BINS/libggml-base.so" \
    -Wl,-rpath,"$BINS"
fi
[[ $PREPARE == 1 ]] && { log "prepared in $OUT"; exit 0; }
LLAMA_COMMIT=$(git -C "$OUT/llama-src" rev-parse HEAD 2>/dev/null || echo unknown)

# 4. Measure: per shape, llama.cpp then selfcond, back to back.
: > "$OUT/llama_cpp.jsonl"
for n in $names; do
  for t in 1 2; do
    for rep in $(seq "$REPEATS"); do
      log "llama.cpp $n Q8_0, $t thread(s), run $rep/$REPEATS"
      NLC_BINS="$BINS" /usr/bin/time -v -o "$OUT/time.txt" "$OUT/nlc_capi_bench" "$OUT/$n.gguf" \
        "$t" "$OUT/$n.bench-prompt.json" 128 -1 1 > "$OUT/run.json" 2> "$OUT/run.err" ||
        { cat "$OUT/run.err" >&2; exit 1; }
      rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$OUT/time.txt")
      /usr/bin/python3 -c "
import json, sys
d = json.loads(open('$OUT/run.json').read().strip().splitlines()[-1])
d.update(model='$n', max_rss_kb=int('$rss'), rep=$rep)
print(json.dumps(d))" >> "$OUT/llama_cpp.jsonl"
    done
  done
  log "selfcond $n int8, 1 and 2 threads"
  "$CLI" bench --model "$OUT/$n.scm" --threads 2 --repeats "$REPEATS" --no-small --no-f32 \
    --no-kv --no-hostile --no-handwritten --rank-concept none --out "$OUT/$n.selfcond.json" >&2
done

# 5. In the browser: selfcond's WASM engine, then wllama, on the same models.
rm -f "$OUT/wllama.jsonl" "$OUT/selfcond-browser.json"
if [[ $BROWSER == 1 ]]; then
  WEB_DIR=${WLLAMA_WEB_DIR:-/tmp/peers/web}
  [[ -d "$WEB_DIR/node_modules/@wllama/wllama" ]] ||
    { echo "missing $WEB_DIR/node_modules/@wllama/wllama (../shared/tools/peers/SETUP.md)" >&2; exit 1; }
  scms=""
  for n in $names; do scms="$scms${scms:+,}$OUT/$n.scm"; done
  log "selfcond in Chromium: $names"
  (cd "$ROOT" && node web/tests/bench.mjs --no-demo --small "$scms" --repeats "$REPEATS" \
    --out "$OUT/selfcond-browser.json") >&2
  GGUF_DIR="$OUT" WEB_DIR="$WEB_DIR" node "$SHARED/tools/peers/web/serve.mjs" 8089 >/dev/null 2>&1 &
  srv=$!
  trap 'kill $srv 2>/dev/null' EXIT
  sleep 1
  for n in $names; do
    for t in 1 2; do
      log "wllama $n Q8_0 in Chromium, $t thread(s)"
      WEB_DIR="$WEB_DIR" node "$SHARED/tools/peers/web/bench_wllama.mjs" "$n.gguf" "$t" \
        --reps "$REPEATS" --port 8089 --ctx 512 | tail -n 1 |
        /usr/bin/python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['model']='$n'; d['threads']=$t; print(json.dumps(d))" \
        >> "$OUT/wllama.jsonl"
    done
  done
  kill $srv 2>/dev/null || true
fi

# 6. The table.
/usr/bin/python3 - "$OUT" "$names" "$LLAMA_COMMIT" <<'EOF'
import json, os, platform, statistics, sys
out, names, commit = sys.argv[1], sys.argv[2].split(), sys.argv[3]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
isa = "avx512_vnni" if "avx512_vnni" in flags else ("avx2" if "avx2" in flags else "other")
runs = [json.loads(l) for l in open(os.path.join(out, "llama_cpp.jsonl"))]
rows, summary = [], {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "llama_cpp_commit": commit,
                     "protocol": "128-token prompt, 128 greedy tokens, median of repeats",
                     "models": []}
for n in names:
    sc = json.load(open(os.path.join(out, f"{n}.selfcond.json")))
    m = next(x for x in sc["models"] if x.get("precision") == "int8" and x.get("runs"))
    entry = {"model": n, "selfcond_file_mib": m["file_mib"], "selfcond_peak_rss_mib": m["peak_rss_mib"],
             "gguf_q8_0_mib": os.path.getsize(os.path.join(out, f"{n}.gguf")) / 1048576, "threads": []}
    for t in (1, 2):
        lc = [r for r in runs if r["model"] == n and r["threads"] == t]
        s = next(r for r in m["runs"] if r["threads"] == t)
        e = {"threads": t,
             "llama_cpp_prefill_tok_s": statistics.median(r["prefill_tok_s"] for r in lc),
             "llama_cpp_decode_tok_s": statistics.median(r["decode_tok_s"] for r in lc),
             "llama_cpp_peak_rss_mib": max(r["max_rss_kb"] for r in lc) / 1024,
             "selfcond_prefill_tok_s": s["prefill_tok_s"], "selfcond_decode_tok_s": s["decode_tok_s"]}
        e["prefill_ratio"] = e["selfcond_prefill_tok_s"] / e["llama_cpp_prefill_tok_s"]
        e["decode_ratio"] = e["selfcond_decode_tok_s"] / e["llama_cpp_decode_tok_s"]
        entry["threads"].append(e)
        rows.append(f"| {n} | {t} | {e['selfcond_prefill_tok_s']:.0f} | {e['llama_cpp_prefill_tok_s']:.0f} | "
                    f"**{e['prefill_ratio']:.2f}x** | {e['selfcond_decode_tok_s']:.1f} | "
                    f"{e['llama_cpp_decode_tok_s']:.1f} | **{e['decode_ratio']:.2f}x** | "
                    f"{entry['selfcond_peak_rss_mib']:.0f} / {e['llama_cpp_peak_rss_mib']:.0f} |")
    summary["models"].append(entry)
wl_path, sb_path = os.path.join(out, "wllama.jsonl"), os.path.join(out, "selfcond-browser.json")
brows = []
if os.path.exists(wl_path) and os.path.exists(sb_path):
    wl = [json.loads(l) for l in open(wl_path)]
    sb = json.load(open(sb_path))
    # bench.mjs measures the models in the order given (--no-demo: only those).
    for n, entry, bm in zip(names, summary["models"], sb["models"]):
        entry["browser"] = []
        for t in (1, 2):
            w = next(r for r in wl if r["model"] == n and r["threads"] == t)
            r = next(r for r in bm["runs"] if r["threads"] == t)
            e = {"threads": t,
                 "wllama_prefill_tok_s": statistics.median(x["prefill_tok_s"] for x in w["runs"]),
                 "wllama_decode_tok_s": statistics.median(x["decode_tok_s"] for x in w["runs"]),
                 "wllama_prompt_tokens": w["runs"][0].get("prompt_n"),
                 "selfcond_prefill_tok_s": r["prefill_tok_s"], "selfcond_decode_tok_s": r["decode_tok_s"],
                 "selfcond_wasm_mib_peak": (r.get("memory") or {}).get("wasm_mib_peak")}
            e["prefill_ratio"] = e["selfcond_prefill_tok_s"] / e["wllama_prefill_tok_s"]
            e["decode_ratio"] = e["selfcond_decode_tok_s"] / e["wllama_decode_tok_s"]
            entry["browser"].append(e)
            mem = e["selfcond_wasm_mib_peak"]
            brows.append(f"| {n} | {t} | {e['selfcond_prefill_tok_s']:.0f} | {e['wllama_prefill_tok_s']:.0f} | "
                         f"**{e['prefill_ratio']:.2f}x** | {e['selfcond_decode_tok_s']:.1f} | "
                         f"{e['wllama_decode_tok_s']:.1f} | **{e['decode_ratio']:.2f}x** | "
                         f"{'%.0f' % mem if mem else '?'} |")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
table = [f"CPU: {cpu} ({isa}, {os.cpu_count()} cores); llama.cpp {commit[:10]} (npm node-llama-cpp prebuilt, Q8_0)", "",
         "| model (random weights) | threads | selfcond prefill tok/s | llama.cpp prefill tok/s | ratio | "
         "selfcond decode tok/s | llama.cpp decode tok/s | ratio | peak RSS MiB selfcond / llama.cpp |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"] + rows
if brows:
    table += ["", "In headless Chromium (selfcond: WASM int8, 1 thread not isolated / 2 threads cross-origin "
              "isolated; wllama 3.8.1: Q8_0):", "",
              "| model (random weights) | threads | selfcond prefill tok/s | wllama prefill tok/s | ratio | "
              "selfcond decode tok/s | wllama decode tok/s | ratio | selfcond peak wasm memory MiB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"] + brows
open(os.path.join(out, "table.md"), "w").write("\n".join(table) + "\n")
print("\n".join(table))
EOF
