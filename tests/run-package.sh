#!/usr/bin/env bash
# The installed package, used the way an app would use it (issue 8 "done when"):
#   1. cmake --install the C library into a temporary prefix (component "selfcond" only);
#   2. build demo/c against that prefix alone: with find_package(selfcond) (shared and static
#      library) and with pkg-config, and run each (load, rank a concept, generate conditioned);
#   3. install the Python binding from ./python into a venv and run its tests against the prefix.
# Usage: tests/run-package.sh BUILD_DIR   (a configured and built native build, e.g. build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${1:?usage: tests/run-package.sh BUILD_DIR}
WORK=$(mktemp -d /tmp/selfcond-package.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PREFIX=$WORK/prefix
MODEL=$ROOT/demo/models/selfcond-mini-30m.scm
TABLE=$ROOT/demo/experts/football.json

echo "-- install into $PREFIX"
cmake --install "$BUILD" --prefix "$PREFIX" --component selfcond >/dev/null
find "$PREFIX" -type f | sed "s|$PREFIX/|   |" | sort

# The shared library exports the C API and nothing else (no C++, XNNPACK or Abseil symbols).
extra=$(nm -D --defined-only "$PREFIX"/lib/libselfcond.so | awk '{print $3}' |
        grep -v -e '^selfcond_' -e '^SELFCOND_0$' || true)
[[ -z "$extra" ]] || { echo "libselfcond.so exports more than selfcond_*: $extra" >&2; exit 1; }
echo "   libselfcond.so exports $(nm -D --defined-only "$PREFIX"/lib/libselfcond.so | grep -c ' T selfcond_') functions, all selfcond_*"

echo "-- demo/c with find_package(selfcond)"
# A copy outside the source tree, so nothing but the prefix can be found.
cp -r demo/c "$WORK/demo-c"
cmake -S "$WORK/demo-c" -B "$WORK/demo-c/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PREFIX" >/dev/null
cmake --build "$WORK/demo-c/build" >/dev/null
for exe in demo_c demo_c_static; do
  echo "-- $exe"
  out=$("$WORK/demo-c/build/$exe" "$MODEL" "$TABLE" "Once upon a time" 2>/dev/null)
  echo "$out" | sed 's/^/   /'
  grep -q "top 50 'football" <<<"$out" || { echo "$exe: no conditioned generation" >&2; exit 1; }
done
# (ldd's output is captured before grep reads it: `ldd X | grep -q` under pipefail fails at
# random when grep exits at its first match and ldd dies of SIGPIPE; CI failed that way once.)
# libselfcond.a is self-contained: the static demo needs no Abseil (nor anything but the C++
# runtime, libm and pthreads), with CMake's package and with pkg-config --static alike.
if grep -q absl <<<"$(ldd "$WORK/demo-c/build/demo_c_static")"; then
  echo "demo_c_static links Abseil: libselfcond.a is not self-contained" >&2; exit 1
fi
cc -std=c99 -Wall -Wextra -pedantic -Werror -o "$WORK/demo_c_a" demo/c/main.c \
  $(PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig pkg-config --cflags selfcond) "$PREFIX/lib/libselfcond.a" \
  $(PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig pkg-config --static --libs-only-l selfcond | sed 's/-lselfcond//')
if grep -q -e absl -e selfcond <<<"$(ldd "$WORK/demo_c_a")"; then
  echo "demo_c_a (libselfcond.a + pkg-config --static) needs a shared selfcond or Abseil" >&2; exit 1
fi
out=$("$WORK/demo_c_a" "$MODEL" "$TABLE" "Once upon a time" 2>/dev/null)
grep -q "top 50 'football" <<<"$out" || { echo "demo_c_a: no conditioned generation" >&2; exit 1; }
echo "   libselfcond.a links alone (no Abseil installed needed): demo_c_static, demo_c_a"
# The shared build must resolve libselfcond from the prefix (RPATH), not from the build tree.
# Compared as real paths: the prefix may sit below a symlink (/tmp on some machines), and the
# RUNPATH CMake writes, so the path ldd prints, may be either spelling.
used=$(ldd "$WORK/demo-c/build/demo_c" | awk '$1 ~ /^libselfcond\.so/ {print $3}')
if [[ -z "$used" || "$(readlink -f "$used")" != "$(readlink -f "$PREFIX/lib/libselfcond.so")" ]]; then
  echo "demo_c does not use the installed libselfcond.so ($PREFIX/lib); ldd says:" >&2
  ldd "$WORK/demo-c/build/demo_c" >&2
  readelf -d "$WORK/demo-c/build/demo_c" | grep -i -e rpath -e runpath >&2 || true
  exit 1
fi

echo "-- demo/c with pkg-config"
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
# No -Wl,-rpath here: selfcond.pc carries it, so the program starts as built.
cc -std=c99 -Wall -Wextra -pedantic -Werror -o "$WORK/demo_c_pc" demo/c/main.c \
  $(pkg-config --cflags --libs selfcond)
"$WORK/demo_c_pc" "$MODEL" - "The game" 2>/dev/null | tail -n 2 | sed 's/^/   /'

if [[ -f scripts/test-python.sh ]]; then
  echo "-- Python binding (pip install ./python into a venv, tests against the prefix)"
  SELFCOND_CLI="$(cd "$BUILD" && pwd)/selfcond" bash scripts/test-python.sh "$PREFIX"
fi
echo "package checks passed"
