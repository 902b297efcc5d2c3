#!/usr/bin/env python3
"""The paper-analysis flags of the CLI (issue 10) end to end on the demo model: generate's
unit-choice controls, --steer, --bias and --experts TABLE:auto, experiment's control flags and
compare, and their refusals of bad input (a clear error naming the problem, exit 1, no crash).

    check_paper_flags.py SELFCOND_BINARY [--repo DIR] [--shared DIR]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

try:
    import pandas  # noqa: F401  (the gen_sentences check reads the CSVs as ml-selfcond does)
except ImportError:  # Debian's interpreter has python3-pandas; CMake may have found another
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])


def check_gen_sentences(folder, prompts, ks, seeds):
    """What ml-selfcond's analysis scripts read from generate_seq.py's CSVs (apple/ml-selfcond
    scripts/compute_frequency.py analyze + build_results_table, compute_perplexity.py's
    groupby, compute_selfbleu.py's loading loop), on selfcond's files, with pandas."""
    try:
        import pandas as pd
    except ImportError:
        if os.environ.get("CI"):
            return ["pandas missing (scripts/install-deps.sh installs python3-pandas)"]
        print("check_paper_flags: no pandas, gen_sentences columns not checked")
        return []
    bad = []
    for prompt in prompts:
        f = os.path.join(folder, "gen_sentences_football-1_04_00___" +
                         prompt.replace(" ", "_") + ".csv")
        if not os.path.exists(f):
            return [f"missing {f}: {sorted(os.listdir(folder))}"]
        df = pd.read_csv(f)
        want = ["Unnamed: 0", "forcing_value", "num_units", "top_n", "seed", "sentence",
                "mean_metric", "forced_layer", "perplexity", "context", "concept"]
        if list(df.columns) != want:
            bad.append(f"{f}: columns {list(df.columns)}")
            continue
        # compute_frequency.py: context_from_df, concept_from_df, remove_context, groupby.
        context = df["context"].values[0]
        concept = str(df["concept"].values[0]).split("-")[0]
        if context != prompt or concept != "football":
            bad.append(f"{f}: context {context!r}, concept {concept!r}")
        if not all(str(x).startswith(context) for x in df["sentence"]):
            bad.append(f"{f}: a sentence does not start with its context")
        rates = {k: len(d) for k, d in df.groupby("num_units", sort=True)}
        if rates != {k: seeds for k in ks}:
            bad.append(f"{f}: rows per num_units {rates}")
        ppl = df.groupby("num_units").mean(numeric_only=True)["perplexity"]
        if not all(v > 1 for v in ppl.values):
            bad.append(f"{f}: perplexity by num_units {ppl.to_dict()}")
        # compute_selfbleu.py: sentences with the context removed, concept names.
        for _, d in df.groupby(by="num_units"):
            sents = [s.replace(c, "") for s, c in zip(d["sentence"], d["context"])]
            if any(s == "" for s in sents) or not all(isinstance(c, str) for c in d["concept"]):
                bad.append(f"{f}: empty continuation or concept")
        if list(df["mean_metric"][df["num_units"] == 0]) != [0.0] * seeds or \
                not all(df["mean_metric"][df["num_units"] > 0] > 0.5):
            bad.append(f"{f}: mean_metric {list(df['mean_metric'])}")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("selfcond")
    ap.add_argument("--repo", default=str(pathlib.Path(__file__).resolve().parents[1]))
    ap.add_argument("--shared", default=None)
    args = ap.parse_args()
    repo = pathlib.Path(args.repo)
    shared = pathlib.Path(args.shared or repo.parent / "shared")
    model = str(repo / "demo/models/selfcond-mini-30m.scm")
    table = str(repo / "demo/experts/football.json")
    concept = str(repo / "demo/concepts/football.json")
    failures = []

    def run(*argv, ok=True, want=None):
        cmd = [args.selfcond, *argv]
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600)
        out = p.stdout + p.stderr
        good = (p.returncode == 0) if ok else (p.returncode == 1)
        if want is not None and want not in out:
            good = False
        if not good:
            failures.append(f"{' '.join(cmd[1:])}\n  exit {p.returncode}, want "
                            f"{'0' if ok else '1'} and {want!r}\n  {out[-600:]}")
        return p

    gen = ["generate", "--model", model, "--prompt", "Once upon a time", "--max-tokens", "12",
           "--temperature", "0", "--no-verify"]
    plain = run(*gen).stdout
    top = run(*gen, "--experts", f"{table}:50").stdout
    rnd = run(*gen, "--experts", f"{table}:50", "--random-units", "3").stdout
    rnd2 = run(*gen, "--experts", f"{table}:50", "--random-units", "3").stdout
    if not (top != plain and rnd != top and rnd == rnd2):
        failures.append(f"unit choice: plain {plain!r}, top {top!r}, random {rnd!r} / {rnd2!r}")
    run(*gen, "--experts", f"{table}:20", "--rank-offset", "100", "--layers", "1,2",
        "--metric", "gap")
    run(*gen, "--steer", f"{concept}:2:4", want="steering: block 2")
    b = run(*gen, "--bias", f"{concept}:12", want="logit bias: +12")
    # "logit bias: +12 on N tokens of: w1 w2 ...": the greedy text uses one of those words.
    line = next((l for l in b.stderr.splitlines() if l.startswith("logit bias:")), "")
    words = line.split(" of: ", 1)[-1].split()
    if not words or not any(w in b.stdout.lower() for w in words):
        failures.append(f"--bias :12 greedy text {b.stdout!r} has none of {words}")
    run(*gen, "--experts", f"{table}:auto", "--concept-data", concept, "--auto-ppl-budget", "100",
        want="auto k: k=")
    # Refusals.
    run(*gen, "--experts", f"{table}:20", "--layers", "9", ok=False, want="layer 9 does not exist")
    run(*gen, "--experts", f"{table}:20", "--layers", "x", ok=False, want="--layers")
    run(*gen, "--experts", f"{table}:20", "--metric", "median", ok=False,
        want="unknown unit metric")
    run(*gen, "--experts", f"{table}:20", "--random-units", "1", "--rank-offset", "5", ok=False,
        want="--random-units")
    run(*gen, "--steer", f"{concept}:9:4", ok=False, want="--steer: layer 9")
    run(*gen, "--steer", f"{concept}:4", ok=False, want="C.json:LAYER:ALPHA")
    run(*gen, "--steer", "/nonexistent.json:1:4", ok=False, want="/nonexistent.json")
    run(*gen, "--bias", f"{concept}:lots", ok=False, want="C.json:BETA")
    run(*gen, "--experts", f"{table}:auto", "--auto-target", "2", ok=False, want="auto-target")
    # experiment: a control and compare, tiny grids; their JSON names the flags.
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        exp = ["experiment", "football", "--model", model, "--experts", table, "--seeds", "1",
               "--new-tokens", "6", "--prompt", "In the city", "--no-verify", "--threads", "2"]
        run(*exp, "--ks", "0,5", "--random-units", "4", "--layers", "0,1", "--out", out)
        if os.path.exists(out):
            o = json.load(open(out))["options"]
            if not (o.get("random_units") == 4 and o.get("layers") == [0, 1]):
                failures.append(f"football JSON options: {o}")
        run(*exp, "--ks", "5", "--per-layer", "--out", out)
        if os.path.exists(out):
            pts = json.load(open(out))["points"]
            if [p["layer"] for p in pts] != list(range(len(pts))):
                failures.append(f"per-layer points: {[p['layer'] for p in pts]}")
        run("experiment", "compare", "--model", model, "--experts", table, "--concept", concept,
            "--seeds", "1", "--new-tokens", "6", "--prompt", "In the city", "--ks", "10",
            "--alphas", "4", "--betas", "6", "--no-verify", "--threads", "2", "--out", out)
        if os.path.exists(out):
            r = json.load(open(out))
            if [p["method"] for p in r["points"]] != ["none", "experts", "steer", "bias"]:
                failures.append(f"compare points: {r['points']}")
        run("experiment", "compare", "--model", model, "--experts", table, "--concept", concept,
            "--methods", "prompting", "--no-verify", ok=False, want="unknown method")
        run("experiment", "compare", "--model", model, "--experts", table, "--concept", concept,
            "--alphas", "1,x", "--no-verify", ok=False, want="--alphas")
        run("experiment", "compare", "--model", model, "--experts", table, "--random-units", "1",
            "--no-verify", ok=False, want="unit-choice flags")
        run(*exp, "--scorer", "/nonexistent.scm", ok=False, want="--scorer /nonexistent.scm")
        # ml-selfcond's gen_sentences CSVs, read the way its analysis scripts read them.
        gen = os.path.join(tmp, "gen")
        os.mkdir(gen)
        run("experiment", "football", "--model", model, "--experts", table, "--seeds", "2",
            "--new-tokens", "8", "--prompt", "The nurse said that", "--prompt", "In the city",
            "--ks", "0,10", "--no-verify", "--threads", "2", "--gen-sentences", gen)
        failures += check_gen_sentences(gen, ["The nurse said that", "In the city"], [0, 10], 2)
        # ml-selfcond's --per-layer: one run per linear layer, in its (string-sorted) order.
        run(*exp, "--ks", "3", "--per-linear-layer", "--out", out)
        if os.path.exists(out):
            sites = [p.get("site") for p in json.load(open(out))["points"]]
            if len(sites) != 24 or sites != sorted(sites) or \
                    sites[0] != "transformer.h.0.attn.c_attn:0":
                failures.append(f"per-linear-layer sites: {sites}")
        run(*exp, "--ks", "3", "--per-layer", "--per-linear-layer", ok=False, want="not both")
        # gender as ml-selfcond analyses it: its parity definition, generated continuations,
        # perplexity and Self-BLEU at parity, gen_sentences for both concepts.
        gg = os.path.join(tmp, "gender")
        os.mkdir(gg)
        if os.path.exists(out):
            os.remove(out)
        run("experiment", "gender", "--model", model, "--max-occupations", "1", "--ks", "0,30,300",
            "--occupations", str(shared / "concepts/occupations.json"),
            "--experts", str(repo / "demo/experts/woman.json"),
            "--experts", str(repo / "demo/experts/man.json"),
            "--generate", "1", "--gen-sentences", gg, "--no-verify", "--threads", "2", "--out", out)
        if os.path.exists(out):
            r = json.load(open(out))
            ml, gen = r.get("parity_ml_selfcond", {}), r.get("generated", {})
            woman = ml.get("woman", {})
            d0 = [row[0] for row in r["per_prompt"]["woman"]["delta_p"]]
            if woman.get("contexts") != sum(1 for d in d0 if d < 0) or \
                    woman.get("reached", 0) > woman.get("contexts", 0):
                failures.append(f"parity_ml_selfcond woman: {woman}")
            if sorted(gen) != ["man", "woman"] or gen["woman"]["samples"] != [34, 34, 34] or \
                    not gen["woman"]["at_parity_ml_selfcond"]["ppl"]["median"]:
                failures.append(f"generated: {json.dumps(gen)[:400]}")
            files = sorted(os.listdir(gg))
            if len(files) != 68 or not files[0].startswith("gen_sentences_man-1_18_00___The_"):
                failures.append(f"gender gen_sentences: {len(files)} {files[:2]}")
        run("experiment", "gender", "--model", model, "--gen-sentences", gg, "--no-verify",
            "--occupations", str(shared / "concepts/occupations.json"), ok=False,
            want="needs --generate")
        run(*exp, "--ks", "5", "--generate", "2", ok=False, want="gender option")
        run(*exp, "--ks", "5", "--gen-sentences", "/nonexistent/dir", ok=False,
            want="/nonexistent/dir")
    if failures:
        print("\n".join(failures))
        print(f"check_paper_flags: {len(failures)} failure(s)")
        return 1
    print("check_paper_flags: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
