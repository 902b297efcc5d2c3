#!/usr/bin/env bash
# ctest java_binding: the Java binding on the JVM against the demo model. The greedy text it
# must reproduce comes from the native CLI (the same library, through the C API).
#   java/test.sh JAVA CLASSPATH LIBSELFCOND_JNI SELFCOND_CLI REPO
set -euo pipefail
JAVA=$1 CP=$2 JNI=$3 CLI=$4 REPO=$5
MODEL=$REPO/demo/models/selfcond-mini-30m.scm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$CLI" generate --model "$MODEL" --prompt "Once upon a time" --max-tokens 20 --temperature 0 \
  > "$tmp/greedy.txt"
exec "$JAVA" -Xcheck:jni -Dselfcond.jni.library="$JNI" -cp "$CP" org.selfcond.SelfcondTest \
  "$MODEL" "$REPO/demo/experts/football.json" "$REPO/../shared/concepts/football.json" \
  "$tmp/greedy.txt"
