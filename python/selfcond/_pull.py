"""selfcond.pull: download a checkpoint from the Hugging Face hub and convert it to a model file.

Downloading and converting are CLI tools that libselfcond (the C API that apps and the WASM
module embed) deliberately does not contain, so this runs the `selfcond pull` command. It is
found through, in order: the environment variable SELFCOND_CLI; `../bin/selfcond` beside the
loaded library (an installed prefix) or `selfcond` in the library's own directory (a build
tree); `selfcond` on PATH. The environment is passed on: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE
and SELFCOND_CACHE (default $XDG_CACHE_HOME/selfcond) work as for the command.
"""

import os
import shutil
import subprocess
import sys

from ._core import Error, Status

__all__ = ["pull", "PullError", "cli_path"]


class PullError(Error):
    """`selfcond pull` failed: .message is the command's error message, .returncode its exit
    status (.code: NOT_FOUND, INVALID_ARGUMENT or, for the rest, FAILED_PRECONDITION)."""

    def __init__(self, message, returncode):
        low = message.lower()
        if "not found" in low:
            code = Status.NOT_FOUND
        elif "bad repo id" in low or "bad revision" in low or returncode == 2:
            code = Status.INVALID_ARGUMENT
        elif "sha256 mismatch" in low:
            code = Status.DATA_LOSS
        else:
            code = Status.FAILED_PRECONDITION
        self.returncode = returncode
        super().__init__(code, message)


def cli_path():
    """The `selfcond` command that pull() runs (see the module docstring), or None."""
    env = os.environ.get("SELFCOND_CLI")
    if env:
        return env
    try:
        from ._lib import library_path
        lib = library_path()
    except Exception:  # no library: only PATH is left
        lib = None
    if lib and os.path.sep in lib:
        d = os.path.dirname(os.path.realpath(lib))
        for p in (os.path.join(d, "..", "bin", "selfcond"), os.path.join(d, "selfcond")):
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return os.path.normpath(p)
    return shutil.which("selfcond")


def pull(repo, out=None, weights="int8", keep_float=False, revision=None, name=None,
         progress=True):
    """Downloads repo ("owner/name", at revision: a branch, tag or commit; default "main") from
    the Hugging Face hub into the cache and converts it to the model file out (default:
    "<name>.scm" in the current directory, name being the repo's last path component).
    weights: "int8" or "int4"; keep_float: also store float32 weights. The command's progress
    goes to stderr (progress=False: silent). Returns the output path; raises PullError (a
    selfcond.Error) with the command's message on failure, when no file is written.
    """
    cli = cli_path()
    if not cli:
        raise PullError("the selfcond command was not found: set SELFCOND_CLI to it, or put it "
                        "on PATH (it is built beside the library: build/<dir>/selfcond)", 127)
    if weights not in ("int8", "int4"):
        raise PullError(f"weights must be 'int8' or 'int4', not {weights!r}", 2)
    spec = repo if revision is None else f"{repo}@{revision}"
    if out is None:
        out = repo.rstrip("/").rsplit("/", 1)[-1] + ".scm"
    args = [cli, "pull", spec, "--out", os.fspath(out), "--weights", weights]
    if keep_float:
        args.append("--keep-float")
    if name is not None:
        args += ["--name", name]
    tail = []
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        # Progress lines go to our stderr as they come; the last ones are kept for the message.
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            if progress:
                sys.stderr.write(line)
                sys.stderr.flush()
            tail = (tail + [line])[-20:]
        stdout = proc.stdout.read().decode("utf-8", "replace")
        rc = proc.wait()
    if progress and stdout:
        sys.stderr.write(stdout)
    if rc != 0:
        errors = [l.strip() for l in tail if "error:" in l]
        message = errors[-1].split("error:", 1)[1].strip() if errors else "".join(tail).strip()
        raise PullError(message or f"selfcond pull exited with status {rc}", rc)
    return os.path.abspath(out)
