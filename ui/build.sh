#!/usr/bin/env bash
# Builds the web UI bundle into ui/dist (committed; embedded by the skein-ui crate).
# Needs Node.js >= 20.19 and npm. Deterministic: a rebuild of the same source is byte-identical.
set -euo pipefail
cd "$(dirname "$0")/web"
npm ci --no-audit --no-fund
npm run build
