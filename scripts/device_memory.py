#!/usr/bin/env python3
"""What fits on a device: peak resident memory of `selfcond generate` and `selfcond rank` on
aarch64 (the cross build under qemu-aarch64, as tests/run-arm64.sh runs it) and natively, per
model file, weights (int8 / int4) and KV cache (f32 / f16).

    /usr/bin/python3 scripts/device_memory.py --arm-cli build/aarch64/selfcond \\
        --native-cli build/release/selfcond NAME=MODEL.scm ... [--out docs/device-memory.json]

Each measurement is one process; its peak is the ru_maxrss that wait4 returns for it.
  generate: a prompt of `--prompt-tokens` tokens ("word" repeated) and `--new-tokens` greedy
            tokens (--no-stop), so the session holds prompt + new positions, 1 thread.
  rank:     the concept dataset `--concept` (ml-selfcond JSON), 1 thread, int8.
Under qemu-user the process is qemu: its peak is the guest's pages plus qemu's own (its code,
heap and translation cache), so the aarch64 figures in the table are upper bounds of what the
program needs on an ARM device. The JSON also has the peak of `selfcond --help` on both (qemu's
baseline against the native one) and every figure less qemu's baseline; the native x86-64 peak
is measured beside them. The "fits" column takes the largest aarch64 figure of the row (f16 KV
cache, and rank) against half the device's memory (what an app can count on).
Progress on stderr; the JSON has every figure and the markdown table (also printed).

    scripts/device_memory.py --table A.json B.json ...   the table of earlier runs, merged
Needs root (a private mount namespace gives qemu an ARM /proc/cpuinfo; see run-arm64.sh).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPUINFO = os.path.join(ROOT, "tests/arm64/cpuinfo-neoverse-n1-i8mm")
ARM_LIBS = "/usr/aarch64-linux-gnu/lib"


def arm_cmd(cli, args):
    inner = (f"mount --bind {CPUINFO} /proc/cpuinfo && exec qemu-aarch64 -cpu max "
             f"-L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH={ARM_LIBS} \"$@\"")
    return ["unshare", "-m", "sh", "-c", inner, "arm", cli] + args


def peak_mib(cmd, timeout):
    """Runs cmd; returns its peak RSS in MiB (wait4's ru_maxrss) and its wall time."""
    t0 = time.time()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            raise
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            sys.exit(f"device_memory: failed ({p.returncode}): {' '.join(cmd)}\n"
                     f"{err.read().decode(errors='replace')[-2000:]}")
    if time.time() - t0 > timeout:
        print(f"  (took {time.time() - t0:.0f} s)", file=sys.stderr)
    return ru.ru_maxrss / 1024, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=MODEL.scm (the name says weights and shape)")
    ap.add_argument("--arm-cli", default=os.path.join(ROOT, "build/aarch64/selfcond"))
    ap.add_argument("--native-cli", default=os.path.join(ROOT, "build/release/selfcond"))
    ap.add_argument("--prompt-tokens", type=int, default=448)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--concept", default=os.path.join(ROOT, "../shared/concepts/football_small.json"))
    ap.add_argument("--kv", default="f32,f16")
    ap.add_argument("--no-rank", action="store_true")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--table", action="store_true",
                    help="the arguments are JSON files of earlier runs: print their merged table")
    args = ap.parse_args()
    if args.table:
        runs = [json.load(open(f)) for f in args.models]
        merged = dict(runs[0], rows=[r for run in runs for r in run["rows"]])
        given = {"prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                 "kv": args.kv, "no_rank": args.no_rank}
        print(table(merged, argparse.Namespace(**merged.get("args", given))))
        return

    runs = [("aarch64 (qemu)", lambda a: arm_cmd(args.arm_cli, a)),
            ("x86-64", lambda a: [args.native_cli] + a)]
    results = {"method": __doc__.split("Each measurement")[1].split("Progress on")[0].strip(),
               "host_cpu": platform.processor() or platform.machine(), "rows": [],
               "args": {"prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                        "kv": args.kv, "no_rank": args.no_rank}}
    base = {}
    for label, cmd in runs:
        base[label], _ = peak_mib(cmd(["--help"]), args.timeout)
        print(f"[device_memory] {label} baseline (--help): {base[label]:.1f} MiB", file=sys.stderr)
    results["baseline_mib"] = base
    prompt = " ".join(["word"] * args.prompt_tokens)  # one GPT-2 token each; about one elsewhere
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            name, path = spec.split("=", 1)
            row = {"model": name, "file_mib": round(os.path.getsize(path) / 1048576, 1)}
            for kv in args.kv.split(","):
                for label, cmd in runs:
                    gen = ["generate", "--model", path, "--prompt", prompt, "--max-tokens",
                           str(args.new_tokens), "--temperature", "0", "--no-stop", "--threads",
                           "1", "--kv-cache", kv]
                    print(f"[device_memory] {name} generate kv {kv} on {label}", file=sys.stderr)
                    mib, secs = peak_mib(cmd(gen), args.timeout)
                    row[f"generate_{kv}_{label}"] = round(mib - (base[label] if "qemu" in label
                                                                  else 0), 1)
                    row[f"generate_{kv}_{label}_raw"] = round(mib, 1)
                    row[f"generate_{kv}_{label}_seconds"] = round(secs, 1)
            if not args.no_rank:
                for label, cmd in runs:
                    rank = ["rank", "--model", path, "--concept", args.concept, "--threads", "1",
                            "--out", os.path.join(tmp, f"{name}-{len(label)}.json")]
                    print(f"[device_memory] {name} rank on {label}", file=sys.stderr)
                    mib, secs = peak_mib(cmd(rank), args.timeout)
                    row[f"rank_{label}"] = round(mib - (base[label] if "qemu" in label else 0), 1)
                    row[f"rank_{label}_raw"] = round(mib, 1)
                    row[f"rank_{label}_seconds"] = round(secs, 1)
            results["rows"].append(row)
            print(json.dumps(row), file=sys.stderr)
    results["table"] = table(results, args)
    print(results["table"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")


def fits(mib):
    return " / ".join("yes" if mib <= gb * 1024 / 2 else "no" for gb in (1, 2, 4))


def table(results, args):
    positions = args.prompt_tokens + args.new_tokens
    lines = [f"| model | file MiB | generate ({positions} positions), KV f32 / f16: peak MiB "
             f"aarch64 (x86-64) | rank: peak MiB aarch64 (x86-64) | fits in 1 / 2 / 4 GB |",
             "| --- | --- | --- | --- | --- |"]
    a, x = "aarch64 (qemu)", "x86-64"
    for r in results["rows"]:
        gen = " / ".join(f"{r.get(f'generate_{kv}_{a}_raw', '-')} ({r.get(f'generate_{kv}_{x}', '-')})"
                         for kv in args.kv.split(","))
        rank = (f"{r.get(f'rank_{a}_raw', '-')} ({r.get(f'rank_{x}', '-')})"
                if not args.no_rank else "-")
        worst = max(v for k, v in r.items() if k.endswith(a + "_raw")
                    and ("f16" in k or k.startswith("rank")))
        lines.append(f"| {r['model']} | {r['file_mib']} | {gen} | {rank} | {fits(worst)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
