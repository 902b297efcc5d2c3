"""The concept library on a local Dask cluster (python -m selfcond.library): tables identical to
ranking one concept at a time, each distinct sentence computed once, resumable after a kill.

Needs Debian's python3-dask and python3-distributed; skipped without them unless
SELFCOND_REQUIRE_DASK=1 (scripts/test-python.sh sets it: CI installs them).
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import selfcond

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MODEL = os.environ.get("SELFCOND_TEST_MODEL",
                       os.path.join(REPO, "demo", "models", "selfcond-mini-30m.scm"))
SHARED = os.path.join(REPO, "..", "shared", "concepts")

try:
    import distributed  # noqa: F401
    HAVE_DASK = True
except ImportError:
    HAVE_DASK = False
if not HAVE_DASK and os.environ.get("SELFCOND_REQUIRE_DASK") == "1":
    raise ImportError("python3-dask / python3-distributed are required (SELFCOND_REQUIRE_DASK=1)")


def write_lines(path, pos, neg):
    with open(path, "w", encoding="utf-8") as f:
        for s in pos:
            f.write(f"+ {s}\n")
        for s in neg:
            f.write(f"- {s}\n")


@unittest.skipUnless(HAVE_DASK, "python3-distributed not installed")
class LibraryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="selfcond-library-")
        cls.concepts = os.path.join(cls.tmp, "concepts")
        os.makedirs(cls.concepts)
        cls.small = os.path.join(cls.tmp, "small")  # for the kill test: football_small only
        os.makedirs(cls.small)
        shutil.copy(os.path.join(SHARED, "football_small.json"), cls.small)
        # The shared concepts (football_small is football's first sentences, same name) ...
        for name in ("football", "man", "woman"):
            shutil.copy(os.path.join(SHARED, name + ".json"), cls.concepts)
        woman = selfcond.load_dataset(os.path.join(SHARED, "woman.json"), max_sentences=10)
        man = selfcond.load_dataset(os.path.join(SHARED, "man.json"), max_sentences=10)
        # Two concepts from text, sharing their negatives (computed once).
        write_lines(os.path.join(cls.concepts, "women.txt"), woman.positive, man.negative)
        write_lines(os.path.join(cls.concepts, "men.txt"), man.positive, man.negative)
        cls.extra = os.path.join(cls.tmp, "extra.txt")
        write_lines(cls.extra, woman.positive[:3] + ["A brand new sentence about queens."],
                    man.negative[:4])  # one sentence not in the library yet
        cls.model = selfcond.Model(MODEL)

    @classmethod
    def tearDownClass(cls):
        cls.model.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def build(self, out, *extra, check=True, concepts=None):
        cmd = [sys.executable, "-m", "selfcond.library", "build", "--model", MODEL, "--concepts",
               concepts or self.concepts, "--out", out, "--workers", "2", "--batch", "32",
               "--unit-block", "5000", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if check:
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        return json.loads(r.stdout) if r.returncode == 0 else None

    def expect_tables_as_rank(self, out):
        with open(os.path.join(out, "index.json"), encoding="utf-8") as f:
            index = json.load(f)
        self.assertEqual(index["model"]["hash"], self.model.info.hash)
        for entry in index["concepts"]:
            ds = selfcond.load_dataset(entry["source"])
            want = json.loads(self.model.rank(ds.positive, ds.negative, concept=ds.concept,
                                              threads=1).to_json())
            with open(os.path.join(out, entry["table"]), encoding="utf-8") as f:
                got = json.load(f)
            self.assertEqual(got.pop("group", ""), ds.group)  # rank() takes no group
            want.pop("group", None)
            self.assertEqual(got, want, f"table of {ds.concept} differs from rank()")
        cli = os.environ.get("SELFCOND_CLI")
        if cli:  # and from the CLI, for one concept
            ref = os.path.join(self.tmp, "cli.json")
            entry = index["concepts"][0]
            subprocess.run([cli, "rank", "--model", MODEL, "--concept", entry["source"], "--out",
                            ref], check=True, capture_output=True)
            with open(ref, encoding="utf-8") as a, \
                    open(os.path.join(out, entry["table"]), encoding="utf-8") as b:
                self.assertEqual(json.load(a), json.load(b))
        return index

    def test_build_matches_rank_and_computes_each_sentence_once(self):
        out = os.path.join(self.tmp, "lib1")
        stats = self.build(out)
        self.assertEqual(stats["workers"], 2)
        self.assertEqual(stats["concepts"], 5)  # 3 shared + 2 from text
        self.assertEqual(stats["sentences_computed"], stats["sentences_distinct"])
        self.assertLess(stats["sentences_distinct"], stats["sentences_labeled"])  # shared negatives
        index = self.expect_tables_as_rank(out)
        self.assertEqual(len(index["concepts"]), 5)
        # The app's library browser reads this index: the same fields as the indexer of existing
        # tables (scripts/make_library_index.py, whose output web/tests/library.test.mjs checks).
        other = os.path.join(self.tmp, "reindexed.json")
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_library_index.py"),
                        "--out", other, os.path.join(out, "tables")], check=True,
                       capture_output=True)
        with open(other, encoding="utf-8") as f:
            re_index = json.load(f)
        self.assertEqual(re_index["format"], index["format"])
        self.assertEqual(re_index["model"]["hash"], index["model"]["hash"])
        keys = ("concept", "group", "num_positive", "num_negative", "num_truncated", "best_ap",
                "best_unit")
        self.assertEqual([{k: c[k] for k in keys} for c in re_index["concepts"]],
                         [{k: c[k] for k in keys} for c in index["concepts"]])
        # Adding a concept computes only its new sentences; the others are not ranked again.
        stats = self.build(out, "--concepts", self.extra)
        self.assertEqual(stats["sentences_computed"], 1)
        self.assertEqual(stats["concepts_ranked"], 1)
        self.expect_tables_as_rank(out)

    def test_resumes_after_a_kill(self):
        out = os.path.join(self.tmp, "lib2")
        cmd = [sys.executable, "-m", "selfcond.library", "build", "--model", MODEL, "--concepts",
               self.small, "--out", out, "--workers", "2", "--batch", "2"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            if len(glob.glob(os.path.join(out, "responses", "*.json"))) >= 2:
                break
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)  # the build and its cluster, mid-way
        p.wait()
        stored = len(glob.glob(os.path.join(out, "responses", "*.json")))
        self.assertGreaterEqual(stored, 1)
        stats = self.build(out, concepts=self.small)
        # Only the sentences of shards not committed before the kill run again.
        self.assertLessEqual(stats["sentences_computed"], stats["sentences_distinct"] - stored)
        self.expect_tables_as_rank(out)



class MlSelfcondLayoutTest(unittest.TestCase):
    """--concepts DIR with ml-selfcond's concept_list.csv (no Dask needed)."""

    def test_concept_list(self):
        from selfcond import library
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "sense"))
            for name in ("man-1_18_00__", "woman-1_18_00__"):
                shutil.copy(os.path.join(SHARED, name.split("-")[0] + ".json"),
                            os.path.join(tmp, "sense", name + ".json"))
            with open(os.path.join(tmp, "concept_list.csv"), "w") as fp:
                fp.write("group,concept\nsense,woman-1_18_00__\nsense,man-1_18_00__\n")
            files = library._concept_files([tmp])
            self.assertEqual([os.path.basename(f) for f in files],
                             ["woman-1_18_00__.json", "man-1_18_00__.json"])
            with open(os.path.join(tmp, "concept_list.csv"), "w") as fp:
                fp.write("group,concept\nsense,../woman\n")
            with self.assertRaises(SystemExit) as cm:
                library._concept_files([tmp])
            self.assertIn("plain names", str(cm.exception))

if __name__ == "__main__":
    unittest.main()
