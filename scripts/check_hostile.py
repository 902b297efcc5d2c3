#!/usr/bin/env python3
"""Runs the CLI on hostile inputs (issue 9) and checks each gives a clear error in bounded memory,
never a crash: every command runs in a child of its own under an address-space limit
(`ulimit -v`, RLIMIT_AS), its peak RSS is its own ru_maxrss (os.wait4), and it must exit 1 with
an error naming the problem (a signal, e.g. SIGABRT from an uncaught std::bad_alloc, fails).

    scripts/check_hostile.py SELFCOND_CLI [--shared ../shared] [--keep DIR]

Memory bound: peak RSS <= the same command's RSS on a tiny valid input + 4 x the hostile input's
size (+ 8 MiB of slack for allocator noise). Prints one JSON line per case; exits 1 on failure.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20


def run(cmd, limit_bytes):
    """(exit code or -signal, peak RSS in bytes, stderr)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         preexec_fn=limit)
    err = p.stderr.read().decode("utf-8", "replace")
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = 0  # reaped here
    code = os.waitstatus_to_exitcode(status)
    return code, ru.ru_maxrss * 1024, err



def write_safetensors(path, tensors, header_pad=0):
    """tensors: [(name, shape, float list or bytes)] as F32."""
    header, blobs, off = {}, [], 0
    for name, shape, data in tensors:
        raw = data if isinstance(data, bytes) else struct.pack(f"<{len(data)}f", *data)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    if header_pad:  # ~header_pad bytes of metadata entries "a":"" (7 bytes each, repeated)
        n = header_pad // 7
        h = h[:-1] + b',"__metadata__":{' + b",".join([b'"a":""'] * n) + b"}}"
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_checkpoint(d, shared_model, n_layer, n_embd, n_ctx, header_pad=0):
    """A GPT-2 checkpoint of zeros/ones (the shared model's tokenizer: vocab 50257)."""
    os.makedirs(d, exist_ok=True)
    vocab = 50257
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(shared_model, f), d)
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": vocab,
           "n_positions": n_ctx, "n_ctx": n_ctx, "n_embd": n_embd, "n_layer": n_layer,
           "n_head": 2, "n_inner": None, "layer_norm_epsilon": 1e-5,
           "activation_function": "gelu_new"}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    zeros = lambda n: bytes(4 * n)  # noqa: E731
    ones = lambda n: struct.pack(f"<{n}f", *([1.0] * n))  # noqa: E731
    e, t = n_embd, []
    t.append(("wte.weight", [vocab, e], zeros(vocab * e)))
    t.append(("wpe.weight", [n_ctx, e], zeros(n_ctx * e)))
    for i in range(n_layer):
        p = f"h.{i}."
        t += [(p + "ln_1.weight", [e], ones(e)), (p + "ln_1.bias", [e], zeros(e)),
              (p + "attn.c_attn.weight", [e, 3 * e], zeros(3 * e * e)),
              (p + "attn.c_attn.bias", [3 * e], zeros(3 * e)),
              (p + "attn.c_proj.weight", [e, e], zeros(e * e)),
              (p + "attn.c_proj.bias", [e], zeros(e)),
              (p + "ln_2.weight", [e], ones(e)), (p + "ln_2.bias", [e], zeros(e)),
              (p + "mlp.c_fc.weight", [e, 4 * e], zeros(4 * e * e)),
              (p + "mlp.c_fc.bias", [4 * e], zeros(4 * e)),
              (p + "mlp.c_proj.weight", [4 * e, e], zeros(4 * e * e)),
              (p + "mlp.c_proj.bias", [e], zeros(e))]
    t += [("ln_f.weight", [e], ones(e)), ("ln_f.bias", [e], zeros(e))]
    write_safetensors(os.path.join(d, "model.safetensors"), t, header_pad)


def rehash_model(data):
    """A model file's bytes with its content hash recomputed (header offset 24, 32 bytes)."""
    import hashlib
    b = bytearray(data)
    b[24:56] = bytes(32)
    b[24:56] = hashlib.sha256(bytes(b)).digest()
    return bytes(b)


