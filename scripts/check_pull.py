#!/usr/bin/env python3
"""`selfcond pull` end to end against a local Hugging Face hub (scripts/hf_test_server.py, run
in this process): the demo checkpoint (SHARED/models/selfcond-mini-30m) served as the repo
selfcond/mini-30m, a private copy and a sharded copy. Checks:
  (h) --help explains the environment and the cache;
  (a) pull gives the same file, byte for byte, as `selfcond convert` of the directory, with the
      default --out (NAME.scm in the current directory) and huggingface_hub's cache layout, and
      downloads nothing but what the converter reads;
  (b) a second pull (by branch and by commit) downloads nothing; HF_HUB_OFFLINE=1 and an
      unreachable hub use the cached snapshot;
  (c) a connection dropped midway: with --retries 0 the pull fails, keeps blobs/<etag>.incomplete
      and no output, and the next pull resumes it with `Range: bytes=N-`; with the default
      retries one pull resumes by itself; a 200 answer to a Range request starts from zero;
  (d) corrupted bytes: sha256 mismatch named, exit 1, no output, no .incomplete or blob kept;
  (e) a private repo: fails naming HF_TOKEN without it, works with it, and the token never goes
      to the CDN (another origin);
  (f) sharded safetensors (index + 2 shards) convert to the same file, and so do sharded
      pytorch_model.bin files (written as torch.save writes them by make_torch_bin.py);
  (g) unknown repo / revision and bad repo ids: clear errors, no output.
Standard library only (make_torch_bin.py, run by /usr/bin/python3, needs numpy).

    check_pull.py SELFCOND_BINARY --shared ../shared
"""
import argparse
import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("hf_test_server", HERE / "hf_test_server.py")
hf_test_server = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hf_test_server)

REPO_FILES = ["config.json", "vocab.json", "merges.txt", "model.safetensors", "MODEL_CARD.md",
              "train_info.json"]
