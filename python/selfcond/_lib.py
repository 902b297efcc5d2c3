"""Finding and loading libselfcond, and the ctypes declarations of include/selfcond/selfcond.h.

The library is located, in order, through:
  1. the environment variable SELFCOND_LIBRARY (a library file, or a directory holding one);
  2. the path recorded when the package was installed (selfcond/_libpath.py, written by setup.py
     from `pkg-config --variable=libdir selfcond`);
  3. ctypes.util.find_library("selfcond") (the system's linker paths, LD_LIBRARY_PATH, ...).
It is loaded on first use, not at import, so `import selfcond` works without it.
"""

import ctypes
import ctypes.util
import os
import sys
import threading

# The header this module mirrors. Before 1.0 a minor version may change the ABI.
HEADER_VERSION = (0, 9)

if sys.platform == "darwin":
    _NAMES = ("libselfcond.0.dylib", "libselfcond.dylib")
elif sys.platform == "win32":
    _NAMES = ("selfcond.dll", "libselfcond.dll")
else:
    _NAMES = ("libselfcond.so.0", "libselfcond.so")


class LibraryNotFoundError(OSError):
    """libselfcond could not be found or loaded (or is of an incompatible version)."""


# ---- C types ----------------------------------------------------------------------------------

c_status = ctypes.c_int
c_enum = ctypes.c_int


class ModelParams(ctypes.Structure):
    _fields_ = [("verify_hash", ctypes.c_int), ("need_f32", ctypes.c_int)]


class ExpertsParams(ctypes.Structure):
    _fields_ = [("allow_unhashed", ctypes.c_int)]


class ModelInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("hash", ctypes.c_char_p),
        ("n_layer", ctypes.c_int),
        ("n_embd", ctypes.c_int),
        ("n_head", ctypes.c_int),
        ("n_ctx", ctypes.c_int),
        ("n_inner", ctypes.c_int),
        ("vocab_size", ctypes.c_int),
        ("eos_id", ctypes.c_int),
        ("num_units", ctypes.c_int64),
    ]


class ExpertsInfo(ctypes.Structure):
    _fields_ = [
        ("concept", ctypes.c_char_p),
        ("num_units", ctypes.c_int64),
        ("total_units", ctypes.c_int64),
        ("num_positive", ctypes.c_int),
        ("num_negative", ctypes.c_int),
    ]


class ExpertUnit(ctypes.Structure):
    _fields_ = [
        ("unit_id", ctypes.c_int64),
        ("site", ctypes.c_int),
        ("unit", ctypes.c_int),
        ("ap", ctypes.c_float),
        ("on_p50", ctypes.c_float),
        ("on_p90", ctypes.c_float),
        ("off_mean", ctypes.c_float),
    ]


class SessionParams(ctypes.Structure):
    _fields_ = [
        ("precision", c_enum),
        ("threads", ctypes.c_int),
        ("n_ctx", ctypes.c_int),
        ("kv_type", c_enum),
    ]


class ForcingSource(ctypes.Structure):
    _fields_ = [("experts", ctypes.c_void_p), ("top_k", ctypes.c_int64)]


class GenerateParams(ctypes.Structure):
    _fields_ = [
        ("max_new_tokens", ctypes.c_int),
        ("temperature", ctypes.c_float),
        ("top_k", ctypes.c_int),
        ("top_p", ctypes.c_float),
        ("seed", ctypes.c_uint64),
        ("stop_at_eos", ctypes.c_int),
    ]


class GenerateResult(ctypes.Structure):
    _fields_ = [
        ("prompt_tokens", ctypes.c_int),
        ("new_tokens", ctypes.c_int),
        ("stop", c_enum),
    ]


class RankParams(ctypes.Structure):
    _fields_ = [
        ("precision", c_enum),
        ("threads", ctypes.c_int),
        ("max_sentences", ctypes.c_int),
        ("top_n", ctypes.c_int64),
    ]


class TableInfo(ctypes.Structure):
    _fields_ = [
        ("concept", ctypes.c_char_p),
        ("group", ctypes.c_char_p),
        ("num_positive", ctypes.c_int),
        ("num_negative", ctypes.c_int),
        ("num_truncated", ctypes.c_int),
        ("precision", c_enum),
        ("top_n", ctypes.c_int64),
    ]


