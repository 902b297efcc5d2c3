#!/usr/bin/env python3
"""Ranks a concept with the int8 and the f32 path and reports how many of the top-K experts agree.

usage: scripts/int8_vs_f32_experts.py [--cli build/release/selfcond] [--model M]
                                       [--concept ../shared/concepts/football.json] [--k 50]
"""
import argparse
import json
import os
import subprocess
import tempfile


def top(path, k):
    units = json.load(open(path))["units"]
    return [(units["site"][i], units["unit"][i]) for i in range(k)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default="build/release/selfcond")
    ap.add_argument("--model", default="demo/models/selfcond-mini-30m.scm")
    ap.add_argument("--concept", default="../shared/concepts/football.json")
    ap.add_argument("--k", type=int, default=50)
    args = ap.parse_args()
    tops = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prec in ("int8", "f32"):
            out = os.path.join(tmp, prec + ".json")
            subprocess.run([args.cli, "rank", "--model", args.model, "--concept", args.concept,
                            "--out", out, "--precision", prec], check=True, stdout=subprocess.DEVNULL)
            tops[prec] = top(out, args.k)
    common = len(set(tops["int8"]) & set(tops["f32"]))
    print(f"{args.concept}: int8 top-{args.k} experts overlap the f32 top-{args.k} in {common} units "
          f"({100.0 * common / args.k:.0f}%)")


if __name__ == "__main__":
    main()
