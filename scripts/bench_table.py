#!/usr/bin/env python3
"""Renders `selfcond bench` JSON (and optionally the browser benchmark's JSON) as a markdown table.

usage: scripts/bench_table.py bench.json [browser-bench.json]
"""
import json
import sys


def rows(doc, where):
    out = []
    for m in doc.get("models", []):
        runs = {r["threads"]: r for r in m.get("runs", [])}
        if not runs:
            continue
        t1 = runs.get(1, {})
        tn = runs[max(runs)] if max(runs) > 1 else {}
        fmt = lambda r, k: f"{r[k]:.0f}" if k in r else "-"
        out.append(
            f"| {m['model']} | {m['precision']} | {where} | {fmt(t1, 'prefill_tok_s')} / {fmt(tn, 'prefill_tok_s')}"
            f" | {fmt(t1, 'decode_tok_s')} / {fmt(tn, 'decode_tok_s')}"
            f" | {m.get('load_ms', 0):.0f} | {m.get('peak_rss_mib', 0):.0f} | {m.get('file_mib', 0):.1f} |"
        )
    return out


def main():
    native = json.load(open(sys.argv[1]))
    print("| model | precision | runtime | prefill tok/s 1 thread / all cores | decode tok/s 1 / all "
          "| load ms | peak RSS MiB | file MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows(native, "native"):
        print(r)
    if len(sys.argv) > 2:
        for r in rows(json.load(open(sys.argv[2])), "browser"):
            print(r)
    rank = native.get("ranking")
    if rank and rank.get("ranking"):
        parts = [f"{r['sentences_per_s']:.0f} sentences/s ({r['total_s']:.1f} s) at {r['threads']} thread(s)"
                 for r in rank["ranking"]]
        print()
        print(f"Ranking {rank['ranking'][0]['sentences']} sentences of "
              f"`{rank.get('ranking_concept', '')}` (int8, {rank['model']}): " + "; ".join(parts) +
              f"; peak RSS {rank.get('peak_rss_mib', 0):.0f} MiB.")
    ratios = native.get("ratios", {})
    if ratios:
        print()
        print("Ratios in the same run: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()) + ".")


if __name__ == "__main__":
    main()