class DatasetInfo(ctypes.Structure):
    _fields_ = [
        ("concept", ctypes.c_char_p),
        ("group", ctypes.c_char_p),
        ("num_positive", ctypes.c_size_t),
        ("num_negative", ctypes.c_size_t),
    ]


TOKEN_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_int32, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t, ctypes.c_void_p
)
PROGRESS_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)

_p = ctypes.c_void_p  # opaque handles
_pp = ctypes.POINTER(ctypes.c_void_p)
_char_pp = ctypes.POINTER(ctypes.c_char_p)
_str_array = ctypes.POINTER(ctypes.c_char_p)

# name: (restype, argtypes)
_PROTOTYPES = {
    "selfcond_version": (ctypes.c_char_p, []),
    "selfcond_last_error": (ctypes.c_char_p, []),
    "selfcond_status_name": (ctypes.c_char_p, [c_status]),
    "selfcond_string_free": (None, [ctypes.c_void_p]),
    "selfcond_model_default_params": (ModelParams, []),
    "selfcond_model_load_file": (c_status, [ctypes.c_char_p, ctypes.POINTER(ModelParams), _pp]),
    "selfcond_model_load_memory": (
        c_status,
        [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ModelParams), _pp],
    ),
    "selfcond_model_free": (None, [_p]),
    "selfcond_model_get_info": (None, [_p, ctypes.POINTER(ModelInfo)]),
    "selfcond_tokenize": (
        c_status,
        [_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t,
         ctypes.POINTER(ctypes.c_size_t)],
    ),
    "selfcond_detokenize_to_string": (
        c_status,
        [_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, _pp],
    ),
    "selfcond_unit_to_string": (
        c_status,
        [_p, ctypes.c_int64, _pp, ctypes.POINTER(ctypes.c_int)],
    ),
    "selfcond_experts_load_file_ex": (
        c_status, [_p, ctypes.c_char_p, ctypes.POINTER(ExpertsParams), _pp]),
    "selfcond_experts_load_memory_ex": (
        c_status, [_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ExpertsParams), _pp]),
    "selfcond_experts_free": (None, [_p]),
    "selfcond_experts_save": (c_status, [_p, ctypes.c_char_p, c_enum]),
    "selfcond_experts_to_string": (c_status, [_p, c_enum, _pp]),
    "selfcond_experts_get_info": (None, [_p, ctypes.POINTER(ExpertsInfo)]),
    "selfcond_experts_get_unit": (c_status, [_p, ctypes.c_int64, ctypes.POINTER(ExpertUnit)]),
    "selfcond_session_default_params": (SessionParams, []),
    "selfcond_session_create": (c_status, [_p, ctypes.POINTER(SessionParams), _pp]),
    "selfcond_session_free": (None, [_p]),
    "selfcond_session_set_forcing": (
        c_status,
        [_p, ctypes.POINTER(ForcingSource), ctypes.c_size_t, c_enum, ctypes.c_int],
    ),
    "selfcond_session_set_steering": (
        c_status, [_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
                   ctypes.c_float]),
    "selfcond_session_set_logit_bias": (
        c_status, [_p, ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_float),
                   ctypes.c_size_t]),
    "selfcond_steering_vector": (
        c_status, [_p, _p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_float),
                   ctypes.c_size_t]),
    "selfcond_concept_logit_bias": (
        c_status, [_p, _p, ctypes.c_int, ctypes.c_float, ctypes.POINTER(ctypes.c_int32),
                   ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
                   ctypes.POINTER(ctypes.c_size_t)]),
    "selfcond_generate_default_params": (GenerateParams, []),
    "selfcond_generate": (
        c_status,
        [_p, ctypes.c_char_p, ctypes.POINTER(GenerateParams), TOKEN_CALLBACK, ctypes.c_void_p,
         ctypes.POINTER(GenerateResult)],
    ),
    "selfcond_rank_default_params": (RankParams, []),
    "selfcond_rank": (
        c_status,
        [_p, ctypes.c_char_p, _str_array, ctypes.c_size_t, _str_array, ctypes.c_size_t,
         ctypes.POINTER(RankParams), PROGRESS_CALLBACK, ctypes.c_void_p, _pp],
    ),
    "selfcond_ranking_start": (
        c_status,
        [_p, ctypes.c_char_p, _str_array, ctypes.c_size_t, _str_array, ctypes.c_size_t,
         ctypes.POINTER(RankParams), _pp],
    ),
    "selfcond_ranking_step": (
        c_status,
        [_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
    ),
    "selfcond_ranking_responses": (c_status, [_p, ctypes.c_void_p]),
    "selfcond_ranking_finish": (c_status, [_p, _pp]),
    "selfcond_ranking_free": (None, [_p]),
    "selfcond_pooled_responses": (
        c_status,
        [_p, _str_array, ctypes.c_size_t, ctypes.POINTER(RankParams), PROGRESS_CALLBACK,
         ctypes.c_void_p, ctypes.c_void_p],
    ),
    "selfcond_dataset_load": (c_status, [ctypes.c_char_p, ctypes.c_int, _pp]),
    "selfcond_dataset_free": (None, [_p]),
    "selfcond_dataset_get_info": (None, [_p, ctypes.POINTER(DatasetInfo)]),
    "selfcond_dataset_sentence": (
        ctypes.c_void_p, [_p, ctypes.c_int, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]),
    "selfcond_expertise": (
        c_status,
        [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
         ctypes.c_int] + [ctypes.c_void_p] * 4,
    ),
    "selfcond_experts_from_stats": (
        c_status, [_p, ctypes.POINTER(TableInfo)] + [ctypes.c_void_p] * 4 + [_pp]),
}


