"""The Pythonic API over the C API (see selfcond/__init__.py for an overview)."""

import ctypes
import enum
import math
import os
import queue
import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from . import _lib as L

__all__ = [
    "Error", "Status", "ModelInfo", "ExpertUnit", "GenerateResult", "Model", "Experts",
    "Session", "Ranking", "TokenStream", "version", "build_info", "set_log_callback",
]


class Status(enum.IntEnum):
    """selfcond_status."""
    OK = 0
    INVALID_ARGUMENT = 1
    NOT_FOUND = 2
    OUT_OF_RANGE = 3
    FAILED_PRECONDITION = 4
    DATA_LOSS = 5
    RESOURCE_EXHAUSTED = 6
    CANCELLED = 7
    INTERNAL = 8
    UNIMPLEMENTED = 9


class Error(RuntimeError):
    """A failed C API call: .code (a Status), .message (selfcond_last_error())."""

    def __init__(self, code, message):
        try:
            code = Status(code)
        except ValueError:
            pass
        self.code = code
        self.message = message
        name = code.name if isinstance(code, Status) else str(code)
        super().__init__(f"{name}: {message}" if message else name)


_PRECISION = {"int8": 0, "f32": 1}
_KV = {"f32": 0, "f16": 1}
_FORCING = {"on_p50": 0, "on_p90": 1, "off_mean": 2, "zero": 3}
_FORMAT = {"json": 0, "csv": 1}
_STOP = {0: "max_tokens", 1: "eos", 2: "context_full", 3: "cancelled", 4: "stop_string"}  # selfcond_stop
# params fields that hold an enum, by field name
_ENUM_FIELDS = {"precision": _PRECISION, "forcing": _FORCING, "kv_type": _KV}
_SITE_KINDS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def _choice(table, value, what):
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {what} {value!r}; one of: {', '.join(table)}") from None


def _check(status):
    if status != 0:
        raise Error(status, L.load().selfcond_last_error().decode("utf-8", "replace"))


def _encode(text, what="text"):
    if isinstance(text, bytes):
        b = text
    elif isinstance(text, str):
        b = text.encode("utf-8")
    else:
        raise TypeError(f"{what} must be str, not {type(text).__name__}")
    if b"\0" in b:
        raise ValueError(f"{what} contains a NUL character")
    return b


def _str_array(strings, what):
    if isinstance(strings, (str, bytes)):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    enc = [_encode(s, f"{what} sentence") for s in strings]
    return (ctypes.c_char_p * max(1, len(enc)))(*enc), len(enc)


def _take_string(ptr):
    """Copies and frees a string returned by a selfcond_*_to_string function."""
    lib = L.load()
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        lib.selfcond_string_free(ptr)


def version():
    """The library's version, e.g. "0.11.0"."""
    return L.load().selfcond_version().decode()


def build_info():
    """Build facts: {"version", "backends" (the GEMM engines this CPU can use), "pthreads",
    "cores"}."""
    import json
    out = ctypes.c_void_p()
    _check(L.load().selfcond_build_info_to_string(ctypes.byref(out)))
    return json.loads(_take_string(out))


_LOG_LEVELS = {0: "error", 1: "warn", 2: "info"}
_log_callback = None  # the ctypes function the library holds (kept alive here)


def set_log_callback(fn: Optional[Callable[[str, str], None]]):
    """Sends the library's log lines to fn(level, message), level "error" (every failed call),
    "warn" (e.g. a forcing's top_k beyond its table) or "info" (loads, sessions); None: none.
    Process-wide (selfcond_set_log_callback); an exception fn raises is ignored."""
    global _log_callback
    lib = L.load()
    if fn is None:
        lib.selfcond_set_log_callback(L.LOG_CALLBACK(), None)
        _log_callback = None
        return

    def trampoline(level, message, _user):
        try:
            fn(_LOG_LEVELS.get(level, str(level)),
               ctypes.string_at(message).decode("utf-8", "replace"))
        except Exception:  # noqa: BLE001 - a log sink must not break the call that logged
            pass

    cb = L.LOG_CALLBACK(trampoline)
    lib.selfcond_set_log_callback(cb, None)
    _log_callback = cb


def _fill(struct, keep, **options):
    """Sets a params struct's fields from keyword options, the C API's conventions applied: an
    array field `x` with its length `n_x` takes a Python sequence; an enum field takes its name
    ("int8", "on_p50"); a nested params struct takes a dict. `keep` collects the ctypes arrays
    the struct points into (they must live as long as the struct is used)."""
    fields = dict(struct._fields_)
    for name, value in options.items():
        if name not in fields or name.startswith("n_") and name[2:] in fields:
            raise TypeError(f"unknown option {name!r} for {type(struct).__name__}; one of: "
                            f"{', '.join(n for n in fields if not (n.startswith('n_') and n[2:] in fields))}")
        ftype = fields[name]
        if "n_" + name in fields:  # an array and its length
            values = list(value)
            if ftype == ctypes.POINTER(ctypes.c_char_p):
                arr = (ctypes.c_char_p * max(1, len(values)))(
                    *[_encode(v, name) for v in values])
            else:
                elem = ftype._type_ if hasattr(ftype, "_type_") and ftype is not ctypes.c_void_p \
                    else ctypes.c_double
                arr = (elem * max(1, len(values)))(*values)
            keep.append(arr)
            setattr(struct, name, ctypes.cast(arr, ftype) if ftype is not ctypes.c_void_p
                    else ctypes.cast(arr, ctypes.c_void_p))
            setattr(struct, "n_" + name, len(values))
        elif isinstance(ftype, type) and issubclass(ftype, ctypes.Structure):
            _fill(getattr(struct, name), keep, **dict(value))
        elif name in _ENUM_FIELDS:
            setattr(struct, name, _choice(_ENUM_FIELDS[name], value, name))
        elif ftype is ctypes.c_char_p:
            b = _encode(value, name)
            keep.append(b)
            setattr(struct, name, b)
        else:
            setattr(struct, name, value)
    return struct


