"""selfcond.pull against a local Hugging Face hub (scripts/hf_test_server.py, started in this
process) serving the demo checkpoint (<repo>/../shared/models/selfcond-mini-30m) as
selfcond/mini-30m. Runs the `selfcond` command (selfcond.pull finds it through SELFCOND_CLI,
beside the library, or on PATH); skipped when there is none, or when the shared checkpoint is
missing.
"""
import contextlib
import importlib.util
import io
import os
import shutil
import tempfile
import unittest
from pathlib import Path

import selfcond

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = Path(os.environ.get("SELFCOND_TEST_CHECKPOINT",
                                 REPO.parent / "shared/models/selfcond-mini-30m"))
SERVER = REPO / "scripts/hf_test_server.py"


def load_server():
    spec = importlib.util.spec_from_file_location("hf_test_server", SERVER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@unittest.skipUnless(CHECKPOINT.is_dir() and SERVER.is_file(), "no shared checkpoint / server")
class PullTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cli = selfcond._pull.cli_path()
        if not cls.cli:
            raise unittest.SkipTest("no selfcond command (set SELFCOND_CLI)")
        cls.tmp = tempfile.mkdtemp(prefix="selfcond-pytest-pull-")
        repo = Path(cls.tmp, "hub", "selfcond", "mini-30m")
        repo.mkdir(parents=True)
        for f in ("config.json", "vocab.json", "merges.txt", "model.safetensors"):
            os.symlink(CHECKPOINT / f, repo / f)
        server = load_server()
        cls.state, port, _, cls.stop = server.serve(os.path.join(cls.tmp, "hub"))
        cls.env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}",
                   "SELFCOND_CACHE": os.path.join(cls.tmp, "cache")}
        cls.saved = {k: os.environ.get(k) for k in (*cls.env, "HF_TOKEN", "HF_HUB_OFFLINE")}
        os.environ.update(cls.env)
        os.environ.pop("HF_TOKEN", None)
        os.environ.pop("HF_HUB_OFFLINE", None)

    @classmethod
    def tearDownClass(cls):
        cls.stop()
        for k, v in cls.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_pull_converts_and_loads(self):
        out = os.path.join(self.tmp, "mini.scm")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            path = selfcond.pull("selfcond/mini-30m", out=out, weights="int8")
        self.assertEqual(path, os.path.abspath(out))
        self.assertIn("download", err.getvalue())  # the command's progress, passed on
        with selfcond.Model(path) as model:
            self.assertEqual(model.info.n_layer, 6)
            self.assertEqual(model.info.name, "mini-30m")
        # Cached: a second pull (by the default output name, in a directory of its own)
        # downloads no file.
        with self.state.lock:
            self.state.requests.clear()
        cwd = os.getcwd()
        os.chdir(self.tmp)
        try:
            path2 = selfcond.pull("selfcond/mini-30m", progress=False)
        finally:
            os.chdir(cwd)
        self.assertEqual(os.path.realpath(path2),
                         os.path.realpath(os.path.join(self.tmp, "mini-30m.scm")))
        with open(path, "rb") as a, open(path2, "rb") as b:
            self.assertEqual(a.read(), b.read())
        with self.state.lock:
            files = [r for r in self.state.requests if "/resolve/" in r["path"] or
                     r["path"].startswith("/cdn/")]
        self.assertEqual(files, [])

    def test_errors_raise_with_the_message(self):
        out = os.path.join(self.tmp, "nope.scm")
        with self.assertRaises(selfcond.PullError) as cm:
            selfcond.pull("selfcond/does-not-exist", out=out, progress=False)
        self.assertIsInstance(cm.exception, selfcond.Error)
        self.assertEqual(cm.exception.code, selfcond.Status.NOT_FOUND)
        self.assertIn("selfcond/does-not-exist", cm.exception.message)
        self.assertFalse(os.path.exists(out))
        with self.assertRaises(selfcond.PullError) as cm:
            selfcond.pull("../evil", out=out, progress=False)
        self.assertEqual(cm.exception.code, selfcond.Status.INVALID_ARGUMENT)


if __name__ == "__main__":
    unittest.main()
