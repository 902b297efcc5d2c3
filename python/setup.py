"""Build hook: records where libselfcond is (selfcond/_libpath.py in the built package).

The metadata is in pyproject.toml. At build time this asks pkg-config (PKG_CONFIG_PATH pointing
at <prefix>/lib/pkgconfig of a `cmake --install ... --component selfcond`) for the library's
directory. Nothing is compiled. Without pkg-config or the .pc file the package still installs,
and finds the library at run time through SELFCOND_LIBRARY or ctypes.util.find_library.
"""

import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

if sys.platform == "darwin":
    NAMES = ("libselfcond.0.dylib", "libselfcond.dylib")
elif sys.platform == "win32":
    NAMES = ("selfcond.dll", "libselfcond.dll")
else:
    NAMES = ("libselfcond.so.0", "libselfcond.so")


def _pkg_config(*args):
    exe = os.environ.get("PKG_CONFIG") or shutil.which("pkg-config") or shutil.which("pkgconf")
    if not exe:
        return None
    try:
        r = subprocess.run([exe, *args, "selfcond"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    out = r.stdout.strip()
    return out if r.returncode == 0 and out else None


def _library_in(d):
    for name in NAMES:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return os.path.realpath(os.path.dirname(p)), os.path.join(
                os.path.realpath(os.path.dirname(p)), name)
    return None


def find_library():
    """(libdir, library file, how) from pkg-config, or None."""
    tried = []
    # 1. libdir as written in the .pc file.
    libdir = _pkg_config("--variable=libdir")
    if libdir:
        tried.append(libdir)
        found = _library_in(libdir)
        if found:
            return found + ("pkg-config --variable=libdir selfcond",)
    # 2. A relocated prefix (the .pc file names the configure-time prefix, but the package was
    #    installed elsewhere with `cmake --install --prefix`): prefix from the .pc file's place.
    libdir = _pkg_config("--define-prefix", "--variable=libdir")
    if libdir:
        tried.append(libdir)
        found = _library_in(libdir)
        if found:
            return found + ("pkg-config --define-prefix --variable=libdir selfcond",)
    pcdir = _pkg_config("--variable=pcfiledir")
    if pcdir:
        libdir = os.path.dirname(pcdir)  # <prefix>/lib/pkgconfig -> <prefix>/lib
        tried.append(libdir)
        found = _library_in(libdir)
        if found:
            return found + ("the directory above selfcond.pc",)
    if tried:
        print(f"selfcond setup: pkg-config found selfcond.pc but no library in {', '.join(tried)}",
              file=sys.stderr)
    else:
        print("selfcond setup: `pkg-config --variable=libdir selfcond` failed (set "
              "PKG_CONFIG_PATH=<prefix>/lib/pkgconfig); the library will be looked up at run "
              "time (SELFCOND_LIBRARY, ctypes.util.find_library)", file=sys.stderr)
    return None


class BuildPyWithLibPath(build_py):
    def run(self):
        super().run()
        found = find_library()
        target = os.path.join(self.build_lib, "selfcond", "_libpath.py")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write("# Written by setup.py at install time: where libselfcond was found.\n")
            if found:
                libdir, lib, how = found
                print(f"selfcond setup: recording {lib} (found through {how})", file=sys.stderr)
                f.write(f"LIBDIR = {libdir!r}\nLIBRARY = {lib!r}\nFOUND_BY = {how!r}\n")
            else:
                f.write("LIBDIR = None\nLIBRARY = None\nFOUND_BY = None\n")


setup(cmdclass={"build_py": BuildPyWithLibPath})