class _Callback:
    """Runs a Python callback from C: an exception is stored (and the C call cancelled), to be
    re-raised by reraise() after the C call returns."""

    def __init__(self):
        self.exc = None

    def call(self, fn, *args):
        if self.exc is not None:
            return 0
        try:
            r = fn(*args)
        except BaseException as e:  # noqa: B902 - KeyboardInterrupt too: cancel, then re-raise
            self.exc = e
            return 0
        return 0 if r is False else 1

    def reraise(self):
        if self.exc is not None:
            e, self.exc = self.exc, None
            raise e


class _Handle:
    """An owned C handle: freed by close(), __exit__ or __del__."""

    _ptr = None
    _free = None

    def _adopt(self, ptr, free_fn):
        self._ptr = ptr
        self._free = free_fn  # kept on the object: module globals may be gone at shutdown

    @property
    def closed(self):
        return self._ptr is None

    def _p(self):
        if self._ptr is None:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._ptr

    def close(self):
        ptr, self._ptr = self._ptr, None
        if ptr is not None and self._free is not None:
            self._free(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---- models -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    name: str
    hash: str
    n_layer: int
    n_embd: int
    n_head: int
    n_ctx: int
    n_inner: int
    vocab_size: int
    eos_id: int
    num_units: int
    arch: str = "gpt2"  # "gpt2" | "llama" (the Llama family)
    n_head_kv: int = 0
    head_dim: int = 0
    bos_id: int = -1
    threads: int = 1  # of the model's thread pool

    def as_dict(self):
        return dict(self.__dict__)


class _Child(_Handle):
    """A handle that needs its Model's C object alive (sessions, rankings)."""

    def _attach(self, model, ptr, free_fn):
        self._model = model  # keeps the Model (and its C object) alive
        self._adopt(ptr, free_fn)
        model._children.add(self)
        model._live_children += 1

    def close(self):
        was_open = self._ptr is not None
        super().close()
        if was_open:
            self._model._child_closed()


class Model(_Handle):
    """A selfcond model (.scm file). Immutable; share it between sessions and threads.

    Model(path, verify_hash=True, need_f32=False, threads=0, max_memory=0, progress=None);
    Model.from_bytes(data, ...), Model.from_buffer(buffer, ...) (no copy),
    Model.from_fd(fd, offset, length, ...). The file's SHA-256 is checked unless
    verify_hash=False (a trusted file, faster load). threads: the model's thread pool (0: every
    core), which threaded sessions (threads != 1), rankings with threads != 1, steering vectors,
    choose_k and compare_methods run on. max_memory: bytes the model may hold (a bigger one
    fails with RESOURCE_EXHAUSTED; 0: no limit). progress(done, total) follows the load (per
    mille) and cancels it by returning False."""

    def __init__(self, path, verify_hash=True, need_f32=False, threads=0, max_memory=0,
                 progress=None, *, _data=None, _fd=None, _view=None):
        lib = L.load()
        self._children = weakref.WeakSet()
        self._live_children = 0
        self._close_pending = False
        params = L.ModelParams(int(bool(verify_hash)), int(bool(need_f32)), int(threads),
                               int(max_memory))
        cb = _Callback()
        if progress is not None:
            c_progress = L.PROGRESS_CALLBACK(lambda d, t, _u: cb.call(progress, d, t))
            params.progress = c_progress
        out = ctypes.c_void_p()
        self._view = None
        if _data is not None:
            buf = ctypes.create_string_buffer(bytes(_data), len(_data))
            status = lib.selfcond_model_load_memory(buf, len(_data), ctypes.byref(params),
                                                    ctypes.byref(out))
            self.path = None
        elif _fd is not None:
            fd, offset, length = _fd
            status = lib.selfcond_model_load_fd(int(fd), int(offset), int(length),
                                                ctypes.byref(params), ctypes.byref(out))
            self.path = None
        elif _view is not None:
            keep, address, size = _view
            status = lib.selfcond_model_load_view(address, size, ctypes.byref(params),
                                                  ctypes.byref(out))
            self._view = keep  # the bytes the model uses in place: alive as long as it
            self.path = None
        else:
            self.path = os.fspath(path)
            status = lib.selfcond_model_load_file(os.fsencode(self.path), ctypes.byref(params),
                                                  ctypes.byref(out))
        cb.reraise()
        _check(status)
        self._adopt(out.value, lib.selfcond_model_free)
        self.need_f32 = bool(need_f32)
        ci = L.ModelInfo()
        lib.selfcond_model_get_info(self._ptr, ctypes.byref(ci))
        self.info = ModelInfo(
            name=ci.name.decode("utf-8", "replace"), hash=ci.hash.decode(), n_layer=ci.n_layer,
            n_embd=ci.n_embd, n_head=ci.n_head, n_ctx=ci.n_ctx, n_inner=ci.n_inner,
            vocab_size=ci.vocab_size, eos_id=ci.eos_id, num_units=ci.num_units,
            arch=ci.arch.decode(), n_head_kv=ci.n_head_kv, head_dim=ci.head_dim,
            bos_id=ci.bos_id, threads=ci.threads)
        self._site_names = {}

    @classmethod
    def from_bytes(cls, data, verify_hash=True, need_f32=False, threads=0, **kwargs):
        """A model from the bytes of a .scm file (copied)."""
        return cls(None, verify_hash, need_f32, threads, _data=data, **kwargs)

    @classmethod
    def from_buffer(cls, buffer, verify_hash=True, need_f32=False, threads=0, **kwargs):
        """A model using the bytes of a .scm file in place, without a copy (bytes, bytearray,
        mmap.mmap, a contiguous memoryview): the model keeps a reference to the buffer, which
        must not change while the model lives."""
        if isinstance(buffer, bytes):
            keep = buffer
            address = ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value
            size = len(buffer)
        else:
            mv = memoryview(buffer).cast("B")
            if not mv.contiguous:
                raise ValueError("from_buffer needs a contiguous buffer")
            size = mv.nbytes
            if mv.readonly:
                raise TypeError("from_buffer needs bytes or a writable buffer (bytearray, mmap); "
                                "use from_bytes to copy a read-only one")
            arr = (ctypes.c_char * max(1, size)).from_buffer(mv)
            keep, address = (mv, arr), ctypes.addressof(arr)
        return cls(None, verify_hash, need_f32, threads, _view=(keep, address, size), **kwargs)

    @classmethod
    def from_fd(cls, fd, offset=0, length=0, verify_hash=True, need_f32=False, threads=0,
                **kwargs):
        """A model stored in an open file from offset, length bytes (0: to its end), e.g. inside
        a bundle; fd (an int or an object with fileno()) may be closed afterwards."""
        fd = fd.fileno() if hasattr(fd, "fileno") else int(fd)
        return cls(None, verify_hash, need_f32, threads, _fd=(fd, offset, length), **kwargs)

    def __repr__(self):
        state = "closed" if self.closed else f"{self.info.num_units} units"
        return f"<selfcond.Model {self.info.name!r} {state}>"

    @property
    def num_units(self):
        return self.info.num_units

    # Lifetime: sessions and rankings hold the model; close() closes them first. Without an
    # explicit close the C model is freed only after its last session/ranking.
    def _child_closed(self):
        self._live_children -= 1
        if self._close_pending and self._live_children == 0:
            super().close()

    def close(self):
        """Frees the model, closing its sessions and rankings first (expert tables stay usable).
        """
        for child in list(self._children):
            child.close()
        if self._live_children > 0:
            self._close_pending = True  # only reachable at shutdown/in cycles: free later
            return
        super().close()

    def __del__(self):
        try:
            # Children hold strong references, so a model collected normally has none left; in
            # a garbage cycle the finalizers run in any order: then the last child frees it.
            if self._live_children == 0:
                _Handle.close(self)
            else:
                self._close_pending = True
        except Exception:
            pass

    # ---- tokens ----
    def tokenize(self, text) -> List[int]:
        lib = L.load()
        b = _encode(text)
        n = ctypes.c_size_t()
        cap = len(b) + 16
        while True:
            buf = (ctypes.c_int32 * cap)()
            _check(lib.selfcond_tokenize(self._p(), b, buf, cap, ctypes.byref(n)))
            if n.value <= cap:
                return list(buf[: n.value])
            cap = n.value

    def detokenize(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        arr = (ctypes.c_int32 * max(1, len(ids)))(*ids)
        out = ctypes.c_void_p()
        _check(L.load().selfcond_detokenize_to_string(self._p(), arr, len(ids),
                                                      ctypes.byref(out)))
        return _take_string(out)

    def unit_name(self, unit_id: int) -> Tuple[str, int]:
        """ml-selfcond's (layer name, unit in layer) of a unit id, e.g.
        ("transformer.h.3.mlp.c_fc:0", 17)."""
        out = ctypes.c_void_p()
        unit = ctypes.c_int()
        _check(L.load().selfcond_unit_to_string(self._p(), int(unit_id), ctypes.byref(out),
                                                ctypes.byref(unit)))
        return _take_string(out), unit.value

    def _site_name(self, site, unit_id):
        name = self._site_names.get(site)
        if name is None:
            if self.closed:
                return f"transformer.h.{site // 4}.{_SITE_KINDS[site % 4]}:0"
            name = self._site_names[site] = self.unit_name(unit_id)[0]
        return name

    # ---- expert tables ----
    def load_experts(self, path_or_text, allow_unhashed=False) -> "Experts":
        """An expert table from a file (native JSON or ml-selfcond expertise.csv), or from its
        text: bytes, or a str that starts with "{" or has a newline, is text; anything else
        (str or os.PathLike) is a path. A table of another model is refused
        (Error FAILED_PRECONDITION), and so is a table without a model hash (expertise.csv)
        unless allow_unhashed=True (then only the model's shape is checked)."""
        lib = L.load()
        out = ctypes.c_void_p()
        params = L.ExpertsParams(int(bool(allow_unhashed)))
        if isinstance(path_or_text, bytes) or (
                isinstance(path_or_text, str) and
                (path_or_text.lstrip().startswith("{") or "\n" in path_or_text)):
            b = path_or_text if isinstance(path_or_text, bytes) else path_or_text.encode()
            _check(lib.selfcond_experts_load_memory_ex(self._p(), b, len(b), ctypes.byref(params),
                                                       ctypes.byref(out)))
        else:
            path = os.fsencode(os.fspath(path_or_text))
            _check(lib.selfcond_experts_load_file_ex(self._p(), path, ctypes.byref(params),
                                                     ctypes.byref(out)))
        return Experts._wrap(self, out.value)

    def _rank_params(self, threads, top_n, precision, max_sentences):
        return L.RankParams(_choice(_PRECISION, precision, "precision"), int(threads),
                            int(max_sentences), int(top_n))

    def rank(self, positive: Sequence[str], negative: Sequence[str], concept: str = "",
             threads: int = 1, top_n: int = 0, precision: str = "int8",
             progress: Optional[Callable[[int, int], Optional[bool]]] = None,
             max_sentences: int = 0) -> "Experts":
        """Ranks every unit as an expert for a concept. progress(done, total) may return False
        to cancel (Error CANCELLED); an exception it raises cancels and is re-raised."""
        lib = L.load()
        pos, n_pos = _str_array(positive, "positive")
        neg, n_neg = _str_array(negative, "negative")
        params = self._rank_params(threads, top_n, precision, max_sentences)
        cb = _Callback()
        c_progress = (L.PROGRESS_CALLBACK(lambda d, t, _u: cb.call(progress, d, t))
                      if progress is not None else L.PROGRESS_CALLBACK())
        out = ctypes.c_void_p()
        status = lib.selfcond_rank(self._p(), _encode(concept, "concept"), pos, n_pos, neg, n_neg,
                                   ctypes.byref(params), c_progress, None, ctypes.byref(out))
        cb.reraise()
        _check(status)
        return Experts._wrap(self, out.value)

    def ranking(self, positive: Sequence[str], negative: Sequence[str], concept: str = "",
                threads: int = 1, top_n: int = 0, precision: str = "int8",
                max_sentences: int = 0) -> "Ranking":
        """A resumable ranking: step() it, then responses() and/or finish()."""
        return Ranking(self, positive, negative, concept, threads, top_n, precision,
                       max_sentences)

    def pooled_responses(self, sentences: Sequence[str], threads: int = 1,
                         precision: str = "int8",
                         progress: Optional[Callable[[int, int], Optional[bool]]] = None):
        """Each sentence's max-pooled response of every unit: numpy float32 (n, num_units)."""
        import numpy as np
        lib = L.load()
        arr, n = _str_array(sentences, "")
        out = np.zeros((n, self.info.num_units), dtype=np.float32)
        if n == 0:
            return out
        params = self._rank_params(threads, 0, precision, 0)
        cb = _Callback()
        c_progress = (L.PROGRESS_CALLBACK(lambda d, t, _u: cb.call(progress, d, t))
                      if progress is not None else L.PROGRESS_CALLBACK())
        status = lib.selfcond_pooled_responses(self._p(), arr, n, ctypes.byref(params),
                                               c_progress, None, out.ctypes.data)
        cb.reraise()
        _check(status)
        return out

    def experts_from_stats(self, stats, concept: str, num_positive: int, num_negative: int,
                           group: str = "", num_truncated: int = 0, precision: str = "int8",
                           top_n: int = 0) -> "Experts":
        """The expert table from every unit's statistics (a dict of numpy arrays "ap", "on_p50",
        "on_p90", "off_mean" of num_units values in unit-id order, e.g. expertise() of unit
        ranges concatenated): the table rank() returns for the same responses."""
        import numpy as np
        lib = L.load()
        n = self.info.num_units
        arrays = []
        for key in ("ap", "on_p50", "on_p90", "off_mean"):
            a = np.ascontiguousarray(stats[key], dtype=np.float32)
            if a.shape != (n,):
                raise ValueError(f"stats[{key!r}] has shape {a.shape}, expected ({n},)")
            arrays.append(a)
        info = L.TableInfo(concept.encode(), group.encode() if group else None,
                           int(num_positive), int(num_negative), int(num_truncated),
                           _choice(_PRECISION, precision, "precision"), int(top_n))
        out = ctypes.c_void_p()
        _check(lib.selfcond_experts_from_stats(self._p(), ctypes.byref(info),
                                               *[a.ctypes.data for a in arrays],
                                               ctypes.byref(out)))
        return Experts._wrap(self, out.value)

    def _with_dataset(self, path, fn):
        lib = L.load()
        ds = ctypes.c_void_p()
        _check(lib.selfcond_dataset_load(os.fsencode(os.fspath(path)), 0, ctypes.byref(ds)))
        try:
            return fn(lib, ds)
        finally:
            lib.selfcond_dataset_free(ds)

    def steering_vector(self, dataset_path, layer: int, precision: str = "int8") -> List[float]:
        """The concept's steering vector for block `layer` (-1: the middle block, n_layer // 2;
        n_embd floats): the mean residual stream after the block over the dataset's positive
        sentences minus the negatives'. Runs on the model's thread pool."""
        n = self.info.n_embd
        out = (ctypes.c_float * n)()

        def run(lib, ds):
            _check(lib.selfcond_steering_vector(self._p(), ds, int(layer),
                                                _choice(_PRECISION, precision, "precision"),
                                                out, n))
            return list(out)
        return self._with_dataset(dataset_path, run)

    def concept_words(self, dataset_path, max_words: int = 20) -> List[dict]:
        """The dataset's words most typical of its positive sentences: [{"word", "log_odds",
        "positive", "negative"}], best first."""
        import json

        def run(lib, ds):
            out = ctypes.c_void_p()
            _check(lib.selfcond_concept_words_to_string(ds, int(max_words), ctypes.byref(out)))
            return json.loads(_take_string(out))
        return self._with_dataset(dataset_path, run)

    def word_logit_bias(self, words: Sequence[str], beta: float) -> List[Tuple[int, float]]:
        """(token, bias) pairs: beta on each word's single-token forms " word" / " Word"."""
        arr, n_words = _str_array(words, "word")
        lib = L.load()
        n = ctypes.c_size_t()
        _check(lib.selfcond_word_logit_bias(self._p(), arr, n_words, float(beta), None, None, 0,
                                            ctypes.byref(n)))
        cap = n.value
        toks, bias = (ctypes.c_int32 * max(1, cap))(), (ctypes.c_float * max(1, cap))()
        _check(lib.selfcond_word_logit_bias(self._p(), arr, n_words, float(beta), toks, bias, cap,
                                            ctypes.byref(n)))
        return [(toks[i], bias[i]) for i in range(cap)]

    def trace_unit(self, text: str, unit_id: int,
                   precision: str = "int8") -> List[Tuple[str, float]]:
        """Where a unit fires: (token text, the unit's response) at every token of text."""
        lib = L.load()
        b = _encode(text)
        n = ctypes.c_size_t()
        prec = _choice(_PRECISION, precision, "precision")
        _check(lib.selfcond_trace_unit(self._p(), b, int(unit_id), prec, None, None, 0,
                                       ctypes.byref(n)))
        cap = n.value
        toks, vals = (ctypes.c_int32 * max(1, cap))(), (ctypes.c_float * max(1, cap))()
        _check(lib.selfcond_trace_unit(self._p(), b, int(unit_id), prec, toks, vals, cap,
                                       ctypes.byref(n)))
        return [(self.detokenize([toks[i]]), vals[i]) for i in range(cap)]

    def _measured(self, fn, params, progress):
        cb = _Callback()
        c_progress = (L.PROGRESS_CALLBACK(lambda d, t, _u: cb.call(progress, d, t))
                      if progress is not None else L.PROGRESS_CALLBACK())
        status = fn(c_progress)
        cb.reraise()
        _check(status)

    def choose_k(self, experts: "Experts", dataset_path=None,
                 progress: Optional[Callable[[int, int], None]] = None, **options):
        """How many of the table's experts to force (the CLI's --experts T:auto): returns
        (k, report), report a dict with "met", "reason", "words" and every k "tried". The
        dataset's log-odds words mark a mention (None: the table's concept name). options:
        the fields of selfcond_choose_k_params (candidates, target_rate, ppl_budget, forcing,
        grid={"prompts": [...], "seeds": 3, "new_tokens": 20, ...})."""
        import json
        keep = []
        params = _fill(L.load().selfcond_choose_k_default_params(), keep, **options)
        result = L.ChooseKResult()
        report = ctypes.c_void_p()

        def call(ds):
            def run(c_progress):
                return L.load().selfcond_choose_k(self._p(), experts._p(), ds,
                                                  ctypes.byref(params), c_progress, None,
                                                  ctypes.byref(result), ctypes.byref(report))
            self._measured(run, params, progress)
            return result.k, json.loads(_take_string(report))
        if dataset_path is None:
            return call(None)
        return self._with_dataset(dataset_path, lambda lib, ds: call(ds))

    def compare_methods(self, experts: "Experts", dataset_path,
                        progress: Optional[Callable[[int, int], None]] = None, **options):
        """Expert forcing, a steering vector and a logit bias side by side on the same prompts
        and seeds (`selfcond experiment compare`): the result dict (docs/paper-experiments.md).
        options: the fields of selfcond_compare_params (methods="experts,steer,bias", ks,
        alphas, betas, steer_layer, concept_words, forcing, grid={...})."""
        import json
        keep = []
        params = _fill(L.load().selfcond_compare_default_params(), keep, **options)
        out = ctypes.c_void_p()

        def run_with(lib, ds):
            def run(c_progress):
                return lib.selfcond_compare_methods(self._p(), experts._p(), ds,
                                                    ctypes.byref(params), c_progress, None,
                                                    ctypes.byref(out))
            self._measured(run, params, progress)
            return json.loads(_take_string(out))
        return self._with_dataset(dataset_path, run_with)

    def concept_logit_bias(self, dataset_path, beta: float,
                           max_words: int = 20) -> List[Tuple[int, float]]:
        """(token, bias) pairs: beta on the single-token forms of the dataset's highest
        log-odds words (a bag-of-words logit bias)."""
        def run(lib, ds):
            n = ctypes.c_size_t()
            _check(lib.selfcond_concept_logit_bias(self._p(), ds, int(max_words), float(beta),
                                                   None, None, 0, ctypes.byref(n)))
            cap = n.value
            toks, bias = (ctypes.c_int32 * max(1, cap))(), (ctypes.c_float * max(1, cap))()
            _check(lib.selfcond_concept_logit_bias(self._p(), ds, int(max_words), float(beta),
                                                   toks, bias, cap, ctypes.byref(n)))
            return [(toks[i], bias[i]) for i in range(cap)]
        return self._with_dataset(dataset_path, run)

    def session(self, threads: int = 1, n_ctx: int = 0, kv: str = "f32",
                precision: str = "int8") -> "Session":
        return Session(self, threads=threads, n_ctx=n_ctx, kv=kv, precision=precision)


# ---- expert tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpertUnit:
    rank: int
    layer: str  # ml-selfcond's layer name, e.g. "transformer.h.3.mlp.c_fc:0"
    unit: int  # index in that layer
    unit_id: int  # in the model's unit space
    site: int  # layer * 4 + kind
    ap: float
    on_p50: float
    on_p90: float
    off_mean: float


class Experts(_Handle):
    """An expert table: a concept's units ranked by AP (best first). Read-only; len() units."""

    def __init__(self):
        raise TypeError("use Model.load_experts() or Model.rank()")

    @classmethod
    def _wrap(cls, model, ptr):
        self = cls.__new__(cls)
        self._model = model  # for layer names (the C table does not need the model)
        self._adopt(ptr, L.load().selfcond_experts_free)
        ci = L.ExpertsInfo()
        L.load().selfcond_experts_get_info(ptr, ctypes.byref(ci))
        self.concept = ci.concept.decode("utf-8", "replace")
        self._len = ci.num_units
        self.total_units = ci.total_units
        self.num_positive = ci.num_positive
        self.num_negative = ci.num_negative
        return self

    def __repr__(self):
        return f"<selfcond.Experts {self.concept!r} {self._len} units>"

    def __len__(self):
        return self._len

    def _unit(self, rank):
        u = L.ExpertUnit()
        _check(L.load().selfcond_experts_get_unit(self._p(), rank, ctypes.byref(u)))
        return ExpertUnit(rank=rank, layer=self._model._site_name(u.site, u.unit_id),
                          unit=u.unit, unit_id=u.unit_id, site=u.site, ap=u.ap,
                          on_p50=u.on_p50, on_p90=u.on_p90, off_mean=u.off_mean)

    def __getitem__(self, rank):
        if isinstance(rank, slice):
            return [self._unit(i) for i in range(*rank.indices(self._len))]
        rank = int(rank)
        if rank < 0:
            rank += self._len
        if not 0 <= rank < self._len:
            raise IndexError(f"rank {rank} out of range [0, {self._len})")
        return self._unit(rank)

    def __iter__(self) -> Iterator[ExpertUnit]:
        for i in range(self._len):
            yield self._unit(i)

    def units(self, k: Optional[int] = None) -> List[ExpertUnit]:
        """The best k units (all if k is None), best AP first."""
        n = self._len if k is None else max(0, min(int(k), self._len))
        return [self._unit(i) for i in range(n)]

    def to_string(self, format: str = "json") -> str:
        out = ctypes.c_void_p()
        _check(L.load().selfcond_experts_to_string(self._p(), _choice(_FORMAT, format, "format"),
                                                   ctypes.byref(out)))
        return _take_string(out)

    def to_json(self) -> str:
        """selfcond's native JSON table."""
        return self.to_string("json")

    def to_csv(self) -> str:
        """ml-selfcond's expertise.csv."""
        return self.to_string("csv")

    def save(self, path, format: Optional[str] = None):
        """Writes the table; format "json" or "csv" (default: from the extension, else json)."""
        path = os.fspath(path)
        if format is None:
            format = "csv" if str(path).lower().endswith(".csv") else "json"
        _check(L.load().selfcond_experts_save(self._p(), os.fsencode(path),
                                              _choice(_FORMAT, format, "format")))


# ---- sessions ---------------------------------------------------------------------------------


@dataclass
class GenerateResult:
    text: str  # the new text (the prompt excluded)
    new_tokens: int
    stop: str  # "max_tokens", "eos", "context_full" or "cancelled"
    prompt_tokens: int = 0
    token_ids: List[int] = field(default_factory=list)

    @property
    def tokens(self):  # the count, as in the C result
        return self.new_tokens

    def __str__(self):
        return self.text


ForcingSpec = Union["Experts", Tuple["Experts", int]]


class Session(_Child):
    """One KV cache and one forcing setting. Use it from one thread at a time."""

    def __init__(self, model: Model, threads=1, n_ctx=0, kv="f32", precision="int8",
                 max_memory=0):
        """max_memory: bytes the session may allocate (KV cache and scratch); 0: half the
        device's memory. A larger context fails with RESOURCE_EXHAUSTED."""
        lib = L.load()
        params = L.SessionParams(_choice(_PRECISION, precision, "precision"), int(threads),
                                 int(n_ctx), _choice(_KV, kv, "kv"), int(max_memory))
        out = ctypes.c_void_p()
        _check(lib.selfcond_session_create(model._p(), ctypes.byref(params), ctypes.byref(out)))
        self._attach(model, out.value, lib.selfcond_session_free)
        self._busy = threading.Lock()
        self.forcing = []

    @property
    def model(self):
        return self._model

    def __repr__(self):
        return f"<selfcond.Session of {self._model.info.name!r}{' closed' if self.closed else ''}>"

    def close(self):
        """Frees the session (an error while another thread generates with it)."""
        busy = getattr(self, "_busy", None)
        if self._ptr is None or busy is None:
            return super().close()
        if not busy.acquire(blocking=False):
            raise Error(Status.FAILED_PRECONDITION, "session in use: stop the generation first")
        try:
            super().close()
        finally:
            busy.release()

    def _enter(self):
        if not self._busy.acquire(blocking=False):
            raise Error(Status.FAILED_PRECONDITION,
                        "session in use by another call (use one session per thread)")

    def set_forcing(self, sources: Iterable[ForcingSpec], value: str = "on_p50",
                    only_last_token: bool = False):
        """Forces the top-k experts of each table: sources = [(experts, k), ...] (an Experts
        alone means all its units). value: "on_p50" (the paper's), "on_p90", "off_mean",
        "zero". An empty list clears the forcing."""
        if isinstance(sources, Experts) or (isinstance(sources, tuple) and len(sources) == 2
                                            and isinstance(sources[0], Experts)):
            sources = [sources]
        pairs = []
        for s in sources:
            experts, k = (s, len(s)) if isinstance(s, Experts) else s
            if not isinstance(experts, Experts):
                raise TypeError("forcing sources are Experts or (Experts, k) pairs")
            pairs.append((experts, int(k)))
        arr = (L.ForcingSource * max(1, len(pairs)))(
            *[L.ForcingSource(e._p(), k) for e, k in pairs])
        self._enter()
        try:
            _check(L.load().selfcond_session_set_forcing(
                self._p(), arr, len(pairs), _choice(_FORCING, value, "forcing value"),
                int(bool(only_last_token))))
        finally:
            self._busy.release()
        self.forcing = [(e.concept, k) for e, k in pairs]

    def clear_forcing(self):
        self.set_forcing([])

    def set_steering(self, vector: Optional[Sequence[float]], layer: int = 0,
                     alpha: float = 1.0):
        """Adds alpha * vector after block `layer` at every position (Model.steering_vector);
        None or [] clears it."""
        v = list(vector or [])
        arr = (ctypes.c_float * max(1, len(v)))(*v)
        self._enter()
        try:
            _check(L.load().selfcond_session_set_steering(self._p(), int(layer), arr, len(v),
                                                          float(alpha)))
        finally:
            self._busy.release()

    def set_logit_bias(self, pairs: Sequence[Tuple[int, float]]):
        """Adds each (token, bias) to that token's logit (Model.concept_logit_bias); [] clears."""
        pairs = list(pairs)
        toks = (ctypes.c_int32 * max(1, len(pairs)))(*[int(t) for t, _ in pairs])
        bias = (ctypes.c_float * max(1, len(pairs)))(*[float(b) for _, b in pairs])
        self._enter()
        try:
            _check(L.load().selfcond_session_set_logit_bias(self._p(), toks, bias, len(pairs)))
        finally:
            self._busy.release()

    def generate(self, prompt: str, max_new_tokens: int = 50, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True,
                 on_token: Optional[Callable[[str], Optional[bool]]] = None,
                 keep_context: bool = False, stop: Sequence[str] = (),
                 repeat_penalty: float = 1.0, repeat_last_n: int = 64) -> GenerateResult:
        """Prefills prompt (from position 0) and generates. temperature 0: greedy.
        on_token(piece) gets each new piece of text; returning False stops the generation
        (stop == "cancelled"); an exception it raises stops it and is re-raised.
        keep_context: append the prompt after the session's KV cache ("" continues the last
        generation) and keep the new tokens in it. stop: strings that end the generation
        (stop == "stop_string"; the text ends before the string). repeat_penalty (1: off) on the
        last repeat_last_n tokens (-1: all), as llama.cpp's."""
        lib = L.load()
        b = _encode(prompt, "prompt")
        if isinstance(stop, (str, bytes)):
            stop = [stop]
        stops, n_stops = _str_array(list(stop), "stop")
        params = L.GenerateParams(int(max_new_tokens), float(temperature), int(top_k),
                                  float(top_p), int(seed) & 0xFFFFFFFFFFFFFFFF,
                                  int(bool(stop_at_eos)), int(bool(keep_context)),
                                  ctypes.cast(stops, ctypes.POINTER(ctypes.c_char_p)), n_stops,
                                  float(repeat_penalty), int(repeat_last_n))
        pieces, ids = [], []
        cb = _Callback()

        def trampoline(token, piece, n, _user):
            text = ctypes.string_at(piece, n).decode("utf-8", "replace") if n else ""
            if token >= 0:
                ids.append(token)
            pieces.append(text)
            if on_token is None:
                return 1
            return cb.call(on_token, text)

        c_cb = L.TOKEN_CALLBACK(trampoline)
        res = L.GenerateResult()
        self._enter()
        try:
            status = lib.selfcond_generate(self._p(), b, ctypes.byref(params), c_cb, None,
                                           ctypes.byref(res))
        finally:
            self._busy.release()
        cb.reraise()
        _check(status)
        return GenerateResult(text="".join(pieces), new_tokens=res.new_tokens,
                              stop=_STOP.get(res.stop, str(res.stop)),
                              prompt_tokens=res.prompt_tokens, token_ids=ids)

    def eval(self, tokens: Sequence[int], logits: bool = True):
        """Runs tokens after those already in the KV cache (n_past) and returns the last one's
        logits (numpy float32, vocab_size; the logit bias added), or None with logits=False."""
        import numpy as np
        ids = list(tokens)
        arr = (ctypes.c_int32 * max(1, len(ids)))(*ids)
        out = np.zeros(self._model.info.vocab_size, dtype=np.float32) if logits else None
        self._enter()
        try:
            _check(L.load().selfcond_session_eval(
                self._p(), arr, len(ids), out.ctypes.data if logits else None,
                out.size if logits else 0))
        finally:
            self._busy.release()
        return out

    def reset(self):
        """Forgets the KV cache (n_past = 0) and a pending abort; forcing, steering and logit
        bias stay."""
        L.load().selfcond_session_reset(self._p())

    def abort(self):
        """Stops the call running on this session, from any thread: a prefill (generate, eval)
        raises Error CANCELLED with the cache as before it; a generation past its prefill ends
        with stop == "cancelled". With no call running, the next one is stopped."""
        ptr = self._ptr
        if ptr is not None:
            L.load().selfcond_session_abort(ptr)

    @property
    def info(self) -> dict:
        """{"n_ctx", "n_past", "kv_cache_bytes", "backend", "forced_units"}."""
        ci = L.SessionInfo()
        L.load().selfcond_session_get_info(self._p(), ctypes.byref(ci))
        return {"n_ctx": ci.n_ctx, "n_past": ci.n_past, "kv_cache_bytes": ci.kv_cache_bytes,
                "backend": ci.backend.decode(), "forced_units": ci.forced_units}

    def stream(self, prompt: str, **kwargs) -> "TokenStream":
        """Iterates over the pieces of text as they are generated (same arguments as generate,
        except on_token). The GenerateResult is in .result after the iteration; leaving the
        loop early (break, close()) cancels the generation."""
        return TokenStream(self, prompt, kwargs)


class TokenStream:
    """Iterator of generated pieces: a generation running on a helper thread."""

    _DONE = object()

    def __init__(self, session, prompt, kwargs):
        if "on_token" in kwargs:
            raise TypeError("stream() takes no on_token")
        self.result = None
        self._q = queue.Queue()
        self._stop = threading.Event()
        self._error = None

        def on_token(piece):
            self._q.put(piece)
            return not self._stop.is_set()

        def run():
            try:
                self.result = session.generate(prompt, on_token=on_token, **kwargs)
            except BaseException as e:  # noqa: B902 - handed to the consuming thread
                self._error = e
            finally:
                self._q.put(self._DONE)

        self._thread = threading.Thread(target=run, name="selfcond-stream", daemon=True)
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self._thread is None:
            raise StopIteration
        item = self._q.get()
        if item is self._DONE:
            self._finish()
            raise StopIteration
        return item

    def _finish(self):
        self._thread.join()
        self._thread = None
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def close(self):
        """Cancels the generation (if running) and waits for it."""
        if self._thread is not None:
            self._stop.set()
            self._finish()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if self._thread is not None:
                self._stop.set()
        except Exception:
            pass


# ---- resumable ranking ------------------------------------------------------------------------


class Ranking(_Child):
    """A concept ranking in steps: step(n) until done, then responses() and/or finish()."""

    def __init__(self, model, positive, negative, concept="", threads=1, top_n=0,
                 precision="int8", max_sentences=0):
        lib = L.load()
        pos, n_pos = _str_array(positive, "positive")
        neg, n_neg = _str_array(negative, "negative")
        params = model._rank_params(threads, top_n, precision, max_sentences)
        out = ctypes.c_void_p()
        _check(lib.selfcond_ranking_start(model._p(), _encode(concept, "concept"), pos, n_pos,
                                          neg, n_neg, ctypes.byref(params), ctypes.byref(out)))
        self._attach(model, out.value, lib.selfcond_ranking_free)
        m = int(max_sentences)
        self.total = (min(n_pos, m) + min(n_neg, m)) if m > 0 else n_pos + n_neg
        self.done = 0
        self._stepped = False  # total confirmed by the library

    @property
    def finished(self):
        return self.done >= self.total

    def step(self, n: int = 1) -> Tuple[int, int]:
        """Runs up to n more sentences (at least one); returns (done, total)."""
        done, total = ctypes.c_int(), ctypes.c_int()
        _check(L.load().selfcond_ranking_step(self._p(), int(n), ctypes.byref(done),
                                              ctypes.byref(total)))
        self.done, self.total = done.value, total.value
        self._stepped = True
        return self.done, self.total

    def run(self, batch: int = 8, progress=None):
        """Steps until done; progress(done, total) may return False to stop early."""
        while not self.finished:
            d, t = self.step(batch)
            if progress is not None and progress(d, t) is False:
                break
        return self

    def responses(self):
        """After every sentence ran: max-pooled responses, numpy float32 (total, num_units),
        positives then negatives."""
        import numpy as np
        if not (self._stepped and self.finished):
            raise Error(Status.FAILED_PRECONDITION, f"ranking not finished: {self.done} of "
                        f"{self.total} sentences done")
        out = np.zeros((self.total, self._model.info.num_units), dtype=np.float32)
        _check(L.load().selfcond_ranking_responses(self._p(), out.ctypes.data))
        return out

    def finish(self) -> Experts:
        """After every sentence ran: the expert table."""
        out = ctypes.c_void_p()
        _check(L.load().selfcond_ranking_finish(self._p(), ctypes.byref(out)))
        return Experts._wrap(self._model, out.value)


def expertise(responses, labels, threads: int = 1):
    """Each unit's statistics from pooled responses, exactly as a ranking computes them.

    responses: float32 array (n_sentences, n_units), e.g. a column range of
    Model.pooled_responses() (a strided view is passed without copying); labels: n_sentences
    values, 1 positive / 0 negative. Returns {"ap", "on_p50", "on_p90", "off_mean"}: float32
    arrays of n_units."""
    import numpy as np
    lib = L.load()
    r = np.asarray(responses)
    if r.dtype != np.float32 or r.ndim != 2 or r.strides[1] != 4 or r.strides[0] % 4:
        r = np.ascontiguousarray(r, dtype=np.float32)
    lab = np.ascontiguousarray(labels, dtype=np.uint8)
    n, u = r.shape
    if lab.shape != (n,):
        raise ValueError(f"labels has shape {lab.shape}, expected ({n},)")
    out = {k: np.zeros(u, dtype=np.float32) for k in ("ap", "on_p50", "on_p90", "off_mean")}
    _check(lib.selfcond_expertise(r.ctypes.data, n, u, r.strides[0] // 4, lab.ctypes.data,
                                  int(threads), out["ap"].ctypes.data, out["on_p50"].ctypes.data,
                                  out["on_p90"].ctypes.data, out["off_mean"].ctypes.data))
    return out


@dataclass(frozen=True)
class Dataset:
    """A concept dataset, read exactly as `selfcond rank --concept` reads it (load_dataset)."""
    concept: str
    group: str
    positive: List[str]
    negative: List[str]


def load_dataset(path, max_sentences: int = 0) -> Dataset:
    """ml-selfcond JSON or "+ "/"- " lines (concept = file name), validated by the library."""
    lib = L.load()
    out = ctypes.c_void_p()
    _check(lib.selfcond_dataset_load(os.fsencode(os.fspath(path)), int(max_sentences),
                                     ctypes.byref(out)))
    try:
        info = L.DatasetInfo()
        lib.selfcond_dataset_get_info(out, ctypes.byref(info))
        size = ctypes.c_size_t()

        def read(positive, n):
            v = []
            for i in range(n):
                p = lib.selfcond_dataset_sentence(out, positive, i, ctypes.byref(size))
                v.append(ctypes.string_at(p, size.value).decode("utf-8"))
            return v
        return Dataset(info.concept.decode("utf-8"), info.group.decode("utf-8"),
                       read(1, info.num_positive), read(0, info.num_negative))
    finally:
        lib.selfcond_dataset_free(out)
