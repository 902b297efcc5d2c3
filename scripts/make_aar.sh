#!/usr/bin/env bash
# Assembles an Android library (AAR) layout from the Java binding's jar and an arm64 build of
# the JNI library:
#
#   scripts/make_aar.sh JAR ARM64_BUILD_DIR OUT.aar
#
#   OUT.aar: AndroidManifest.xml, classes.jar, R.txt, jni/arm64-v8a/{libselfcond_jni.so,
#            libselfcond.so.0, the shared libraries they need that are not the C/C++ runtime's}
#
# What this proves and what it does not: the layout, the bytecode (Java 11, what D8 reads) and a
# JNI library cross-built for aarch64 that links. The aarch64 build here is Debian's
# aarch64-linux-gnu (glibc), not Android's NDK (bionic): those .so files do not load on a phone.
# A device build needs the NDK's toolchain file (-DCMAKE_TOOLCHAIN_FILE=.../android.toolchain.cmake
# -DANDROID_ABI=arm64-v8a) and Abseil built for it; neither can be downloaded on this machine.
# java/README.md says so.
set -euo pipefail
JAR=${1:?usage: scripts/make_aar.sh JAR ARM64_BUILD_DIR OUT.aar}
BUILD=${2:?usage: scripts/make_aar.sh JAR ARM64_BUILD_DIR OUT.aar}
OUT=${3:?usage: scripts/make_aar.sh JAR ARM64_BUILD_DIR OUT.aar}
READELF=${READELF:-aarch64-linux-gnu-readelf}
SYSROOT_LIBS=${SYSROOT_LIBS:-/usr/lib/aarch64-linux-gnu}
for f in "$JAR" "$BUILD/java/libselfcond_jni.so" "$BUILD/libselfcond.so.0"; do
  [[ -e "$f" ]] || { echo "make_aar.sh: missing $f" >&2; exit 1; }
done
grep -q AArch64 <<<"$("$READELF" -h "$BUILD/java/libselfcond_jni.so")" ||
  { echo "make_aar.sh: $BUILD/java/libselfcond_jni.so is not an aarch64 library" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
abi="$tmp/jni/arm64-v8a"
mkdir -p "$abi"
cp "$JAR" "$tmp/classes.jar"
cp "$BUILD/java/libselfcond_jni.so" "$abi/"
cp -L "$BUILD/libselfcond.so.0" "$abi/"
# The libraries libselfcond needs besides the C/C++ runtime (Abseil's, from the multiarch
# packages), found breadth-first through their NEEDED entries.
queue=("$abi/libselfcond.so.0")
while [[ ${#queue[@]} -gt 0 ]]; do
  lib=${queue[0]}
  queue=("${queue[@]:1}")
  for dep in $("$READELF" -d "$lib" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
    case "$dep" in libc.so*|libm.so*|libstdc++.so*|libgcc_s.so*|ld-linux*|libpthread.so*|libdl.so*) continue ;; esac
    [[ -e "$abi/$dep" ]] && continue
    [[ -e "$SYSROOT_LIBS/$dep" ]] || { echo "make_aar.sh: $dep (needed by $(basename "$lib")) not in $SYSROOT_LIBS" >&2; exit 1; }
    cp -L "$SYSROOT_LIBS/$dep" "$abi/$dep"
    queue+=("$abi/$dep")
  done
done
cat > "$tmp/AndroidManifest.xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.selfcond">
  <uses-sdk android:minSdkVersion="24" />
</manifest>
XML
: > "$tmp/R.txt"
rm -f "$OUT"
OUT_ABS=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
(cd "$tmp" && jar --create --file "$OUT_ABS" --no-manifest AndroidManifest.xml classes.jar R.txt jni)
echo "wrote $OUT ($(du -k "$OUT" | cut -f1) KiB): $(cd "$tmp" && find jni -type f | sort | tr '\n' ' ')"
