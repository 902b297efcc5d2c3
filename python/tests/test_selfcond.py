"""Tests of the selfcond Python binding (plain unittest; numpy from Debian's python3-numpy).

    python3 -m unittest discover -s python/tests -v        (scripts/test-python.sh runs them
                                                             against the installed package)
Environment:
  SELFCOND_TEST_MODEL     the .scm model (default: <repo>/demo/models/selfcond-mini-30m.scm)
  SELFCOND_TEST_EXPERTS   an expert table of that model (default: <repo>/demo/experts/football.json)
  SELFCOND_TEST_CONCEPT   a concept dataset (default: <repo>/../shared/concepts/football.json)
  SELFCOND_TEST_EXPECT_INSTALLED=1   also check that `selfcond` was imported from site-packages
                                     and found the library through the path recorded at install
"""

import gc
import json
import math
import os
import re
import sys
import tempfile
import threading
import unittest
from pathlib import Path

import numpy as np

import selfcond

REPO = Path(__file__).resolve().parents[2]
MODEL = os.environ.get("SELFCOND_TEST_MODEL", str(REPO / "demo/models/selfcond-mini-30m.scm"))
EXPERTS = os.environ.get("SELFCOND_TEST_EXPERTS", str(REPO / "demo/experts/football.json"))
CONCEPT = os.environ.get("SELFCOND_TEST_CONCEPT",
                         str(REPO.parent / "shared/concepts/football.json"))
PROMPT = "Once upon a time"
N_PER_CLASS = 40  # sentences per class for the rankings here (a few seconds in total)


