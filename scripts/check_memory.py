#!/usr/bin/env python3
"""Checks the memory bar of the XNNPACK engine: peak RSS of `selfcond generate` on a model is at
most 1.15 x the model file plus the KV cache the generation actually uses.

    scripts/check_memory.py SELFCOND_CLI MODEL.scm [--new-tokens 128]

The prompt is "word" repeated 127 times (127 GPT-2 tokens), then --new-tokens greedy tokens
(--no-stop), so the KV cache holds 127 + new positions of (n_layer x n_embd) keys and values in
float32. n_layer / n_embd come from `selfcond inspect`. Peak RSS is the child's ru_maxrss.
Prints one JSON line; exits 1 when the bar is not met.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cli")
    ap.add_argument("model")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    prompt_tokens = 127
    cmd = [args.cli, "generate", "--model", args.model, "--prompt", " ".join(["word"] * 127),
           "--max-tokens", str(args.new_tokens), "--temperature", "0", "--no-stop"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    # The first child this script waits for: RUSAGE_CHILDREN's ru_maxrss is then its peak.
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    info = subprocess.run([args.cli, "inspect", "--model", args.model], capture_output=True,
                          text=True, check=True).stdout
    m = re.search(r"n_layer (\d+), n_embd (\d+)", info)
    if not m:
        sys.exit(f"check_memory: cannot read n_layer / n_embd from `selfcond inspect`:\n{info}")
    n_layer, n_embd = int(m.group(1)), int(m.group(2))
    file_mib = os.path.getsize(args.model) / 1048576
    positions = prompt_tokens + args.new_tokens
    kv_mib = 2 * n_layer * positions * n_embd * 4 / 1048576
    bound_mib = 1.15 * file_mib + kv_mib
    result = {"model": os.path.basename(args.model), "file_mib": round(file_mib, 1),
              "kv_cache_used_mib": round(kv_mib, 1), "bound_mib": round(bound_mib, 1),
              "peak_rss_mib": round(peak_kib / 1024, 1), "ok": peak_kib / 1024 <= bound_mib}
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
