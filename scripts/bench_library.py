#!/usr/bin/env python3
"""Concept-library throughput, one run (issue 12/13): the same concepts ranked
  a) one at a time by the CLI (`selfcond rank --concept X`, all cores),
  b) together by the CLI (`selfcond rank --concept A --concept B ...`: each distinct sentence
     once, in one process),
  c) by `python -m selfcond.library build` on a local Dask cluster (one worker process per
     core), from an empty library,
and how (c)'s time divides (model forward in the workers, the rest: scheduling, transfer,
storing; expertise). Writes JSON (stdout, or --out) with the CPU.

    scripts/bench_library.py SELFCOND_CLI --python VENV_PYTHON [--concepts A.json,B.json,...]
                             [--model M] [--out docs/library-bench.json]

VENV_PYTHON must have the selfcond package installed (scripts/test-python.sh with
SELFCOND_VENV=DIR keeps one).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cli")
    ap.add_argument("--python", required=True)
    shared = os.path.join(REPO, "..", "shared", "concepts")
    ap.add_argument("--concepts", default=",".join(
        os.path.join(shared, c + ".json") for c in ("football", "man", "woman")))
    ap.add_argument("--model", default=os.path.join(REPO, "demo", "models",
                                                     "selfcond-mini-30m.scm"))
    ap.add_argument("--out")
    args = ap.parse_args()
    concepts = args.concepts.split(",")
    cores = os.cpu_count() or 1
    tmp = tempfile.mkdtemp(prefix="selfcond-libbench-")
    res = {"cpu": cpu(), "cores": cores, "model": os.path.basename(args.model),
           "concepts": [os.path.basename(c) for c in concepts]}
    # a) one at a time
    sep = 0.0
    for i, c in enumerate(concepts):
        s, _ = timed([args.cli, "rank", "--model", args.model, "--concept", c, "--out",
                      os.path.join(tmp, f"sep{i}.json")])
        sep += s
    res["cli_separately_s"] = sep
    # b) together, one process
    outs = []
    for i in range(len(concepts)):
        outs += ["--out", os.path.join(tmp, f"tog{i}.json")]
    cmd = [args.cli, "rank", "--model", args.model]
    for c in concepts:
        cmd += ["--concept", c]
    res["cli_together_s"], _ = timed(cmd + outs)
    # c) the library on a local Dask cluster
    lib = os.path.join(tmp, "lib")
    cmd = [args.python, "-m", "selfcond.library", "build", "--model", args.model, "--out", lib,
           "--workers", str(cores)]
    for c in concepts:
        cmd += ["--concepts", c]
    wall, out = timed(cmd)
    stats = json.loads(out)
    res["library_s"] = wall
    res["library"] = stats
    res["library_over_cli_together"] = wall / res["cli_together_s"]
    res["cli_together_over_separately"] = res["cli_together_s"] / sep
    # The tables agree with the CLI's, concept by concept.
    same = 0
    with open(os.path.join(lib, "index.json")) as f:
        index = json.load(f)
    for i, c in enumerate(concepts):
        entry = [e for e in index["concepts"] if e["source"] == os.path.abspath(c)][0]
        with open(os.path.join(lib, entry["table"])) as a, open(os.path.join(tmp, f"sep{i}.json")) as b:
            same += json.load(a) == json.load(b)
    res["tables_identical_to_cli"] = f"{same}/{len(concepts)}"
    text = json.dumps(res, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
