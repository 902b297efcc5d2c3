#!/usr/bin/env python3
"""Checks that every source under src/ includes only headers of its own layer or layers below.

The layers (docs/architecture.md), lowest first; a layer may use any layer with a smaller rank:
  kernels, util (0) < formats (1) < model (2) < experts (3) < engine (4) < api, tools (5)
  < cli (6)
CMake links each layer only to those below it; this check also catches a header-only use that
the linker would not see. Exit status 1 and one line per violation.
"""
import pathlib
import re
import sys

RANK = {"kernels": 0, "util": 0, "formats": 1, "model": 2, "experts": 3, "engine": 4,
        "api": 5, "tools": 5, "cli": 6}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/[^"]+"', re.M)


def main() -> int:
    src = pathlib.Path(__file__).resolve().parent.parent / "src"
    bad = []
    for path in sorted(src.rglob("*")):
        if path.suffix not in (".h", ".cc", ".inc"):
            continue
        layer = path.relative_to(src).parts[0]
        if layer not in RANK:
            bad.append(f"{path}: not in a known layer folder ({', '.join(RANK)})")
            continue
        for m in INCLUDE.finditer(path.read_text()):
            dep = m.group(1)
            if dep == "absl" or dep == "selfcond":
                continue
            if dep not in RANK:
                bad.append(f"{path}: includes from unknown folder '{dep}'")
            elif dep != layer and RANK[dep] >= RANK[layer]:
                bad.append(f"{path}: layer '{layer}' includes '{m.group(1)}/...' (same or higher layer)")
    for line in bad:
        print(line)
    if not bad:
        print(f"layers ok: {src}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
