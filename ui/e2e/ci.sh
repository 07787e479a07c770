#!/usr/bin/env bash
# The UI's part of CI, from a clean machine (Debian, root): install Chromium, the
# workload generator's Python packages and the npm packages; rebuild ui/dist and fail
# if it differs from the committed bundle; run the browser tests against SKEIN_BIN
# (default target/debug/skein, which must be built before).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x /usr/bin/chromium ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi
if ! python3 -c 'import opentelemetry.proto, google.protobuf, zstandard' 2>/dev/null; then
  pip install opentelemetry-proto protobuf zstandard || pip install --break-system-packages opentelemetry-proto protobuf zstandard
fi
bash ui/build.sh
if [ -n "$(git status --porcelain -- ui/dist)" ]; then
  git status --short -- ui/dist
  echo "ui/dist differs from a fresh build of ui/web: run ui/build.sh and commit ui/dist" >&2
  exit 1
fi
node ui/e2e/run.mjs