# ---- locating ---------------------------------------------------------------------------------


def _recorded():
    """(library path, libdir) recorded at install time, or (None, None)."""
    try:
        from . import _libpath  # written by setup.py's build_py
    except ImportError:
        return None, None
    return getattr(_libpath, "LIBRARY", None), getattr(_libpath, "LIBDIR", None)


def _in_dir(d):
    for name in _NAMES:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    return None


def candidates():
    """The places tried, in order: a list of (how it was found, path or name)."""
    out = []
    env = os.environ.get("SELFCOND_LIBRARY")
    if env:
        if os.path.isdir(env):
            found = _in_dir(env)
            out.append(("SELFCOND_LIBRARY", found or os.path.join(env, _NAMES[0])))
        else:
            out.append(("SELFCOND_LIBRARY", env))
        return out  # an explicit choice: no fallback that would hide a mistake
    lib, libdir = _recorded()
    if lib:
        out.append(("recorded at install (pkg-config)", lib))
    elif libdir:
        out.append(("recorded at install (pkg-config)", _in_dir(libdir) or
                    os.path.join(libdir, _NAMES[0])))
    found = ctypes.util.find_library("selfcond")
    if found:
        out.append(("ctypes.util.find_library", found))
    return out


_lock = threading.Lock()
_lib = None
_lib_path = None


def _declare(lib):
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def load():
    """The loaded library (ctypes.CDLL), loading it on the first call."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for how, path in candidates():
            if os.path.sep in path and not os.path.exists(path):
                tried.append(f"  {how}: {path} (no such file)")
                continue
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                tried.append(f"  {how}: {path} ({e})")
                continue
            try:
                _declare(lib)
            except AttributeError as e:
                tried.append(f"  {how}: {path} (not the selfcond C API: {e})")
                continue
            version = lib.selfcond_version().decode()
            parts = tuple(int(x) for x in version.split(".")[:2])
            if parts != HEADER_VERSION:
                tried.append(f"  {how}: {path} (version {version}; this binding needs "
                             f"{HEADER_VERSION[0]}.{HEADER_VERSION[1]}.x)")
                continue
            _lib, _lib_path = lib, path
            return lib
        detail = "\n".join(tried) if tried else "  (nothing: no recorded path, find_library failed)"
        raise LibraryNotFoundError(
            "libselfcond not found. Tried:\n" + detail + "\n"
            "Set SELFCOND_LIBRARY to the library (e.g. <prefix>/lib/libselfcond.so), or reinstall "
            "this package with PKG_CONFIG_PATH=<prefix>/lib/pkgconfig so that "
            "`pkg-config --variable=libdir selfcond` finds the installed library.")


def library_path():
    """The path (or name) of the loaded library, loading it if needed."""
    load()
    return _lib_path
