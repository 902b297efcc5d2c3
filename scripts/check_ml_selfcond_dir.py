#!/usr/bin/env python3
"""Checks that a directory written by `selfcond rank --compat ml-selfcond --out DIR/expertise.csv`
is one that apple/ml-selfcond's ExpertiseResult.load accepts, by doing what that method does
(selfcond/expertise.py, reimplemented without pandas): read DIR/expertise.csv, take the unique
"layer" values in file order, group the rows by layer (sort=False) for "ap" and, when "on_p50" is a
column, "on_p50"/"on_p90"/"off_mean"; then read DIR/expertise_info.json for "concept" and "group".
It also recomputes export_extra_info_json from the CSV (max_ap, layer_names, total_neurons,
neurons_at_ap with numpy.linspace(0.5, 1.0, 501) when numpy is available) and compares.

    check_ml_selfcond_dir.py SELFCOND_BINARY --shared ../shared [--model demo/models/...scm]
Exit status 0 when the directory passes.
"""
import argparse
import csv
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:  # Debian's interpreter has python3-numpy; others may not
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    np = None


def float32(text):
    return float(np.float32(text)) if np is not None else float(text)


def expertise_result_load(d: pathlib.Path):
    """ExpertiseResult.load, minus pandas."""
    with (d / "expertise.csv").open(newline="") as fp:
        rows = list(csv.DictReader(fp))
    response_names = list(dict.fromkeys(r["layer"] for r in rows))  # df["layer"].unique()
    forcing = "on_p50" in rows[0]
    ap, on_p50, on_p90, off_mean, num_per_layer = {}, {}, {}, {}, []
    for name in response_names:  # groupby("layer", sort=False)
        layer = [r for r in rows if r["layer"] == name]
        ap[name] = [float(r["ap"]) for r in layer]
        num_per_layer.append(len(layer))
        if forcing:
            on_p50[name] = [float(r["on_p50"]) for r in layer]
            on_p90[name] = [float(r["on_p90"]) for r in layer]
            off_mean[name] = [float(r["off_mean"]) for r in layer]
    with (d / "expertise_info.json").open() as fp:
        info = json.load(fp)
    return rows, response_names, num_per_layer, forcing, ap, info


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("selfcond")
    ap.add_argument("--shared", required=True)
    repo = pathlib.Path(__file__).resolve().parents[1]
    ap.add_argument("--model", default=str(repo / "demo/models/selfcond-mini-30m.scm"))
    args = ap.parse_args()
    concept = pathlib.Path(args.shared) / "concepts/football_small.json"
    failures = []

    def check(cond, msg):
        if not cond:
            failures.append(msg)

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "sense/football/expertise"
        out.mkdir(parents=True)
        run = subprocess.run([args.selfcond, "rank", "--model", args.model, "--concept",
                              str(concept), "--compat", "ml-selfcond", "--threads", "2",
                              "--out", str(out / "expertise.csv")],
                             capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stdout, run.stderr)
            return 1
        # ExpertiseResult.exists_in_disk
        check((out / "expertise.csv").exists() and (out / "expertise_info.json").exists(),
              "exists_in_disk: expertise.csv and expertise_info.json")
        rows, names, per_layer, forcing, aps, info = expertise_result_load(out)
        check(forcing, "forcing columns present")
        check(info["concept"] == "football-1_04_00__" and info["group"] == "sense",
              f"concept/group {info['concept']}/{info['group']}")
        check(all(r["concept"] == info["concept"] and r["group"] == info["group"] for r in rows),
              "CSV concept/group columns agree with expertise_info.json")
        # The demo model: 6 layers of c_attn (1152), attn.c_proj (384), mlp.c_fc (1536),
        # mlp.c_proj (384), in sorted layer-name order, units ascending, uuid = row index.
        check(names == sorted(names), "layers in sorted order")
        check(len(names) == 24 and sum(per_layer) == 20736, f"{len(names)} layers, {sum(per_layer)} units")
        check([int(r["uuid"]) for r in rows] == list(range(len(rows))), "uuid = row index")
        # export_extra_info_json recomputed from the CSV.
        all_ap = [float32(r["ap"]) for r in rows]
        check(info["max_ap"] == max(all_ap), f"max_ap {info['max_ap']} vs {max(all_ap)}")
        check(info["layer_names"] == names, "layer_names")
        check(info["total_neurons"] == len(rows), "total_neurons")
        if np is not None:
            thresholds = np.linspace(0.5, 1.0, 501)
            want = {f"{a:0.5f}": int(np.sum(np.array(all_ap) > a)) for a in thresholds}
        else:
            thresholds = [0.5 + i * 0.001 for i in range(500)] + [1.0]
            want = {f"{a:0.5f}": sum(x > a for x in all_ap) for a in thresholds}
        check(list(info["neurons_at_ap"].keys()) == list(want.keys()), "neurons_at_ap thresholds")
        check(info["neurons_at_ap"] == want, "neurons_at_ap counts")
        check(not any(math.isnan(x) for x in all_ap), "no NaN AP")
        print(run.stdout.strip().splitlines()[0])
        # The CLI refuses an unknown mode, and compat with stored (unpadded) responses.
        for extra, want in [(["--compat", "ml-selfkond"], "unknown --compat mode 'ml-selfkond'"),
                            (["--compat", "ml-selfcond", "--responses", str(out / "x.scr")],
                             "cannot rank from --responses")]:
            bad = subprocess.run([args.selfcond, "rank", "--model", args.model, "--concept",
                                  str(concept), "--out", str(out / "t.json"), *extra],
                                 capture_output=True, text=True)
            check(bad.returncode != 0 and want in bad.stderr, f"{extra}: {bad.stderr.strip()}")
        check(not (out / "t.json").exists(), "no table written on error")

        # ml-selfcond's data layout (assets/gender_bias: concept_list.csv + sense/<concept>.json)
        # through --concepts-from: the same tables as --concept on each file.
        data = pathlib.Path(tmp) / "gender_bias"
        (data / "sense").mkdir(parents=True)
        shared = pathlib.Path(args.shared) / "concepts"
        for name, src in [("man-1_18_00__", "man.json"), ("woman-1_18_00__", "woman.json")]:
            (data / "sense" / f"{name}.json").write_bytes((shared / src).read_bytes())
        (data / "concept_list.csv").write_text("group,concept\nsense,man-1_18_00__\n"
                                               "sense,woman-1_18_00__\n")
        lib, one = pathlib.Path(tmp) / "lib", pathlib.Path(tmp) / "one"
        lib.mkdir(), one.mkdir()
        base = [args.selfcond, "rank", "--model", args.model, "--max-sentences", "40",
                "--threads", "2"]
        run = subprocess.run(base + ["--concepts-from", str(data), "--out-dir", str(lib)],
                             capture_output=True, text=True)
        check(run.returncode == 0, f"--concepts-from: {run.stderr.strip()}")
        for name in ("man-1_18_00__", "woman-1_18_00__"):
            single = subprocess.run(base + ["--concept", str(data / "sense" / f"{name}.json"),
                                            "--out", str(one / f"{name}.json")],
                                    capture_output=True, text=True)
            check(single.returncode == 0, f"--concept {name}: {single.stderr.strip()}")
            a, b = lib / f"{name}.json", one / f"{name}.json"
            check(a.exists() and b.exists() and a.read_bytes() == b.read_bytes(),
                  f"--concepts-from table of {name} equals --concept's")
        # Broken lists name the problem.
        for text, want in [("grp,concept\nsense,man-1_18_00__\n", "must name the columns"),
                           ("group,concept\nsense,../man\n", "must be plain names"),
                           ("group,concept\nsense,nobody\n", "which is not a file"),
                           ("group,concept\n", "lists no concept"),
                           ("group,concept\nsense,man-1_18_00__\nsense,man-1_18_00__\n",
                            "listed twice")]:
            (data / "concept_list.csv").write_text(text)
            bad = subprocess.run(base + ["--concepts-from", str(data), "--out-dir", str(lib)],
                                 capture_output=True, text=True)
            check(bad.returncode == 1 and want in bad.stderr,
                  f"concept_list {text!r}: want '{want}', got {bad.stderr.strip()}")
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print(f"ml-selfcond directory ok (numpy {'yes' if np is not None else 'no'})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
