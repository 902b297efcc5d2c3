"""Finding and loading libselfcond (its ctypes declarations: _capi.py, generated from the header).

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

# The declarations are generated from the header (scripts/gen_bindings.py): _capi.py.
from ._capi import *  # noqa: F401,F403 - Structures, callback types, enum values
from ._capi import HEADER_VERSION, PROTOTYPES as _PROTOTYPES

if sys.platform == "darwin":
    _NAMES = ("libselfcond.0.dylib", "libselfcond.dylib")
elif sys.platform == "win32":
    _NAMES = ("selfcond.dll", "libselfcond.dll")
else:
    _NAMES = ("libselfcond.so.0", "libselfcond.so")


class LibraryNotFoundError(OSError):
    """libselfcond could not be found or loaded (or is of an incompatible version)."""


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