def round_two(cli, work, shared, demo_model, demo_table, limit, case, failures):
    """Issue 22's findings, one check each (numbered as in the issue)."""
    small = os.path.join(shared, "concepts", "football_small.json")
    rank_small = [cli, "rank", "--model", demo_model, "--no-verify", "--threads", "1",
                  "--concept", small]
    gen = [cli, "generate", "--model", demo_model, "--prompt", "The", "--max-tokens", "2",
           "--no-verify"]

    def check(name, ok, detail=""):
        print(json.dumps({"case": name, "ok": bool(ok), "detail": detail[:300]}))
        if not ok:
            failures.append(name)
            print(f"FAIL {name}: {detail}", file=sys.stderr)

    def quick(cmd, timeout=60, **kw):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
            return r.returncode, r.stderr
        except subprocess.TimeoutExpired:
            return "timeout", ""

    # 1. An output that exists and is not a regular file is refused, and left as it was.
    devdir = os.path.join(work, "dev")
    os.makedirs(devdir, exist_ok=True)
    null = os.path.join(devdir, "null")
    if not os.path.exists(null):
        try:
            os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
        except PermissionError:
            null = "/dev/null"  # not root: the real one (it will not be touched)
    code, err = quick(rank_small + ["--out", null])
    import stat as stat_mod
    check("out-char-device", code == 1 and "not a regular file" in err and
          stat_mod.S_ISCHR(os.stat(null).st_mode), f"exit {code}: {err.strip()[-200:]}")
    code, err = quick(rank_small + ["--out", "/dev/full"])
    check("out-dev-full", code == 1 and "not a regular file" in err, f"exit {code}: {err[-200:]}")

    # 2. A symlink planted at the old predictable temporary name (OUT.tmp.PID) is not followed.
    victim = os.path.join(work, "victim.txt")
    with open(victim, "w") as f:
        f.write("precious")
    out = os.path.join(work, "planted.json")
    code, err = quick(["bash", "-c", f'ln -sf "{victim}" "{out}.tmp.$$"; exec "$@"', "x"] +
                      rank_small + ["--out", out])
    with open(victim) as f:
        intact = f.read() == "precious"
    check("out-planted-symlink", code == 0 and intact and os.path.isfile(out) and
          not os.path.islink(out), f"exit {code}, victim intact {intact}: {err[-200:]}")
    for n in os.listdir(work):
        if n.startswith("planted.json.tmp."):
            os.remove(os.path.join(work, n))

    # 3. A FIFO at that name does not hang the command.
    out = os.path.join(work, "fifo-out.json")
    code, err = quick(["bash", "-c", f'mkfifo "{out}.tmp.$$"; exec "$@"', "x"] + rank_small +
                      ["--out", out], timeout=120)
    check("out-planted-fifo", code == 0 and os.path.isfile(out), f"exit {code}: {err[-200:]}")
    for n in os.listdir(work):
        if n.startswith("fifo-out.json.tmp."):
            os.remove(os.path.join(work, n))

    # 4. Over `ulimit -f` the write fails with an error (EFBIG), cleans up, keeps the old file.
    out = os.path.join(work, "fsize.json")
    shutil.copy(demo_table, out)
    with open(out, "rb") as f:
        old = f.read()

    def fsize():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    try:
        r = subprocess.run(rank_small + ["--out", out], capture_output=True, text=True,
                           timeout=120, preexec_fn=fsize)
        code, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        code, err = "timeout", ""
    with open(out, "rb") as f:
        same = f.read() == old
    left = [n for n in os.listdir(work) if n.startswith("fsize.json.tmp.")]
    check("out-ulimit-f", code == 1 and same and not left and "too large" in err.lower(),
          f"exit {code}, old kept {same}, temporaries {left}: {err[-200:]}")

    # 5. A CSV and an expertise_info.json of another ranking: the pair is never mixed (the
    # sidecar names its CSV by hash); the CSV alone is an unhashed table, refused as such.
    d1, d2 = os.path.join(work, "pair1"), os.path.join(work, "pair2")
    for d in (d1, d2):
        os.makedirs(d, exist_ok=True)
    man = os.path.join(shared, "concepts", "man.json")
    quick(rank_small + ["--out", os.path.join(d1, "expertise.csv")], timeout=300)
    quick([cli, "rank", "--model", demo_model, "--no-verify", "--concept", man, "--max-sentences",
           "20", "--out", os.path.join(d2, "expertise.csv")], timeout=300)
    code, err = quick(gen + ["--experts", os.path.join(d1, "expertise.csv") + ":5"])
    check("csv-pair-own", code == 0, f"exit {code}: {err[-200:]}")
    shutil.copy(os.path.join(d2, "expertise_info.json"), os.path.join(d1, "expertise_info.json"))
    code, err = quick(gen + ["--experts", os.path.join(d1, "expertise.csv") + ":5"])
    check("csv-pair-mixed", code == 1 and "another expertise.csv" in err and
          "no model_hash" in err, f"exit {code}: {err[-300:]}")

    # 6. A FIFO as the model fails at once.
    fifo = os.path.join(work, "model.fifo")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    code, err = quick([cli, "generate", "--model", fifo, "--prompt", "x"], timeout=30)
    check("model-fifo", code == 1 and "not a regular file" in err, f"exit {code}: {err[-200:]}")

    # 7. Tables that are not tables, and CSV bombs: refused in memory bounded by the input.
    base_gen = gen + ["--experts", demo_table + ":5"]
    bombs = {
        "csv-empty-rows-9mb": b"ap,layer,unit\n" + b",,\n" * (3 * MIB),
        "csv-row-of-commas-50mb": b"ap,layer,unit\n" + b"," * (50 * MIB),
        "json-array-20mb": b"[" + b"1," * (10 * MIB) + b"1]",
        "bom-nul-208mb": b"\xef\xbb\xbf" + b"\0" * (208 * MIB),
    }
    for name, data in bombs.items():
        path = os.path.join(work, name)
        with open(path, "wb") as f:
            f.write(data)
        expect = "expected" if name in ("json-array-20mb", "bom-nul-208mb") else "csv"
        case(name, gen + ["--experts", path + ":5"], len(data), base_gen, expect)
        os.remove(path)

    # 8. A header asking for 2^20 layers (hash recomputed): refused before allocating them.
    with open(demo_model, "rb") as f:
        m = bytearray(f.read())
    struct.pack_into("<I", m, 56, 1 << 20)
    hostile = os.path.join(work, "million-layers.scm")
    with open(hostile, "wb") as f:
        f.write(rehash_model(m))
    case("model-million-layers", [cli, "generate", "--model", hostile, "--prompt", "x"],
         0, [cli, "generate", "--model", demo_model, "--prompt", "x", "--max-tokens", "1"],
         "layers")

    # 9. Non-finite activations: a huge steering strength, a table with on_p50 = 3e38.
    code, err = quick(gen + ["--steer", f"{small}:3:3e38"], timeout=120)
    check("steer-3e38", code == 1 and "finite" in err, f"exit {code}: {err[-200:]}")
    with open(demo_table) as f:
        t = json.load(f)
    t["units"]["on_p50"][0] = 3e38
    huge = os.path.join(work, "huge-forcing.json")
    with open(huge, "w") as f:
        json.dump(t, f)
    code, err = quick(gen + ["--experts", huge + ":5"])
    check("forcing-3e38", code == 1 and "forcing" in err, f"exit {code}: {err[-200:]}")

    # 10. Silent no-ops: a logit bias of no words, identical classes, a count that lies, a
    # stored-responses file with reserved bytes set.
    tiny = os.path.join(work, "no-words.json")
    with open(tiny, "w") as f:
        json.dump({"concept": "q", "sentences": {"positive": ["a b.", "c d.", "e f."],
                                                 "negative": ["g h.", "i j.", "k l."]}}, f)
    code, err = quick(gen + ["--bias", tiny + ":4"])
    check("bias-no-words", code == 1 and "no concept words" in err, f"exit {code}: {err[-200:]}")
    same = os.path.join(work, "same-classes.json")
    sent = ["The match was won.", "A goal in the end.", "Fans cheered."]
    with open(same, "w") as f:
        json.dump({"concept": "s", "sentences": {"positive": sent, "negative": sent[::-1]}}, f)
    code, err = quick([cli, "rank", "--model", demo_model, "--no-verify", "--concept", same,
                       "--out", os.path.join(work, "same.json")])
    check("rank-identical-classes", code == 1 and "the same" in err, f"exit {code}: {err[-200:]}")
    t = json.load(open(demo_table))
    t["units"]["count"] = t["units"]["count"] + 5
    lying = os.path.join(work, "lying-count.json")
    with open(lying, "w") as f:
        json.dump(t, f)
    code, err = quick(gen + ["--experts", lying + ":5"])
    check("table-count-mismatch", code == 1 and "units.count" in err, f"exit {code}: {err[-200:]}")
    scr = os.path.join(work, "r.scr")
    quick([cli, "responses", "--model", demo_model, "--no-verify", "--concept", small,
           "--max-sentences", "3", "--out", scr], timeout=300)
    with open(scr, "rb") as f:
        b = bytearray(f.read())
    b[120] = 7
    bad_scr = os.path.join(work, "reserved.scr")
    with open(bad_scr, "wb") as f:
        f.write(b)
    rank_scr = [cli, "rank", "--model", demo_model, "--no-verify", "--concept", small, "--out",
                os.path.join(work, "scr.json")]
    code, err = quick(rank_scr + ["--responses", bad_scr])
    check("scr-reserved-bytes", code == 1 and "reserved" in err, f"exit {code}: {err[-200:]}")

    # 11. Messages that name the argument and the expected form.
    code, err = quick(gen + ["--experts", demo_table + ":abc"])
    check("msg-experts-k", code == 1 and "not a number of units" in err, err[-200:])
    code, err = quick(gen + ["--top-k", "99999999999"])
    check("msg-top-k-range", code == 1 and "must be in" in err, err[-200:])
    arr = os.path.join(work, "array-dataset.json")
    with open(arr, "w") as f:
        f.write('["a", "b"]')
    code, err = quick([cli, "rank", "--model", demo_model, "--no-verify", "--concept", arr,
                       "--out", os.path.join(work, "arr.json")])
    check("msg-json-array-dataset", code == 1 and "JSON array is not a concept dataset" in err,
          err[-200:])
    code, err = quick(rank_small + ["--out", os.path.join(work, "mem.json"), "--max-memory", "1"])
    check("msg-rank-memory", code == 1 and "memory budget" in err and "--max-memory" in err,
          err[-200:])
    cut = os.path.join(work, "cut.scr")
    with open(cut, "wb") as f:
        f.write(bytes(b[:100]))
    code, err = quick(rank_scr + ["--responses", cut])
    check("msg-scr-truncated-header", code == 1 and "truncated" in err, err[-200:])
    # bench's GPT-2 shapes: an unknown one is named before anything is written or measured.
    code, err = quick([cli, "bench", "--shapes", "small,huge", "--work-dir",
                       os.path.join(work, "bench-shapes")])
    check("msg-bench-shape", code == 1 and "unknown GPT-2 shape 'huge'" in err and
          not os.path.exists(os.path.join(work, "bench-shapes")), err[-200:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cli")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                     "shared"))
    ap.add_argument("--keep", help="write the hostile files here (kept)")
    args = ap.parse_args()
    cli = os.path.abspath(args.cli)
    shared_model = os.path.join(args.shared, "models", "selfcond-mini-30m")
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    demo_model = os.path.join(repo, "demo", "models", "selfcond-mini-30m.scm")
    demo_table = os.path.join(repo, "demo", "experts", "football.json")
    work = args.keep or tempfile.mkdtemp(prefix="selfcond-hostile-")
    os.makedirs(work, exist_ok=True)
    limit = 3 << 30  # ulimit -v 3 GiB: far below what the unbounded paths used to take
    failures = []

    def case(name, cmd, input_bytes, baseline_cmd, expect, want_code=1):
        base_code, base_rss, base_err = run(baseline_cmd, limit)
        code, rss, err = run(cmd, limit)
        bound = base_rss + 4 * input_bytes + 8 * MIB
        msg = err.strip().splitlines()[-1] if err.strip() else ""
        ok = code == want_code and (want_code == 0 or expect.lower() in err.lower()) and \
            rss <= bound
        print(json.dumps({"case": name, "exit": code, "peak_rss_mib": round(rss / MIB, 1),
                          "bound_mib": round(bound / MIB, 1), "input_mib":
                          round(input_bytes / MIB, 1), "baseline_exit": base_code,
                          "error": msg[:200], "ok": ok}))
        if not ok:
            failures.append(name)
            print(f"FAIL {name}: exit {code} (want {want_code}), expected '{expect}' in: "
                  f"{err[-400:]}",
                  file=sys.stderr)

    gen = [cli, "generate", "--model", demo_model, "--prompt", "The", "--max-tokens", "1",
           "--no-verify"]
    base_gen = gen + ["--experts", demo_table + ":5"]

    # 1. An expert table of 20 MB of tiny numbers: 16 bytes each in a tree (8x the text).
    dense = os.path.join(work, "dense-table.json")
    with open(dense, "w") as f:
        f.write('{"concept":"x","ap":[' + ",".join(["0"] * (10 * MIB)) + "]}")
    case("expert-table-dense-20mb", gen + ["--experts", dense + ":5"], os.path.getsize(dense),
         base_gen, "memory")

    # 2. A 20 MB table of realistic numbers, of another model: parsed in bounded memory, refused.
    other = os.path.join(work, "other-model-table.json")
    with open(demo_table) as f:
        t = json.load(f)
    t["model_hash"] = "f" * 64
    n = len(t["units"]["site"]) if isinstance(t.get("units"), dict) else 0
    reps = max(1, (20 * MIB) // max(1, os.path.getsize(demo_table)))
    t["padding"] = [0.123456789] * (reps * max(1, n))
    with open(other, "w") as f:
        json.dump(t, f)
    case("expert-table-other-model-20mb", gen + ["--experts", other + ":5"],
         os.path.getsize(other), base_gen, "another model")

    # 3. A concept dataset of 20 MB of one-letter sentences.
    concept = os.path.join(work, "dense-concept.json")
    with open(concept, "w") as f:
        f.write('{"concept":"x","sentences":{"positive":[' + ",".join(['"a"'] * (5 * MIB)) +
                '],"negative":["b"]}}')
    rank = [cli, "rank", "--model", demo_model, "--no-verify", "--out",
            os.path.join(work, "out.json")]
    base_concept = os.path.join(work, "tiny-concept.json")
    with open(base_concept, "w") as f:
        f.write('{"concept":"x","sentences":{"positive":[],"negative":[]}}')
    case("concept-dense-20mb", rank + ["--concept", concept], os.path.getsize(concept),
         rank + ["--concept", base_concept], "memory")

    # 4. /dev/zero and a FIFO as inputs: refused, not read forever.
    case("concept-dev-zero", rank + ["--concept", "/dev/zero"], 0,
         rank + ["--concept", base_concept], "not a regular file")
    ckpt_zero = os.path.join(work, "ckpt-dev-zero")
    os.makedirs(ckpt_zero, exist_ok=True)
    if not os.path.lexists(os.path.join(ckpt_zero, "config.json")):
        os.symlink("/dev/zero", os.path.join(ckpt_zero, "config.json"))
    conv = [cli, "convert"]
    case("convert-config-dev-zero", conv + [ckpt_zero, os.path.join(work, "z.scm")], 0,
         conv + [os.path.join(work, "no-such-dir"), os.path.join(work, "n.scm")],
         "not a regular file")

    # 5. A safetensors header of ~98 MB (a real model's tensors plus 14M tiny metadata entries).
    big_header = os.path.join(work, "ckpt-big-header")
    write_checkpoint(big_header, shared_model, n_layer=1, n_embd=8, n_ctx=16,
                     header_pad=98 * MIB)
    st_size = os.path.getsize(os.path.join(big_header, "model.safetensors"))
    case("safetensors-header-98mb", conv + [big_header, os.path.join(work, "h.scm")], st_size,
         conv + [os.path.join(work, "no-such-dir"), os.path.join(work, "n.scm")], "memory")

    # 6. A well-formed model claiming a 2^18-position context over 200 layers: a session of its
    # whole context would need ~3.4 GB of KV cache, over the 3 GiB address-space limit. A
    # session that asks for no context gets at most 8192 positions (Session::DefaultContext), so
    # ppl runs in bounded memory; asking for the whole context is refused by the budget with an
    # error (tests/hostile_model_test.cc).
    ctx_ckpt = os.path.join(work, "ckpt-huge-context")
    ctx_model = os.path.join(work, "huge-context.scm")
    if not os.path.exists(ctx_model):
        write_checkpoint(ctx_ckpt, shared_model, n_layer=200, n_embd=8, n_ctx=1 << 18)
        subprocess.run(conv + [ctx_ckpt, ctx_model], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(ctx_ckpt)
    text = os.path.join(work, "text.txt")
    with open(text, "w") as f:
        f.write("The football match began. " * 20)
    ppl = [cli, "ppl", "--text-file", text, "--no-verify"]
    case("huge-context-session", ppl + ["--model", ctx_model], 0, ppl + ["--model", demo_model],
         "", want_code=0)

    # 7. rank --out naming its own input: refused before any work.
    case("rank-out-is-input", rank[:-2] + ["--concept", base_concept, "--out", base_concept], 0,
         rank + ["--concept", base_concept], "input")

    # 8. `rank --out` killed at random moments (SIGKILL, and SIGTERM) over an existing table: the
    # table is always the old one or a whole new one; SIGTERM leaves no temporary file behind.
    small = os.path.join(args.shared, "concepts", "football_small.json")
    table = os.path.join(work, "kept-table.json")
    shutil.copy(demo_table, table)
    with open(demo_table, "rb") as f:
        old = f.read()
    rank_small = [cli, "rank", "--model", demo_model, "--no-verify", "--threads", "1",
                  "--concept", small, "--out", table]
    t0 = time.monotonic()
    subprocess.run(rank_small, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    full = time.monotonic() - t0
    with open(table, "rb") as f:
        new = f.read()
    shutil.copy(demo_table, table)
    outcomes = {"old": 0, "new": 0}
    bad = []
    for i, sig in enumerate([signal.SIGKILL] * 8 + [signal.SIGTERM] * 4):
        p = subprocess.Popen(rank_small, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * (0.5 + 0.8 * (i % 4) / 3))  # up to past the end, where the write is
        p.send_signal(sig)
        p.wait()
        with open(table, "rb") as f:
            got = f.read()
        if got == old:
            outcomes["old"] += 1
        elif got == new:
            outcomes["new"] += 1
            shutil.copy(demo_table, table)
        else:
            bad.append(f"round {i}: {len(got)} bytes, neither the old nor the new table")
        temps = [n for n in os.listdir(work) if n.startswith("kept-table.json.tmp.")]
        if sig == signal.SIGTERM and temps:
            bad.append(f"round {i}: SIGTERM left {temps}")
        for n in temps:
            os.remove(os.path.join(work, n))
    print(json.dumps({"case": "kill-rank-out", "rounds": 12, "outcomes": outcomes,
                      "ok": not bad}))
    if bad:
        failures.append("kill-rank-out")
        print("FAIL kill-rank-out: " + "; ".join(bad), file=sys.stderr)

    round_two(cli, work, args.shared, demo_model, demo_table, limit, case, failures)

    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"hostile inputs: {len(failures)} failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    print("hostile inputs: all refused with clear errors in bounded memory", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