TOKEN = "hf_test_secret_token"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def write_shards(src, dst_dir, n=2):
    """Splits a safetensors file into n shards + model.safetensors.index.json."""
    with open(src, "rb") as f:
        hlen = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(hlen))
        base = 8 + hlen
        names = [k for k in header if k != "__metadata__"]
        names.sort(key=lambda k: header[k]["data_offsets"][0])
        per = (len(names) + n - 1) // n
        weight_map, total = {}, 0
        for i in range(n):
            shard = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            group = names[i * per:(i + 1) * per]
            h, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
            for k in group:
                a, b = header[k]["data_offsets"]
                f.seek(base + a)
                data = f.read(b - a)
                h[k] = {"dtype": header[k]["dtype"], "shape": header[k]["shape"],
                        "data_offsets": [off, off + len(data)]}
                blobs.append(data)
                off += len(data)
                weight_map[k] = shard
                total += len(data)
            hb = json.dumps(h).encode()
            hb += b" " * (-len(hb) % 8)
            with open(os.path.join(dst_dir, shard), "wb") as o:
                o.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
    with open(os.path.join(dst_dir, "model.safetensors.index.json"), "w") as o:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, o, indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("selfcond")
    ap.add_argument("--shared", required=True)
    a = ap.parse_args()
    exe = os.path.abspath(a.selfcond)
    model_dir = os.path.join(os.path.abspath(a.shared), "models", "selfcond-mini-30m")
    tmp = tempfile.mkdtemp(prefix="selfcond-pull-")
    t0 = time.time()
    try:
        root = os.path.join(tmp, "hub")
        for name in ("mini-30m", "private-30m"):
            d = os.path.join(root, "selfcond", name)
            os.makedirs(d)
            for f in REPO_FILES:
                if os.path.exists(os.path.join(model_dir, f)):
                    os.symlink(os.path.join(model_dir, f), os.path.join(d, f))
            # Weights the converter does not read: never downloaded.
            with open(os.path.join(d, "tf_model.h5"), "wb") as o:
                o.write(b"\0" * 20000)
        sharded = os.path.join(root, "selfcond", "mini-30m-sharded")
        os.makedirs(sharded)
        for f in ("config.json", "vocab.json", "merges.txt"):
            os.symlink(os.path.join(model_dir, f), os.path.join(sharded, f))
        write_shards(os.path.join(model_dir, "model.safetensors"), sharded)
        # A PyTorch-only repo (sharded pytorch_model.bin, as torch.save writes it).
        binrepo = os.path.join(root, "selfcond", "mini-30m-bin")
        subprocess.run(["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
                        str(HERE / "make_torch_bin.py"), model_dir, binrepo,
                        "--shards", "2"], check=True, capture_output=True)
        for f in ("config.json", "vocab.json", "merges.txt"):
            if not os.path.exists(os.path.join(binrepo, f)):
                os.symlink(os.path.join(model_dir, f), os.path.join(binrepo, f))

        state, port, cdn_port, stop = hf_test_server.serve(root, private={
            "selfcond/private-30m": TOKEN})
        endpoint = f"http://127.0.0.1:{port}"
        work = os.path.join(tmp, "work")
        os.makedirs(work)
        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE")}
        base_env["HF_ENDPOINT"] = endpoint

        def run(args, cache="cache", env=None, ok=True, what=""):
            e = dict(base_env, SELFCOND_CACHE=os.path.join(tmp, cache))
            e.update(env or {})
            p = subprocess.run([exe, *args], cwd=work, env=e, capture_output=True, text=True,
                               timeout=300)
            if ok and p.returncode != 0:
                print(p.stdout + p.stderr)
            check((p.returncode == 0) == ok,
                  f"{what or ' '.join(args)}: exit {p.returncode}" + (" (want != 0)" if not ok
                                                                       else ""))
            return p

        def requests(reset=True):
            with state.lock:
                r = list(state.requests)
                if reset:
                    state.requests.clear()
            return r

        def downloads(reqs):
            return [r for r in reqs if r["method"] in ("GET", "HEAD") and
                    ("/resolve/" in r["path"] or r["path"].startswith("/cdn/"))]

        def control(**kw):
            with state.lock:
                state.drop_after.update(kw.get("drop_after", {}))
                state.corrupt.update(kw.get("corrupt", []))
                state.corrupt.difference_update(kw.get("uncorrupt", []))

        def weight_ranges(reqs):  # the Range headers of the GETs of model.safetensors
            return [r["range"] for r in reqs if r["server"] == "cdn" and r["method"] == "GET"
                    and "file=model.safetensors" in r["path"]]

        def same(path, ref, what):
            ok = os.path.exists(path) and open(path, "rb").read() == open(ref, "rb").read()
            return check(ok, f"{what}: byte-identical to selfcond convert")

        # (h) --help
        p = run(["pull", "--help"], what="pull --help")
        check(all(w in p.stdout for w in ("HF_ENDPOINT", "HF_TOKEN", "SELFCOND_CACHE",
                                           "XDG_CACHE_HOME", "snapshots", "REPO_ID")),
              "--help names HF_ENDPOINT, HF_TOKEN, SELFCOND_CACHE, XDG_CACHE_HOME and the cache")

        # (a) the same file as convert; default --out; the cache layout
        ref = os.path.join(tmp, "ref.scm")
        run(["convert", model_dir, ref, "--name", "mini-30m"], what="convert (reference)")
        requests()
        p = run(["pull", "selfcond/mini-30m"], what="pull selfcond/mini-30m (default --out)")
        same(os.path.join(work, "mini-30m.scm"), ref, "pull")
        reqs = requests()
        paths = " ".join(r["path"] for r in reqs)
        check("tf_model.h5" not in paths and "MODEL_CARD" not in paths and
              "train_info" not in paths, "only the files the converter reads are requested")
        check(any(r["server"] == "cdn" for r in reqs), "the weights come from the CDN (302)")
        repo_cache = os.path.join(tmp, "cache", "models--selfcond--mini-30m")
        commit = open(os.path.join(repo_cache, "refs", "main")).read().strip()
        snap = os.path.join(repo_cache, "snapshots", commit)
        sha = hashlib.sha256(open(os.path.join(model_dir, "model.safetensors"), "rb").read())
        blob = os.path.join(repo_cache, "blobs", sha.hexdigest())
        check(len(commit) == 40 and os.path.islink(os.path.join(snap, "model.safetensors")) and
              os.path.samefile(os.path.join(snap, "model.safetensors"), blob),
              "cache: refs/main -> commit, snapshots/<commit>/model.safetensors -> blobs/<sha256>")
        check(not any(n.endswith(".incomplete") for n in os.listdir(os.path.dirname(blob))),
              "cache: no .incomplete left")

        # (b) a second pull downloads nothing; offline
        run(["pull", "selfcond/mini-30m", "--out", "again.scm"], what="second pull")
        check(downloads(requests()) == [], "second pull: no HEAD or GET of any file")
        same(os.path.join(work, "again.scm"), ref, "second pull")
        run(["pull", f"selfcond/mini-30m@{commit}", "--out", "bycommit.scm"],
            what="pull @commit")
        check(downloads(requests()) == [], "pull @commit: nothing downloaded")
        run(["pull", "selfcond/mini-30m", "--out", "offline.scm"], env={"HF_HUB_OFFLINE": "1"},
            what="HF_HUB_OFFLINE=1 pull")
        check(requests() == [], "HF_HUB_OFFLINE=1: no request at all")
        same(os.path.join(work, "offline.scm"), ref, "offline pull")
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        p = run(["pull", "selfcond/mini-30m", "--out", "unreach.scm"], env={"HF_ENDPOINT": dead},
                what="pull with the hub unreachable")
        check("cached snapshot" in p.stderr, "unreachable hub: says it uses the cached snapshot")

        size = os.path.getsize(os.path.join(model_dir, "model.safetensors"))
        # (c) resume after a dropped connection: by a second run ...
        control(drop_after={"model.safetensors": size // 3})
        p = run(["pull", "selfcond/mini-30m", "--out", "resume.scm", "--retries", "0"],
                cache="cache-resume", ok=False, what="pull, connection dropped, --retries 0")
        check("resume" in p.stderr, "dropped connection: the message says a rerun resumes")
        part = os.path.join(tmp, "cache-resume", "models--selfcond--mini-30m", "blobs",
                            sha.hexdigest() + ".incomplete")
        kept = os.path.getsize(part) if os.path.exists(part) else 0
        check(kept > 0, f"dropped connection: {kept} bytes kept in blobs/<sha256>.incomplete")
        check(not os.path.exists(os.path.join(work, "resume.scm")), "failed pull: no output file")
        requests()
        run(["pull", "selfcond/mini-30m", "--out", "resume.scm"], cache="cache-resume",
            what="pull again (resume)")
        ranges = weight_ranges(requests())
        check(ranges == [f"bytes={kept}-"], f"the rerun asked for the rest only: {ranges}")
        same(os.path.join(work, "resume.scm"), ref, "resumed pull")
        # ... and within one run (the default --retries)
        control(drop_after={"model.safetensors": size // 2})
        p = run(["pull", "selfcond/mini-30m", "--out", "retry.scm"], cache="cache-retry",
                what="pull, connection dropped, default retries")
        ranges = weight_ranges(requests())
        check(len(ranges) == 2 and ranges[0] == "" and ranges[1].startswith("bytes=") and
              ranges[1] != "bytes=0-", f"one run resumed by itself: {ranges}")
        same(os.path.join(work, "retry.scm"), ref, "pull with an internal resume")

        # ... and a server that ignores Range (200): the partial file is started again
        blobs = os.path.join(tmp, "cache-norange", "models--selfcond--mini-30m", "blobs")
        os.makedirs(blobs)
        with open(os.path.join(blobs, sha.hexdigest() + ".incomplete"), "wb") as o:
            o.write(b"\xff" * 12345)  # not the file's bytes: must not survive
        state.ignore_range = True
        run(["pull", "selfcond/mini-30m", "--out", "norange.scm"], cache="cache-norange",
            what="pull from a server that ignores Range")
        state.ignore_range = False
        ranges = weight_ranges(requests())
        check(ranges == ["bytes=12345-"], f"asked to resume, got the whole file: {ranges}")
        same(os.path.join(work, "norange.scm"), ref, "pull after a 200 answer to Range")

        # (d) corrupted bytes
        control(corrupt=["model.safetensors"])
        p = run(["pull", "selfcond/mini-30m", "--out", "corrupt.scm"], cache="cache-corrupt",
                ok=False, what="pull of corrupted bytes")
        check("sha256 mismatch" in p.stderr and "model.safetensors" in p.stderr and
              sha.hexdigest() in p.stderr, "corrupted: names the file and the expected sha256")
        blobs = os.path.join(tmp, "cache-corrupt", "models--selfcond--mini-30m", "blobs")
        check(not os.path.exists(os.path.join(work, "corrupt.scm")), "corrupted: no output file")
        check(not os.path.exists(os.path.join(blobs, sha.hexdigest())) and
              not os.path.exists(os.path.join(blobs, sha.hexdigest() + ".incomplete")),
              "corrupted: neither blob nor .incomplete kept")
        control(uncorrupt=["model.safetensors"])
        requests()
        run(["pull", "selfcond/mini-30m", "--out", "corrupt.scm"], cache="cache-corrupt",
            what="pull after the corruption is gone")
        ranges = weight_ranges(requests())
        check("" in ranges and not any(r.startswith("bytes=") for r in ranges),
              f"after a mismatch the download starts from zero: {ranges}")
        same(os.path.join(work, "corrupt.scm"), ref, "pull after corruption")

        # (e) a private repo and the token
        p = run(["pull", "selfcond/private-30m", "--out", "private.scm"], cache="cache-private",
                ok=False, what="private repo without HF_TOKEN")
        check("HF_TOKEN" in p.stderr and "401" in p.stderr, "no token: 401, says set HF_TOKEN")
        check(not os.path.exists(os.path.join(work, "private.scm")), "no token: no output file")
        p = run(["pull", "selfcond/private-30m", "--out", "private.scm"], cache="cache-private",
                env={"HF_TOKEN": "wrong"}, ok=False, what="private repo with a wrong token")
        check("HF_TOKEN" in p.stderr, "wrong token: the message names HF_TOKEN")
        requests()
        run(["pull", "selfcond/private-30m", "--out", "private.scm", "--name", "mini-30m"],
            cache="cache-private", env={"HF_TOKEN": TOKEN}, what="private repo with HF_TOKEN")
        reqs = requests()
        hub = [r for r in reqs if r["server"] == "hub"]
        cdn = [r for r in reqs if r["server"] == "cdn"]
        check(cdn and all(r["auth"] == "" for r in cdn),
              f"the token is not sent to the CDN ({len(cdn)} CDN requests)")
        check(hub and all(r["auth"] == f"Bearer {TOKEN}" for r in hub),
              "the token goes to the hub as Authorization: Bearer")
        same(os.path.join(work, "private.scm"), ref, "private pull")

        # (f) sharded safetensors
        run(["pull", "selfcond/mini-30m-sharded", "--out", "sharded.scm", "--name", "mini-30m"],
            what="pull of a sharded checkpoint")
        paths = " ".join(r["path"] for r in requests())
        check("model-00001-of-00002" in paths and "model-00002-of-00002" in paths and
              "index.json" in paths, "sharded: index and both shards downloaded")
        same(os.path.join(work, "sharded.scm"), ref, "sharded pull")
        run(["pull", "selfcond/mini-30m-sharded", "--out", "sharded2.scm", "--name", "mini-30m"],
            what="second pull of the sharded checkpoint")
        check(downloads(requests()) == [], "sharded, second pull: nothing downloaded")

        # (f2) pytorch_model.bin shards: downloaded and converted to the same model
        run(["pull", "selfcond/mini-30m-bin", "--out", "bin.scm", "--name", "mini-30m"],
            what="pull of a pytorch_model.bin checkpoint")
        paths = " ".join(r["path"] for r in requests())
        check("pytorch_model-00001-of-00002.bin" in paths and
              "pytorch_model.bin.index.json" in paths, ".bin: index and shards downloaded")
        same(os.path.join(work, "bin.scm"), ref, "pytorch_model.bin pull")

        # (g) errors
        p = run(["pull", "selfcond/nope", "--out", "nope.scm"], ok=False, what="unknown repo")
        check("not found" in p.stderr and "selfcond/nope" in p.stderr,
              "unknown repo: 'repo or revision not found' with the repo")
        p = run(["pull", "selfcond/mini-30m@nope", "--out", "nope.scm"], ok=False,
                what="unknown revision")
        check("not found" in p.stderr and "404" in p.stderr, "unknown revision: 404, not found")
        for bad in ("../etc", "a/b/c", "/abs", "x-", "a--b", "x/.", "na me", "a/b..c", ""):
            p = run(["pull", bad, "--out", "nope.scm"], ok=False, what=f"bad repo id {bad!r}")
            check("bad repo id" in p.stderr, f"bad repo id {bad!r}: says so")
        p = run(["pull", "selfcond/mini-30m@../../x", "--out", "nope.scm"], ok=False,
                what="bad revision")
        check("bad revision" in p.stderr, "bad revision: says so")
        check(not os.path.exists(os.path.join(work, "nope.scm")), "errors: no output file")
        with urllib.request.urlopen(endpoint + "/_stats") as r:
            json.load(r)  # the control endpoint answers
        stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'FAILED: ' + str(len(failures)) if failures else 'all pull checks passed'} "
          f"({time.time() - t0:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
