#!/usr/bin/env bash
# Browser tests of the web app (called by tests/run.sh): headless Chromium via playwright-core.
# Needs Debian's chromium (/usr/bin/chromium, or CHROMIUM=...), node 20 and npm, and the demo
# model at demo/models/selfcond-mini-30m.scm. Artifacts (screenshots): web/test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
if [[ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
  echo "web/test.sh: no Chromium at ${CHROMIUM:-/usr/bin/chromium} (apt-get install -y chromium)" >&2
  exit 1
fi
if [[ ! -d node_modules/playwright-core || ! -d node_modules/esbuild || ! -d node_modules/typescript ]]; then
  npm ci --no-audit --no-fund
fi
exec node --test --test-concurrency=1 tests/
