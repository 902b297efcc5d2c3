"""A concept library on Dask: one expert table per concept, for many concepts at once.

    python -m selfcond.library build --model M --concepts DIR_OR_GLOB [--concepts ...] --out LIB

--concepts takes concept files, a glob, a folder of them, or an ml-selfcond data folder
(concept_list.csv with columns group,concept and <group>/<concept>.json).
                                     [--scheduler ADDRESS] [--workers N]
    python -m selfcond.library info LIB

The work splits in two independent steps (docs/concept-library.md):
  1. responses: every distinct sentence of all concepts runs through the model once, in shards
     of --batch sentences, one task per shard on the Dask workers; each worker process loads
     the model once (by path: the model file must be readable at the same path on every worker)
     and sends the shard's pooled responses back to this process, which stores them in
     LIB/responses/ (a shard is committed when its .json manifest is written, after its .npy).
  2. expertise: per concept, its units' statistics in ranges of --unit-block units, one task
     per range; the tasks read the stored rows they need from LIB/responses/ (memory-mapped:
     LIB must be on a file system the workers see, as it is for a local cluster), and this
     process puts the ranges together into the table (selfcond_experts_from_stats).
Tables are identical to `selfcond rank --concept FILE` (python/tests/test_library.py).

Resumable: a rerun reuses every committed shard and every table whose concept is unchanged, so
an interrupted build continues where it stopped and adding concepts computes only their new
sentences. Without --scheduler a local cluster of one single-threaded worker process per core
is started.
"""

import argparse
import glob
import hashlib
import json
import os
import re
import sys
import time

import numpy as np

from . import _core as C

FORMAT = "selfcond-library/1"
_MODEL_CACHE = {}


# ---- worker tasks (run in the Dask worker processes) -------------------------------------------

def _worker_model(model_path, verify):
    """The worker process's Model (loaded once per process)."""
    m = _MODEL_CACHE.get(model_path)
    if m is None:
        m = _MODEL_CACHE[model_path] = C.Model(model_path, verify_hash=verify)
    return m


def _compute_shard(model_path, verify, precision, sentences):
    """Pooled responses of a shard's sentences, and which were cut to the context."""
    model = _worker_model(model_path, verify)
    t0 = time.perf_counter()
    rows = model.pooled_responses(sentences, threads=1, precision=precision)
    n_ctx = model.info.n_ctx
    truncated = [len(model.tokenize(s)) > n_ctx for s in sentences]
    return rows, truncated, time.perf_counter() - t0


def _expertise_block(responses_dir, rows, labels, begin, end):
    """Statistics of units [begin, end) for a concept: rows = [(shard id, row), ...]."""
    t0 = time.perf_counter()
    shards = {}
    block = np.empty((len(rows), end - begin), dtype=np.float32)
    for i, (shard, r) in enumerate(rows):
        a = shards.get(shard)
        if a is None:
            a = shards[shard] = np.load(os.path.join(responses_dir, shard + ".npy"), mmap_mode="r")
        block[i] = a[r, begin:end]
    stats = C.expertise(block, labels, threads=1)
    return begin, stats, time.perf_counter() - t0


# ---- the library on disk ----------------------------------------------------------------------

def _atomic_write(path, data: bytes):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _safe_name(concept):
    return re.sub(r"[^A-Za-z0-9._-]", "_", concept).strip(".") or "concept"