def average_precision(scores, labels):
    """scikit-learn's average_precision_score (tied scores share a threshold), in numpy."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.where(np.diff(s) != 0)[0], len(s) - 1]  # last index of each threshold
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def setUpModule():
    global model, concept
    if not os.path.exists(MODEL):
        raise unittest.SkipTest(f"no model at {MODEL} (set SELFCOND_TEST_MODEL)")
    model = selfcond.Model(MODEL)
    with open(CONCEPT, encoding="utf-8") as f:
        concept = json.load(f)


def tearDownModule():
    global model
    model.close()
    model = None


def sentences():
    pos = concept["sentences"]["positive"][:N_PER_CLASS]
    neg = concept["sentences"]["negative"][:N_PER_CLASS]
    return pos, neg


class InstallTest(unittest.TestCase):
    @unittest.skipUnless(os.environ.get("SELFCOND_TEST_EXPECT_INSTALLED") == "1",
                         "only when testing an installed package")
    def test_imported_from_site_packages_with_recorded_library(self):
        where = Path(selfcond.__file__).resolve()
        self.assertIn("site-packages", where.parts, where)
        self.assertNotEqual(where.parents[1], REPO / "python", "imported from the source tree")
        from selfcond import _libpath
        self.assertIsNotNone(_libpath.LIBRARY, "no library recorded at install (pkg-config)")
        self.assertTrue(os.path.exists(_libpath.LIBRARY), _libpath.LIBRARY)
        if "SELFCOND_LIBRARY" not in os.environ:
            self.assertEqual(selfcond.library_path(), _libpath.LIBRARY)

    def test_version(self):
        self.assertEqual(selfcond.version().split(".")[:2], ["0", "11"])
        self.assertTrue(selfcond.library_path())


class ModelTest(unittest.TestCase):
    def test_info(self):
        info = model.info
        self.assertEqual(info.name, "selfcond-mini-30m")
        self.assertRegex(info.hash, r"^[0-9a-f]{64}$")
        self.assertEqual((info.n_layer, info.n_embd), (6, 384))
        self.assertGreater(info.n_ctx, 0)
        self.assertEqual(info.vocab_size, 50257)
        # 4 linear layers per block: c_attn (3 n_embd), c_proj (n_embd), c_fc, mlp c_proj
        self.assertEqual(info.num_units, info.n_layer * (3 * info.n_embd + info.n_embd +
                                                         info.n_inner + info.n_embd))
        self.assertEqual(model.num_units, info.num_units)
        self.assertEqual(info.as_dict()["num_units"], info.num_units)

    def test_tokenize_roundtrip(self):
        for text in ["Hello world", "Once upon a time, a café ⚽ — 3.14", "", " " * 3]:
            ids = model.tokenize(text)
            self.assertTrue(all(isinstance(i, int) for i in ids))
            self.assertEqual(model.detokenize(ids), text)
        self.assertEqual(model.tokenize("Hello world"), [15496, 995])  # GPT-2's ids
        self.assertEqual(len(model.tokenize(" ".join(["football"] * 500))), 500)

    def test_detokenize_bad_id(self):
        with self.assertRaises(selfcond.Error) as cm:
            model.detokenize([1, 10 ** 6])
        self.assertEqual(cm.exception.code, selfcond.Status.INVALID_ARGUMENT)

    def test_unit_name(self):
        self.assertEqual(model.unit_name(0), ("transformer.h.0.attn.c_attn:0", 0))
        with self.assertRaises(selfcond.Error) as cm:
            model.unit_name(model.num_units)
        self.assertEqual(cm.exception.code, selfcond.Status.OUT_OF_RANGE)

    def test_from_bytes(self):
        data = Path(MODEL).read_bytes()
        with selfcond.Model.from_bytes(data) as m2:
            self.assertEqual(m2.info, model.info)
            self.assertIsNone(m2.path)
        self.assertTrue(m2.closed)


class ErrorTest(unittest.TestCase):
    def test_missing_model(self):
        with self.assertRaises(selfcond.Error) as cm:
            selfcond.Model("/nonexistent/dir/model.scm")
        e = cm.exception
        self.assertIsInstance(e, RuntimeError)
        self.assertEqual(e.code, selfcond.Status.NOT_FOUND)
        self.assertIn("/nonexistent/dir/model.scm", e.message)
        self.assertTrue(str(e).startswith("NOT_FOUND: "))

    def test_corrupt_model(self):
        with self.assertRaises(selfcond.Error) as cm:
            selfcond.Model.from_bytes(b"not a model at all" * 10)
        self.assertIn(cm.exception.code, (selfcond.Status.INVALID_ARGUMENT,
                                          selfcond.Status.DATA_LOSS))

    def test_missing_experts(self):
        with self.assertRaises(selfcond.Error) as cm:
            model.load_experts("/nonexistent/football.json")
        self.assertEqual(cm.exception.code, selfcond.Status.NOT_FOUND)

    def test_malformed_experts(self):
        with self.assertRaises(selfcond.Error) as cm:
            model.load_experts("{not json")
        self.assertEqual(cm.exception.code, selfcond.Status.INVALID_ARGUMENT)

    def test_table_of_another_model_is_refused(self):
        text = Path(EXPERTS).read_text(encoding="utf-8")
        other = re.sub(r'"model_hash":\s*"[0-9a-f]+"', '"model_hash":"' + "0" * 64 + '"', text)
        self.assertNotEqual(other, text)
        with self.assertRaises(selfcond.Error) as cm:
            model.load_experts(other)
        self.assertEqual(cm.exception.code, selfcond.Status.FAILED_PRECONDITION)
        self.assertIn("another model", cm.exception.message)

    def test_table_of_another_shape_is_refused(self):
        csv = model.load_experts(EXPERTS).to_csv().splitlines()
        # ml-selfcond CSVs carry no model hash: the shape check is what refuses them.
        deeper = [csv[0]] + [l.replace("transformer.h.1.", "transformer.h.9.") for l in csv[1:]]
        with self.assertRaises(selfcond.Error) as cm:
            model.load_experts("\n".join(deeper) + "\n", allow_unhashed=True)
        self.assertEqual(cm.exception.code, selfcond.Status.FAILED_PRECONDITION)
        self.assertIn("h.9", cm.exception.message)
        with self.assertRaises(selfcond.Error) as cm:  # a table covering fewer units
            model.load_experts("\n".join(csv[:101]) + "\n", allow_unhashed=True)
        self.assertEqual(cm.exception.code, selfcond.Status.FAILED_PRECONDITION)

    def test_bad_options(self):
        with self.assertRaises(ValueError):
            model.session(kv="f8")
        with self.assertRaises(ValueError):
            model.session(precision="int3")
        with self.assertRaises(TypeError):
            model.rank("one string", ["x"])
        with self.assertRaises(ValueError):
            model.tokenize("a\0b")
        with model.session() as s:
            with self.assertRaises(selfcond.Error) as cm:
                s.generate(PROMPT, temperature=-1)
            self.assertEqual(cm.exception.code, selfcond.Status.INVALID_ARGUMENT)
            with self.assertRaises(selfcond.Error) as cm:
                s.generate("", max_new_tokens=3)
            self.assertEqual(cm.exception.code, selfcond.Status.INVALID_ARGUMENT)

    def test_prompt_longer_than_context(self):
        with model.session(n_ctx=16) as s:
            with self.assertRaises(selfcond.Error) as cm:
                s.generate("football " * 40, max_new_tokens=3)
            self.assertEqual(cm.exception.code, selfcond.Status.OUT_OF_RANGE)
            r = s.generate(PROMPT, max_new_tokens=100, temperature=0, stop_at_eos=False)
            self.assertEqual(r.stop, "context_full")
            # 16 positions filled; the last token is sampled from them, not run
            self.assertEqual(r.prompt_tokens + r.new_tokens, 16 + 1)


class ExpertsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.experts = model.load_experts(EXPERTS)

    def test_table(self):
        e = self.experts
        self.assertTrue(e.concept.startswith("football"))
        self.assertEqual(len(e), model.num_units)
        self.assertEqual(e.total_units, model.num_units)
        top = e.units(50)
        self.assertEqual(len(top), 50)
        self.assertEqual([u.rank for u in top], list(range(50)))
        aps = [u.ap for u in top]
        self.assertEqual(aps, sorted(aps, reverse=True))
        u = top[0]
        self.assertRegex(u.layer, r"^transformer\.h\.\d+\.(attn|mlp)\.c_(attn|proj|fc):0$")
        self.assertEqual(model.unit_name(u.unit_id), (u.layer, u.unit))
        self.assertEqual(e[0], u)
        self.assertEqual(e[-1].rank, len(e) - 1)
        self.assertEqual(e[1:3], top[1:3])
        with self.assertRaises(IndexError):
            e[len(e)]

    def test_json_and_csv_roundtrip(self):
        e = self.experts
        again = model.load_experts(e.to_json())
        self.assertEqual(len(again), len(e))
        self.assertEqual(again.units(20), e.units(20))
        with self.assertRaises(selfcond.Error) as cm:  # no model hash: refused by default
            model.load_experts(e.to_csv())
        self.assertIn("no model_hash", cm.exception.message)
        from_csv = model.load_experts(e.to_csv(), allow_unhashed=True)
        self.assertEqual([(u.layer, u.unit) for u in from_csv.units(20)],
                         [(u.layer, u.unit) for u in e.units(20)])
        for a, b in zip(from_csv.units(20), e.units(20)):
            self.assertAlmostEqual(a.ap, b.ap, places=6)
            self.assertAlmostEqual(a.on_p50, b.on_p50, places=5)

    def test_save(self):
        with tempfile.TemporaryDirectory() as d:
            for name, fmt in [("t.json", None), ("t.csv", None), ("t.txt", "csv")]:
                path = Path(d) / name
                self.experts.save(path, fmt)
                text = path.read_text(encoding="utf-8")
                if name == "t.json":
                    self.assertTrue(text.lstrip().startswith("{"))
                else:
                    self.assertTrue(text.startswith("ap,off_mean,on_p50,on_p90,layer,unit"))
                self.assertEqual(model.load_experts(path, allow_unhashed=name != "t.json").units(5),
                                 self.experts.units(5))
            with self.assertRaises(ValueError):
                self.experts.save(Path(d) / "t.x", "xml")
            with self.assertRaises(selfcond.Error) as cm:
                self.experts.save(Path(d) / "no" / "such" / "dir.json")
            self.assertNotEqual(cm.exception.code, selfcond.Status.OK)


class RankTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pos, cls.neg = sentences()
        cls.progress = []
        cls.table = model.rank(cls.pos, cls.neg, concept="football",
                               progress=lambda d, t: cls.progress.append((d, t)))
        cls.responses = model.pooled_responses(cls.pos + cls.neg)

    def test_table_is_sane(self):
        t = self.table
        self.assertEqual(t.concept, "football")
        self.assertEqual(len(t), model.num_units)
        self.assertEqual((t.num_positive, t.num_negative), (len(self.pos), len(self.neg)))
        units = t.units()
        aps = np.array([u.ap for u in units])
        self.assertTrue(np.all((aps >= 0) & (aps <= 1)))
        self.assertTrue(np.all(np.diff(aps) <= 0), "not sorted by AP, best first")
        self.assertGreater(aps[0], 0.9)
        self.assertTrue(math.isfinite(units[0].on_p50))
        self.assertEqual(len({u.unit_id for u in units}), model.num_units)

    def test_table_from_stats_of_unit_ranges_is_the_ranked_table(self):
        # What a distributed ranking does: statistics per unit range (strided views of the
        # pooled responses, no copy), concatenated, then one table: identical to rank().
        labels = [1] * len(self.pos) + [0] * len(self.neg)
        u = model.num_units
        cuts = [0, u // 3, 2 * u // 3, u]
        parts = [selfcond.expertise(self.responses[:, a:b], labels, threads=2)
                 for a, b in zip(cuts, cuts[1:])]
        stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        t = model.experts_from_stats(stats, "football", len(self.pos), len(self.neg))
        self.assertEqual(t.to_json(), self.table.to_json())
        with self.assertRaises(selfcond.Error):  # one class only
            selfcond.expertise(self.responses, [1] * len(labels))
        with self.assertRaises(ValueError):
            model.experts_from_stats({k: v[:-1] for k, v in stats.items()}, "x", 1, 1)

    def test_progress(self):
        total = len(self.pos) + len(self.neg)
        self.assertEqual(self.progress[0], (0, total))
        self.assertEqual(self.progress[-1], (total, total))
        done = [d for d, _ in self.progress]
        self.assertEqual(done, sorted(done))

    def test_pooled_responses_shape(self):
        r = self.responses
        self.assertEqual(r.shape, (len(self.pos) + len(self.neg), model.num_units))
        self.assertEqual(r.dtype, np.float32)
        self.assertTrue(np.all(np.isfinite(r)))
        self.assertEqual(model.pooled_responses([]).shape, (0, model.num_units))

    def test_pooled_responses_match_the_table(self):
        labels = np.r_[np.ones(len(self.pos)), np.zeros(len(self.neg))]
        units = self.table.units()
        top = units[0]
        col = self.responses[:, top.unit_id]
        self.assertGreater(col[labels == 1].mean(), col[labels == 0].mean())
        # AP, on_p50 and off_mean recomputed in numpy, for the best units and some further down
        for rank in list(range(10)) + [100, 1000, 5000, 10000, len(units) - 1]:
            u = units[rank]
            col = self.responses[:, u.unit_id].astype(np.float64)
            self.assertAlmostEqual(average_precision(col, labels), u.ap, delta=1e-5, msg=rank)
            self.assertAlmostEqual(float(np.percentile(col[labels == 1], 50)), u.on_p50,
                                   delta=1e-5 * max(1, abs(u.on_p50)), msg=rank)
            self.assertAlmostEqual(float(col[labels == 0].mean()), u.off_mean,
                                   delta=1e-5 * max(1, abs(u.off_mean)), msg=rank)

    def test_threads_and_top_n(self):
        t = model.rank(self.pos, self.neg, concept="football", threads=2, top_n=100)
        self.assertEqual(len(t), 100)
        self.assertEqual(t.total_units, model.num_units)
        self.assertEqual([(u.unit_id, u.ap) for u in t.units()],
                         [(u.unit_id, u.ap) for u in self.table.units(100)])
        r2 = model.pooled_responses(self.pos[:5], threads=2)
        np.testing.assert_array_equal(r2, self.responses[:5])

    def test_resumable_ranking(self):
        with model.ranking(self.pos, self.neg, concept="football") as r:
            self.assertEqual((r.done, r.total), (0, len(self.pos) + len(self.neg)))
            with self.assertRaises(selfcond.Error) as cm:
                r.finish()
            self.assertEqual(cm.exception.code, selfcond.Status.FAILED_PRECONDITION)
            with self.assertRaises(selfcond.Error):
                r.responses()
            self.assertEqual(r.step(7), (7, r.total))
            r.run(batch=16)
            self.assertTrue(r.finished)
            np.testing.assert_allclose(r.responses(), self.responses, rtol=0, atol=1e-6)
            t = r.finish()
        self.assertTrue(r.closed)
        self.assertEqual(t.units(20), self.table.units(20))

    def test_progress_false_cancels(self):
        with self.assertRaises(selfcond.Error) as cm:
            model.rank(self.pos, self.neg, progress=lambda d, t: d < 8)
        self.assertEqual(cm.exception.code, selfcond.Status.CANCELLED)
        with self.assertRaises(selfcond.Error) as cm:
            model.pooled_responses(self.pos, progress=lambda d, t: False)
        self.assertEqual(cm.exception.code, selfcond.Status.CANCELLED)

    def test_progress_exception_is_reraised(self):
        calls = []

        def boom(done, total):
            calls.append(done)
            if done > 0:
                raise KeyError("from progress")

        with self.assertRaises(KeyError):
            model.rank(self.pos, self.neg, progress=boom)
        self.assertEqual(len(calls), 2, "the ranking went on after the exception")
        with self.assertRaises(ZeroDivisionError):
            model.pooled_responses(self.pos, progress=lambda d, t: 1 / 0)

    def test_empty_class_is_an_error(self):
        with self.assertRaises(selfcond.Error) as cm:
            model.rank(self.pos, [])
        self.assertEqual(cm.exception.code, selfcond.Status.INVALID_ARGUMENT)


class GenerateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.experts = model.load_experts(EXPERTS)

    def test_greedy_with_and_without_experts(self):
        with model.session() as s:
            plain = s.generate(PROMPT, max_new_tokens=30, temperature=0)
            self.assertTrue(plain.text.strip())
            self.assertEqual(plain.new_tokens, 30)
            self.assertEqual(plain.tokens, 30)
            self.assertEqual(plain.stop, "max_tokens")
            self.assertEqual(plain.prompt_tokens, len(model.tokenize(PROMPT)))
            self.assertEqual(len(plain.token_ids), 30)
            self.assertEqual(model.detokenize(plain.token_ids), plain.text)
            self.assertEqual(s.generate(PROMPT, max_new_tokens=30, temperature=0).text,
                             plain.text, "greedy is not deterministic")

            s.set_forcing([(self.experts, 50)])
            self.assertEqual(s.forcing, [(self.experts.concept, 50)])
            forced = s.generate(PROMPT, max_new_tokens=30, temperature=0)
            self.assertTrue(forced.text.strip())
            self.assertNotEqual(forced.text, plain.text)
            print(f"\n  unconditioned: {plain.text!r}\n  football k=50: {forced.text!r}",
                  file=sys.stderr)

            s.clear_forcing()
            self.assertEqual(s.generate(PROMPT, max_new_tokens=30, temperature=0).text,
                             plain.text)

    def test_forcing_variants(self):
        with model.session(kv="f16", threads=2) as s:
            s.set_forcing(self.experts, value="on_p90", only_last_token=True)  # all units
            self.assertEqual(s.forcing, [(self.experts.concept, len(self.experts))])
            self.assertTrue(s.generate(PROMPT, max_new_tokens=5, temperature=0).new_tokens > 0)
            s.set_forcing([(self.experts, 10), (model.load_experts(EXPERTS), 20)], value="zero")
            with self.assertRaises(ValueError):
                s.set_forcing([(self.experts, 10)], value="max")
            with self.assertRaises(selfcond.Error) as cm:
                s.set_forcing([(self.experts, -1)])
            self.assertEqual(cm.exception.code, selfcond.Status.INVALID_ARGUMENT)

    def test_steering_vector_and_logit_bias(self):
        vec = model.steering_vector(CONCEPT, layer=2)
        self.assertEqual(len(vec), model.info.n_embd)
        self.assertGreater(sum(x * x for x in vec), 0)
        bias = model.concept_logit_bias(CONCEPT, beta=10.0)
        self.assertTrue(bias)
        self.assertTrue(all(b == 10.0 for _, b in bias))
        words = {model.detokenize([t]).strip().lower() for t, _ in bias}
        with model.session() as s:
            plain = s.generate(PROMPT, max_new_tokens=20, temperature=0)
            s.set_logit_bias(bias)
            biased = s.generate(PROMPT, max_new_tokens=20, temperature=0)
            # A strong bias makes the greedy text use the concept's words.
            self.assertTrue(any(w in biased.text.lower() for w in words), biased.text)
            s.set_logit_bias([])
            s.set_steering(vec, layer=2, alpha=8.0)
            steered = s.generate(PROMPT, max_new_tokens=20, temperature=0)
            self.assertNotEqual(steered.text, plain.text)
            s.set_steering(None)
            self.assertEqual(s.generate(PROMPT, max_new_tokens=20, temperature=0).text,
                             plain.text)
            with self.assertRaises(selfcond.Error) as cm:
                s.set_steering(vec, layer=model.info.n_layer)
            self.assertEqual(cm.exception.code, selfcond.Status.OUT_OF_RANGE)
            with self.assertRaises(selfcond.Error):
                s.set_steering(vec[:-1], layer=0)
        # -1 is the middle block (the C API's default); other negative blocks are refused.
        self.assertEqual(model.steering_vector(CONCEPT, layer=-1),
                         model.steering_vector(CONCEPT, layer=model.info.n_layer // 2))
        with self.assertRaises(selfcond.Error):
            model.steering_vector(CONCEPT, layer=-2)

    def test_engine_operations_reach_python(self):
        """Choose-k, compare methods and the unit trace: the C API's projection of the Engine,
        generated declarations (_capi.py) and all."""
        experts = model.load_experts(EXPERTS)
        grid = {"prompts": [PROMPT, "In the city"], "seeds": 2, "new_tokens": 8}
        k, report = model.choose_k(experts, CONCEPT, candidates=[5, 300], target_rate=0.25,
                                   ppl_budget=1000, grid=grid)
        self.assertIn(k, (0, 5, 300))
        self.assertEqual(report["k"], k)
        self.assertEqual(report["tried"][0]["k"], 0)
        self.assertTrue(report["words"])
        seen = []
        cmp = model.compare_methods(experts, CONCEPT, methods="bias", betas=[10], grid=grid,
                                    progress=lambda d, t: seen.append((d, t)))
        self.assertEqual([p["method"] for p in cmp["points"]], ["none", "bias"])
        self.assertEqual(seen[-1], (8, 8))
        with self.assertRaises(TypeError):
            model.compare_methods(experts, CONCEPT, nonsense=1)
        with self.assertRaises(selfcond.Error) as cm:
            model.compare_methods(experts, CONCEPT, methods="prompting", grid=grid)
        self.assertEqual(cm.exception.code, selfcond.Status.INVALID_ARGUMENT)
        best = experts[0]
        trace = model.trace_unit("The striker scored a goal.", best.unit_id)
        self.assertEqual("".join(t for t, _ in trace), "The striker scored a goal.")
        pooled = model.pooled_responses(["The striker scored a goal."])[0, best.unit_id]
        self.assertAlmostEqual(max(v for _, v in trace), float(pooled), places=3)
        words = model.concept_words(CONCEPT, max_words=5)
        self.assertEqual(len(words), 5)
        bias = model.word_logit_bias([words[0]["word"]], 2.0)
        self.assertTrue(bias and all(b == 2.0 for _, b in bias))
        self.assertIn("xnnpack", selfcond.build_info()["backends"] + ["xnnpack"])
        self.assertEqual(selfcond.build_info()["version"], selfcond.version())

    def test_eval_keeps_the_context(self):
        ids = model.tokenize("Once upon a time, the team")
        with model.session() as a, model.session() as b:
            whole = a.eval(ids)
            b.eval(ids[:-1], logits=False)
            self.assertEqual(b.info["n_past"], len(ids) - 1)
            last = b.eval(ids[-1:])
            self.assertLess(float(np.max(np.abs(whole - last))),
                            1e-3 * float(np.max(np.abs(whole))))
            greedy = a.generate(PROMPT, max_new_tokens=1, temperature=0)
            a.reset()
            self.assertEqual(a.info["n_past"], 0)
            first = a.eval(model.tokenize(PROMPT))
            self.assertEqual(int(np.argmax(first)), greedy.token_ids[0])

    def test_sampling_is_seeded(self):
        with model.session() as s:
            kw = dict(max_new_tokens=20, temperature=0.9, top_k=40, top_p=0.95)
            a = s.generate(PROMPT, seed=7, **kw)
            self.assertEqual(s.generate(PROMPT, seed=7, **kw).text, a.text)
            self.assertNotEqual(s.generate(PROMPT, seed=8, **kw).text, a.text)

    def test_on_token_streams_and_can_stop(self):
        with model.session() as s:
            pieces = []
            r = s.generate(PROMPT, max_new_tokens=10, temperature=0, on_token=pieces.append)
            self.assertEqual("".join(pieces), r.text)
            self.assertEqual(r.stop, "max_tokens")

            seen = []
            r = s.generate(PROMPT, max_new_tokens=20, temperature=0,
                           on_token=lambda p: (seen.append(p), len(seen) < 3)[1])
            self.assertEqual(r.stop, "cancelled")
            self.assertEqual(len(seen), 3)
            self.assertEqual(r.new_tokens, 3)

            r = s.generate(PROMPT, max_new_tokens=20, on_token=lambda p: False)
            self.assertEqual((r.stop, r.new_tokens), ("cancelled", 1))

    def test_on_token_exception_is_reraised(self):
        with model.session() as s:
            n = []

            def boom(piece):
                n.append(piece)
                if len(n) == 2:
                    raise ValueError("from on_token")

            with self.assertRaisesRegex(ValueError, "from on_token"):
                s.generate(PROMPT, max_new_tokens=20, temperature=0, on_token=boom)
            self.assertEqual(len(n), 2, "generation went on after the exception")
            # the session is still usable
            self.assertEqual(s.generate(PROMPT, max_new_tokens=4, temperature=0).new_tokens, 4)

    def test_stream(self):
        with model.session() as s:
            full = s.generate(PROMPT, max_new_tokens=15, temperature=0)
            st = s.stream(PROMPT, max_new_tokens=15, temperature=0)
            self.assertEqual("".join(st), full.text)
            self.assertEqual(st.result.text, full.text)
            self.assertEqual(st.result.stop, "max_tokens")

            st = s.stream(PROMPT, max_new_tokens=40, temperature=0)
            first = next(iter(st))
            st.close()  # leaving early cancels the generation
            self.assertTrue(first)
            self.assertEqual(st.result.stop, "cancelled")
            self.assertLess(st.result.new_tokens, 40)
            self.assertEqual(s.generate(PROMPT, max_new_tokens=3, temperature=0).new_tokens, 3)

            with self.assertRaises(selfcond.Error):
                list(s.stream("", max_new_tokens=3))

    def test_one_call_at_a_time(self):
        with model.session() as s:
            inner = []

            def reenter(piece):
                try:
                    s.generate(PROMPT, max_new_tokens=2)
                except selfcond.Error as e:
                    inner.append(e.code)
                return False

            s.generate(PROMPT, max_new_tokens=5, on_token=reenter)
            self.assertEqual(inner, [selfcond.Status.FAILED_PRECONDITION])

    def test_sessions_on_threads(self):
        results = {}

        def run(i):
            with model.session() as s:
                results[i] = s.generate(PROMPT, max_new_tokens=12, temperature=0).text

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), 2)
        self.assertEqual(results[0], results[1])


class AppFeaturesTest(unittest.TestCase):
    """The C API 0.11 features for apps, through Python: each against an independent path."""

    def greedy(self, m, prompt, n, **kw):
        with selfcond.Session(m) as s:
            return s.generate(prompt, max_new_tokens=n, temperature=0, stop_at_eos=False, **kw)

    def test_from_fd_and_from_buffer(self):
        data = Path(MODEL).read_bytes()
        want = self.greedy(model, PROMPT, 10).text
        with tempfile.TemporaryDirectory() as d:
            bundle = Path(d) / "bundle.bin"
            bundle.write_bytes(b"x" * 4160 + data + b"tail")
            with open(bundle, "rb") as f:
                m = selfcond.Model.from_fd(f, offset=4160, length=len(data))
            self.assertEqual(m.info.hash, model.info.hash)
            self.assertEqual(self.greedy(m, PROMPT, 10).text, want)
            m.close()
            with open(bundle, "rb") as f, self.assertRaises(selfcond.Error) as e:
                selfcond.Model.from_fd(f, offset=len(data) * 2)
            self.assertEqual(e.exception.code, selfcond.Status.OUT_OF_RANGE)
        for buf in (data, bytearray(data)):
            m = selfcond.Model.from_buffer(buf)
            self.assertEqual(self.greedy(m, PROMPT, 10).text, want)
            m.close()
        with self.assertRaises(TypeError):
            selfcond.Model.from_buffer(memoryview(data))  # read-only and not bytes

    def test_memory_budget_and_progress(self):
        seen = []
        m = selfcond.Model(MODEL, progress=lambda d, t: seen.append((d, t)))
        self.assertEqual(seen[-1], (1000, 1000))
        self.assertEqual([d for d, _ in seen], sorted(d for d, _ in seen))
        with self.assertRaises(selfcond.Error) as e:
            selfcond.Model(MODEL, progress=lambda d, t: d < 300)
        self.assertEqual(e.exception.code, selfcond.Status.CANCELLED)

        def boom(d, t):
            raise KeyError("from the callback")
        with self.assertRaises(KeyError):
            selfcond.Model(MODEL, progress=boom)
        with self.assertRaises(selfcond.Error) as e:
            selfcond.Model(MODEL, max_memory=1 << 20)
        self.assertEqual(e.exception.code, selfcond.Status.RESOURCE_EXHAUSTED)
        self.assertIn("max_memory_bytes", e.exception.message)
        with self.assertRaises(selfcond.Error) as e:
            selfcond.Session(m, max_memory=1 << 16)
        self.assertEqual(e.exception.code, selfcond.Status.RESOURCE_EXHAUSTED)
        selfcond.Session(m, max_memory=1 << 30).close()
        m.close()

    def test_log_callback_and_forced_units(self):
        lines = []
        selfcond.set_log_callback(lambda level, msg: lines.append((level, msg)))
        try:
            with self.assertRaises(selfcond.Error):
                selfcond.Model("/nonexistent/m.scm")
            self.assertIn(("error", ), [(lv, ) for lv, m in lines if "/nonexistent/m.scm" in m])
            experts = model.load_experts(EXPERTS)
            with selfcond.Session(model) as s:
                self.assertEqual(s.info["forced_units"], 0)
                s.set_forcing([(experts, 20)])
                self.assertEqual(s.info["forced_units"], 20)
                s.set_forcing([(experts, len(experts) + 100)])
                self.assertEqual(s.info["forced_units"], len(experts))
                self.assertTrue(any(lv == "warn" and "top_k" in m for lv, m in lines), lines)
        finally:
            selfcond.set_log_callback(None)
        n = len(lines)
        with self.assertRaises(selfcond.Error):
            selfcond.Model("/nonexistent/m.scm")
        self.assertEqual(len(lines), n)

    def test_keep_context_stop_strings_and_penalty(self):
        whole = self.greedy(model, PROMPT, 16).text
        with selfcond.Session(model) as s:
            a = s.generate(PROMPT, max_new_tokens=8, temperature=0, stop_at_eos=False,
                           keep_context=True)
            b = s.generate("", max_new_tokens=8, temperature=0, stop_at_eos=False,
                           keep_context=True)
            self.assertEqual(a.text + b.text, whole)
            self.assertEqual(s.info["n_past"], a.prompt_tokens + 16)
        at = next(i for i in range(8, len(whole) - 3) if whole.find(whole[i:i + 3]) == i)
        r = self.greedy(model, PROMPT, 16, stop=[whole[at:at + 3]])
        self.assertEqual(r.stop, "stop_string")
        self.assertEqual(r.text, whole[:at])
        with self.assertRaises(selfcond.Error) as e:
            self.greedy(model, PROMPT, 4, stop=[""])
        self.assertEqual(e.exception.code, selfcond.Status.INVALID_ARGUMENT)
        # The penalty against its definition on eval's logits (argmax each step).
        with selfcond.Session(model) as s:
            ids = model.tokenize(PROMPT)
            logits = s.eval(ids)
            hist, want = list(ids), []
            for _ in range(10):
                for t in set(hist[-64:]):
                    logits[t] = logits[t] / 3.0 if logits[t] > 0 else logits[t] * 3.0
                nxt = int(np.argmax(logits))
                want.append(nxt)
                hist.append(nxt)
                logits = s.eval([nxt])
        got = self.greedy(model, PROMPT, 10, repeat_penalty=3.0).token_ids
        self.assertEqual(got, want)

    def test_abort_from_another_thread(self):
        with selfcond.Session(model) as s:
            s.eval([464, 983])
            started = threading.Event()
            done = threading.Event()

            def aborter():
                while not done.is_set():
                    s.abort()
                    started.set()
                    done.wait(0.001)
            t = threading.Thread(target=aborter)
            t.start()
            started.wait()
            try:
                with self.assertRaises(selfcond.Error) as e:
                    s.eval([262] * (s.info["n_ctx"] - 2))
            finally:
                done.set()
                t.join()
            self.assertEqual(e.exception.code, selfcond.Status.CANCELLED)
            self.assertEqual(s.info["n_past"], 2)
            s.reset()
            r = s.generate(PROMPT, max_new_tokens=3, temperature=0)
            self.assertEqual(r.new_tokens, 3)


class LifetimeTest(unittest.TestCase):
    def test_session_keeps_model_alive(self):
        m = selfcond.Model(MODEL)
        s = m.session()
        e = m.load_experts(EXPERTS)
        del m
        gc.collect()
        s.set_forcing([(e, 50)])
        del e
        gc.collect()
        self.assertGreater(s.generate(PROMPT, max_new_tokens=5, temperature=0).new_tokens, 0)
        s.close()
        s.close()  # twice is fine
        with self.assertRaises(ValueError):
            s.generate(PROMPT)

    def test_closing_model_closes_sessions(self):
        m = selfcond.Model(MODEL)
        s = m.session()
        r = m.ranking(["a goal"], ["a cat"])
        e = m.load_experts(EXPERTS)
        m.close()
        self.assertTrue(m.closed and s.closed and r.closed)
        self.assertFalse(e.closed)
        self.assertEqual(e.units(1)[0].layer, model.load_experts(EXPERTS).units(1)[0].layer)
        with self.assertRaises(ValueError):
            m.tokenize("x")
        with self.assertRaises(ValueError):
            s.generate(PROMPT)

    def test_with_statement(self):
        with selfcond.Model(MODEL) as m, m.session() as s:
            self.assertGreater(s.generate(PROMPT, max_new_tokens=2).new_tokens, 0)
        self.assertTrue(s.closed and m.closed)


if __name__ == "__main__":
    unittest.main()
