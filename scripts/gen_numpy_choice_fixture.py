#!/usr/bin/env python3
"""Writes tests/data/numpy_choice.json: index lists drawn by numpy's legacy RandomState, the
generator ml-selfcond's ConceptDataset uses to take at most num_per_concept sentences per class
(numpy.random.RandomState(1234).choice(n, k, replace=False), classes in sorted label order,
"negative" then "positive", one RandomState for both). tests/compat_test.cc checks that
NumpyRandomState (src/util/numpy_random.h) and SampleLikeMlSelfcond draw exactly these.

    /usr/bin/python3 scripts/gen_numpy_choice_fixture.py   (needs numpy: Debian python3-numpy)
"""
import json
import pathlib

import numpy as np


def draws(seed, calls):
    rs = np.random.RandomState(seed)
    return [[int(i) for i in rs.choice(n, k, replace=False)] for n, k in calls]


cases = []
for seed, calls in [
    (1234, [(10, 5)]),
    (1234, [(1, 1), (2, 2), (3, 1)]),
    (0, [(100, 10), (7, 7)]),
    (4294967295, [(300, 17)]),
    # ml-selfcond's draw for a dataset of 1500 negative and 1200 positive sentences, 1000 each.
    (1234, [(1500, 1000), (1200, 1000)]),
    # 5 negatives (kept whole, no draw), then 12 positives, 6 per class.
    (1234, [(12, 6)]),
    # a class of 70000 sentences (masks above 16 bits)
    (1234, [(70000, 30)]),
]:
    cases.append({"seed": seed, "calls": [{"n": n, "k": k} for n, k in calls],
                  "indices": draws(seed, calls)})
out = pathlib.Path(__file__).resolve().parents[1] / "tests/data/numpy_choice.json"
out.write_text(json.dumps({"numpy_version": np.__version__, "cases": cases}) + "\n")
print(f"wrote {out} (numpy {np.__version__})")