class _Store:
    """Committed response shards: sentence -> (shard id, row), and their truncation flags."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.where = {}
        self.truncated = {}
        for manifest in sorted(glob.glob(os.path.join(directory, "*.json"))):
            shard = os.path.basename(manifest)[:-5]
            if not os.path.exists(os.path.join(directory, shard + ".npy")):
                continue
            with open(manifest, encoding="utf-8") as f:
                m = json.load(f)
            for r, (s, t) in enumerate(zip(m["sentences"], m["truncated"])):
                self.where.setdefault(s, (shard, r))
                self.truncated.setdefault(s, bool(t))

    def add(self, sentences, rows, truncated):
        h = hashlib.sha256("\0".join(sentences).encode("utf-8")).hexdigest()[:20]
        shard = f"shard-{h}"
        buf = _npy_bytes(rows)
        _atomic_write(os.path.join(self.dir, shard + ".npy"), buf)
        # The manifest commits the shard: written last.
        _atomic_write(os.path.join(self.dir, shard + ".json"),
                      json.dumps({"sentences": sentences, "truncated": truncated},
                                 ensure_ascii=False).encode("utf-8"))
        for r, (s, t) in enumerate(zip(sentences, truncated)):
            self.where.setdefault(s, (shard, r))
            self.truncated.setdefault(s, bool(t))


def _npy_bytes(a):
    import io
    f = io.BytesIO()
    np.save(f, np.ascontiguousarray(a, dtype=np.float32))
    return f.getvalue()


def _concept_list(folder):
    """ml-selfcond's data layout, as `selfcond rank --concepts-from DIR` reads it:
    DIR/concept_list.csv (columns group, concept) and DIR/<group>/<concept>.json."""
    import csv
    label = os.path.join(folder, "concept_list.csv")
    with open(label, newline="", encoding="utf-8-sig") as fp:
        rows = list(csv.DictReader(fp))
    if not rows or "group" not in rows[0] or "concept" not in rows[0]:
        raise SystemExit(f"{label}: want a header naming 'group' and 'concept' and one row per "
                         "concept (ml-selfcond's layout)")
    files, seen = [], set()
    for i, row in enumerate(rows, 1):
        group, concept = (row.get("group") or "").strip(), (row.get("concept") or "").strip()
        if any(not x or x in (".", "..") or "/" in x or "\\" in x for x in (group, concept)):
            raise SystemExit(f"{label}: row {i}: group '{group}' and concept '{concept}' must be "
                             "plain names")
        if concept in seen:
            raise SystemExit(f"{label}: row {i}: concept '{concept}' is listed twice")
        seen.add(concept)
        path = os.path.join(folder, group, concept + ".json")
        if not os.path.isfile(path):
            raise SystemExit(f"{label} lists {path}, which is not a file")
        files.append(path)
    return files


def _concept_files(specs):
    files = []
    for spec in specs:
        if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "concept_list.csv")):
            found = _concept_list(spec)
        elif os.path.isdir(spec):
            found = sorted(glob.glob(os.path.join(spec, "*.json")) +
                           glob.glob(os.path.join(spec, "*.txt")))
        elif any(c in spec for c in "*?["):
            found = sorted(glob.glob(spec))
        else:
            found = [spec]
        if not found:
            raise SystemExit(f"--concepts {spec}: no concept files")
        files += found
    return files


def _fingerprint(ds, precision, max_sentences):
    h = hashlib.sha256()
    for part in (ds.concept, ds.group, precision, str(max_sentences)):
        h.update(part.encode("utf-8") + b"\0")
    for label, v in ((b"+", ds.positive), (b"-", ds.negative)):
        for s in v:
            h.update(label + s.encode("utf-8") + b"\0")
    return h.hexdigest()


def _client(scheduler, workers):
    from distributed import Client, LocalCluster
    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                           processes=True, dashboard_address=None)
    return Client(cluster), cluster


def build(model_path, concept_specs, out, scheduler=None, workers=None, batch=64,
          unit_block=16384, precision="int8", max_sentences=0, verify=True, log=print):
    """Builds or extends the library in `out`; returns the build's statistics (a dict)."""
    t_start = time.perf_counter()
    model_path = os.path.abspath(model_path)
    files = _concept_files(concept_specs)
    datasets = [(f, C.load_dataset(f, max_sentences)) for f in files]
    names = {}
    for f, ds in datasets:
        if ds.concept in names:
            raise SystemExit(f"concept '{ds.concept}' is in both {names[ds.concept]} and {f}")
        names[ds.concept] = f
    model = C.Model(model_path, verify_hash=verify)
    info = model.info
    os.makedirs(os.path.join(out, "tables"), exist_ok=True)
    index_path = os.path.join(out, "index.json")
    index = {"format": FORMAT, "model": {"name": info.name, "hash": info.hash,
                                         "num_units": info.num_units},
             "precision": precision, "concepts": []}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("model", {}).get("hash") != info.hash:
            raise SystemExit(f"{out} was built with another model (sha256 "
                             f"{old.get('model', {}).get('hash')}); this is {info.hash}")
        if old.get("precision") != precision:
            raise SystemExit(f"{out} was built in {old.get('precision')}, not {precision}")
        index["concepts"] = old.get("concepts", [])
    store = _Store(os.path.join(out, "responses"))

    # 1. responses of the sentences not stored yet, each distinct sentence once.
    todo, seen = [], set()
    for _, ds in datasets:
        for s in ds.positive + ds.negative:
            if s not in seen and s not in store.where:
                seen.add(s)
                todo.append(s)
    stats = {"concepts": len(datasets), "sentences_labeled":
             sum(len(d.positive) + len(d.negative) for _, d in datasets),
             "sentences_distinct": len(set().union(*[set(d.positive + d.negative)
                                                     for _, d in datasets])) if datasets else 0,
             "sentences_computed": len(todo)}
    client, cluster = _client(scheduler, workers)
    try:
        stats["workers"] = len(client.scheduler_info()["workers"])
        t0 = time.perf_counter()
        forward_s = 0.0
        if todo:
            from distributed import as_completed
            shards = [todo[i:i + batch] for i in range(0, len(todo), batch)]
            futures = {client.submit(_compute_shard, model_path, verify, precision, sh,
                                     pure=False): sh for sh in shards}
            done = 0
            for fut in as_completed(futures):
                rows, truncated, secs = fut.result()
                forward_s += secs
                store.add(futures[fut], rows, truncated)
                done += len(futures[fut])
                log(f"responses {done}/{len(todo)} sentences")
        stats["responses_s"] = time.perf_counter() - t0
        stats["responses_forward_s"] = forward_s

        # 2. expertise, per concept, in unit ranges.
        t0 = time.perf_counter()
        expertise_s = 0.0
        by_name = {c["concept"]: c for c in index["concepts"]}
        ranked = 0
        for f, ds in datasets:
            fp = _fingerprint(ds, precision, max_sentences)
            entry = by_name.get(ds.concept)
            if (entry and entry.get("fingerprint") == fp and
                    os.path.exists(os.path.join(out, entry["table"]))):
                continue  # unchanged since it was ranked
            sentences = ds.positive + ds.negative
            rows = [store.where[s] for s in sentences]
            labels = np.array([1] * len(ds.positive) + [0] * len(ds.negative), dtype=np.uint8)
            ranges = [(b, min(b + unit_block, info.num_units))
                      for b in range(0, info.num_units, unit_block)]
            futs = [client.submit(_expertise_block, store.dir, rows, labels, b, e, pure=False)
                    for b, e in ranges]
            parts = {}
            for fut in futs:
                b, st, secs = fut.result()
                parts[b] = st
                expertise_s += secs
            full = {k: np.concatenate([parts[b][k] for b, _ in ranges]) for k in parts[0]}
            n_trunc = sum(store.truncated[s] for s in sentences)
            table = model.experts_from_stats(full, ds.concept, len(ds.positive),
                                             len(ds.negative), group=ds.group,
                                             num_truncated=n_trunc, precision=precision)
            rel = os.path.join("tables", _safe_name(ds.concept) + ".json")
            table.save(os.path.join(out, rel))
            best = table.units(1)[0]
            by_name[ds.concept] = {
                "concept": ds.concept, "group": ds.group, "table": rel,
                "source": os.path.abspath(f), "num_positive": len(ds.positive),
                "num_negative": len(ds.negative), "num_truncated": int(n_trunc),
                # As the table's JSON writes it: the shortest decimal that reads back as the float32.
                "best_ap": float(str(np.float32(best.ap))), "best_unit": f"{best.layer}:{best.unit}",
                "fingerprint": fp}
            index["concepts"] = sorted(by_name.values(), key=lambda c: c["concept"])
            index["sentences_stored"] = len(store.where)
            _atomic_write(index_path, json.dumps(index, indent=1, ensure_ascii=False).encode())
            ranked += 1
            log(f"ranked {ds.concept}: best AP {best.ap:.4f} ({best.layer}:{best.unit})")
        stats["concepts_ranked"] = ranked
        stats["expertise_s"] = time.perf_counter() - t0
        stats["expertise_task_s"] = expertise_s
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    index["sentences_stored"] = len(store.where)
    stats["total_s"] = time.perf_counter() - t_start
    index["last_build"] = stats
    _atomic_write(index_path, json.dumps(index, indent=1, ensure_ascii=False).encode())
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m selfcond.library", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or extend a library")
    b.add_argument("--model", required=True, help="selfcond model file (.scm)")
    b.add_argument("--concepts", required=True, action="append",
                   help="a concept file, a directory of *.json / *.txt, or a glob (repeatable)")
    b.add_argument("--out", required=True, help="library directory")
    b.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster)")
    b.add_argument("--workers", type=int, default=0,
                   help="local cluster: worker processes (default: one per core)")
    b.add_argument("--batch", type=int, default=64, help="sentences per responses task")
    b.add_argument("--unit-block", type=int, default=16384, help="units per expertise task")
    b.add_argument("--precision", default="int8", choices=["int8", "f32"])
    b.add_argument("--max-sentences", type=int, default=0, help="per class, the first N")
    b.add_argument("--no-verify", action="store_true", help="skip the model's hash check")
    i = sub.add_parser("info", help="print a library's index")
    i.add_argument("lib")
    args = ap.parse_args(argv)
    if args.cmd == "info":
        with open(os.path.join(args.lib, "index.json"), encoding="utf-8") as f:
            idx = json.load(f)
        print(f"{len(idx['concepts'])} concepts, model {idx['model']['name']} "
              f"({idx['model']['hash'][:12]}), {idx.get('sentences_stored', 0)} sentences")
        for c in idx["concepts"]:
            print(f"  {c['concept']:40s} {c['num_positive']:5d}+ {c['num_negative']:5d}-  "
                  f"best AP {c['best_ap']:.4f}  {c['best_unit']}")
        return 0
    if args.batch < 1 or args.unit_block < 1 or args.max_sentences < 0:
        ap.error("--batch and --unit-block must be >= 1, --max-sentences >= 0")
    stats = build(args.model, args.concepts, args.out, args.scheduler, args.workers,
                  args.batch, args.unit_block, args.precision, args.max_sentences,
                  not args.no_verify,
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
