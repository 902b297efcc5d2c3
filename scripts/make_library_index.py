#!/usr/bin/env python3
"""Builds a concept library index (LIB/index.json) over existing native expert tables.

    python3 scripts/make_library_index.py --out LIB/index.json TABLE_OR_DIR_OR_GLOB [...]
    python3 scripts/make_library_index.py --check --out LIB/index.json TABLE ...  # up to date?
    python3 scripts/make_library_index.py --out demo/library/index.json \\
        demo/experts/football.json demo/experts/man.json demo/experts/woman.json

`python -m selfcond.library build --model M --concepts ... --out LIB` (python/selfcond/library.py)
ranks the concepts itself and writes the same index format, "selfcond-library/1", for the
libraries it builds (tables in LIB/tables/). This script only indexes tables that already exist
(from `selfcond rank`, the browser's "Download JSON", or another library), so that a set of
tables can be browsed in the web app (web/library.js) without ranking anything again. It needs
only the standard library (no numpy, no built selfcond).

What it writes, per table (native JSON, docs/experts.md; ml-selfcond CSVs are refused: they
carry no model hash):
  concept, group                   the table's own
  table                            the table's path relative to the index's directory, with
                                   '/' separators (the app resolves it against the index URL)
  num_positive, num_negative,
  num_truncated                    the table's "dataset" counts
  best_ap, best_unit               the unit with the highest AP: its AP and its name as
                                   library.py writes it, "transformer.h.{layer}.{kind}:0:{unit}"
and at the top: format, model {name, hash, num_units}, precision. library.py's per-concept
"source" (the concept's sentence file) and "fingerprint" (used to resume a build) are left out:
the sentences behind an existing table are not known here.

Every table must be for the same model (same content hash) and precision, and every concept
must appear once; otherwise nothing is written and the reason is printed. Concepts are sorted
by name (as library.py does) and the output is deterministic: web/tests/library.test.mjs
regenerates demo/library/index.json and fails if the committed one differs.
"""

import argparse
import glob
import json
import math
import os
import sys

FORMAT = "selfcond-library/1"
# Site kinds in the order of a table's "site" column (site = layer * 4 + kind): src/model/units.h.
SITE_KINDS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class TableError(Exception):
    """A table that cannot go into the index (message says which and why)."""


def table_files(specs):
    files = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(glob.glob(os.path.join(spec, "*.json")))
        elif any(c in spec for c in "*?["):
            found = sorted(glob.glob(spec))
        else:
            found = [spec]
        if not found:
            raise TableError(f"{spec}: no tables (*.json) there")
        files += found
    return files


def entry_for(path, index_dir):
    """The index entry of one table, and its model/precision to check against the others."""
    try:
        with open(path, encoding="utf-8") as f:
            t = json.load(f)
    except (OSError, ValueError) as e:
        raise TableError(f"{path}: cannot read the table ({e})")
    if not isinstance(t, dict) or t.get("format") != "selfcond-experts":
        raise TableError(f"{path}: not a native selfcond expert table (format "
                          f"{t.get('format') if isinstance(t, dict) else type(t).__name__!r}, "
                          f"expected 'selfcond-experts')")
    for key in ("concept", "model_hash"):
        if not isinstance(t.get(key), str) or not t[key]:
            raise TableError(f"{path}: the table has no {key}")
    units = t.get("units") or {}
    site, unit, ap = units.get("site"), units.get("unit"), units.get("ap")
    if not (isinstance(site, list) and isinstance(unit, list) and isinstance(ap, list)
            and len(site) == len(unit) == len(ap) and ap):
        raise TableError(f"{path}: units.site/unit/ap are missing or of different lengths")
    # The best unit by AP, not just row 0: a table written by another tool need not be sorted.
    # Ties keep the first (tables from selfcond are sorted, so that is row 0, as library.py's
    # table.units(1)[0]). NaN/null APs (constant units) never win.
    best = None
    for i, a in enumerate(ap):
        if isinstance(a, (int, float)) and math.isfinite(a) and (best is None or a > ap[best]):
            best = i
    if best is None:
        raise TableError(f"{path}: no unit has a finite AP")
    s = site[best]
    best_unit = f"transformer.h.{s // len(SITE_KINDS)}.{SITE_KINDS[s % len(SITE_KINDS)]}:0:{unit[best]}"
    ds = t.get("dataset") or {}
    rel = os.path.relpath(os.path.abspath(path), index_dir).replace(os.sep, "/")
    entry = {
        "concept": t["concept"], "group": t.get("group") or "", "table": rel,
        "num_positive": int(ds.get("num_positive", 0)),
        "num_negative": int(ds.get("num_negative", 0)),
        "num_truncated": int(ds.get("num_truncated", 0)),
        "best_ap": ap[best], "best_unit": best_unit,
    }
    model = {"name": t.get("model_name") or "", "hash": t["model_hash"].lower(),
             "num_units": int((t.get("unit_space") or {}).get("total_units", units.get("count", len(ap))))}
    return entry, model, t.get("precision") or "int8"


def build_index(paths, out):
    """The index (a dict) for the tables in `paths`, with table paths relative to out's directory."""
    index_dir = os.path.dirname(os.path.abspath(out))
    model = precision = None
    first = None
    by_name = {}
    for path in paths:
        entry, m, p = entry_for(path, index_dir)
        if model is None:
            model, precision, first = m, p, path
        elif m["hash"] != model["hash"]:
            raise TableError(f"{path} is for model {m['name']} (sha256 {m['hash']}), but {first} "
                              f"is for {model['name']} (sha256 {model['hash']}): an index holds "
                              f"one model's tables")
        elif p != precision:
            raise TableError(f"{path} was ranked in {p}, {first} in {precision}")
        if entry["concept"] in by_name:
            raise TableError(f"concept '{entry['concept']}' is in both "
                              f"{by_name[entry['concept']][1]} and {path}")
        by_name[entry["concept"]] = (entry, path)
    if model is None:
        raise TableError("no tables given")
    return {"format": FORMAT, "model": model, "precision": precision,
            "concepts": [e for e, _ in sorted(by_name.values(), key=lambda x: x[0]["concept"])]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the index to write, e.g. LIB/index.json")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 unless --out already holds exactly this index")
    ap.add_argument("tables", nargs="+", help="native expert tables (.json), directories or globs")
    args = ap.parse_args(argv)
    try:
        index = build_index(table_files(args.tables), args.out)
    except TableError as e:
        print(f"make_library_index: {e}", file=sys.stderr)
        return 1
    # The same layout as library.py's index (indent=1), plus a final newline.
    data = json.dumps(index, indent=1, ensure_ascii=False) + "\n"
    if args.check:
        try:
            with open(args.out, encoding="utf-8") as f:
                old = f.read()
        except OSError as e:
            old = None
            print(f"make_library_index: {args.out}: {e}", file=sys.stderr)
        if old != data:
            print(f"make_library_index: {args.out} is out of date; regenerate it with the same "
                  f"arguments without --check", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date ({len(index['concepts'])} concepts)")
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = f"{args.out}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
    os.replace(tmp, args.out)  # never a half-written index
    print(f"{args.out}: {len(index['concepts'])} concepts, model {index['model']['name']} "
          f"({index['model']['hash'][:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
