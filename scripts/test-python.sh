#!/usr/bin/env bash
# Installs the Python binding (python/) into a fresh venv against an installed libselfcond and
# runs its tests against the installed package (not the source tree).
#
#   cmake --install build/release --prefix /tmp/scpfx --component selfcond
#   bash scripts/test-python.sh /tmp/scpfx [-- extra unittest args]
#
# Debian 12 packages needed (for scripts/install-deps.sh):
#   python3 python3-venv python3-pip python3-setuptools python3-wheel python3-numpy pkg-config
#   python3-dask python3-distributed (the concept library, python -m selfcond.library)
# No network: pip installs with --no-index --no-build-isolation (setuptools, wheel and numpy come
# from Debian through --system-site-packages).
#
# Environment: SELFCOND_VENV=<dir> reuses/keeps a venv there (default: a temporary one, removed
# at the end); PYTHON=<interpreter> (default /usr/bin/python3, Debian's, which has numpy);
# SELFCOND_TEST_MODEL / _EXPERTS / _CONCEPT as in python/tests/test_selfcond.py.
set -euo pipefail

if (( $# < 1 )) || [[ $1 == -h || $1 == --help ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
PREFIX=$(realpath "$1"); shift
[[ ${1:-} == -- ]] && shift
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
say() { printf '== %s\n' "$*" >&2; }

missing=()
for p in python3-venv python3-pip python3-setuptools python3-wheel python3-numpy python3-dask \
  python3-distributed pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "test-python.sh: missing Debian packages: ${missing[*]}" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

PC_DIR=$PREFIX/lib/pkgconfig
if [[ ! -f $PC_DIR/selfcond.pc ]]; then
  echo "test-python.sh: no $PC_DIR/selfcond.pc; install the library first:" >&2
  echo "  cmake --install build/release --prefix $PREFIX --component selfcond" >&2
  exit 1
fi

if [[ -n ${SELFCOND_VENV:-} ]]; then
  VENV=$SELFCOND_VENV
else
  VENV=$(mktemp -d /tmp/selfcond-venv.XXXXXX)
  trap 'rm -rf "$VENV"' EXIT
fi
say "venv: $PYTHON -m venv --system-site-packages $VENV"
"$PYTHON" -m venv --system-site-packages "$VENV"

say "pkg-config --variable=libdir selfcond (PKG_CONFIG_PATH=$PC_DIR): $(
  PKG_CONFIG_PATH=$PC_DIR pkg-config --variable=libdir selfcond)"
say "install: PKG_CONFIG_PATH=$PC_DIR pip install --no-build-isolation --no-index $REPO/python"
# The build happens in python/build (setuptools' in-tree build dir, git-ignored): start clean so
# that nothing of an earlier install (another prefix) is reused.
rm -rf "$REPO/python/build" "$REPO"/python/*.egg-info
PKG_CONFIG_PATH=$PC_DIR PIP_ROOT_USER_ACTION=ignore "$VENV/bin/python" -m pip install \
  --no-build-isolation --no-index --no-deps --disable-pip-version-check --force-reinstall -q \
  "$REPO/python"
rm -rf "$REPO/python/build" "$REPO"/python/*.egg-info

# Run from outside the repo, with a clean environment for the library lookup, so that
# `import selfcond` is the installed package and the library comes from the recorded path.
unset SELFCOND_LIBRARY PYTHONPATH
WORK=$(mktemp -d /tmp/selfcond-pytest.XXXXXX)
cd "$WORK"
say "installed: $("$VENV/bin/python" -c 'import selfcond, selfcond._libpath as p; print(selfcond.__file__, "->", p.LIBRARY)')"
say "tests: cd $WORK && $VENV/bin/python -m unittest discover -s $REPO/python/tests -v"
status=0
# The concept library's tests (test_library.py) start a local Dask cluster: required here.
SELFCOND_REQUIRE_DASK=1 SELFCOND_TEST_EXPECT_INSTALLED=1 "$VENV/bin/python" -m unittest discover \
  -s "$REPO/python/tests" -v "$@" || status=$?
cd /; rm -rf "$WORK"
if (( status == 0 )); then say "python binding: all tests passed"; else say "python binding: FAILED"; fi
exit $status
