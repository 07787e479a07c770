#!/usr/bin/env bash
# Skein and the ClickHouse peer on the same workload files, one after the
# other on this machine, and one table of both with the ratio (issue 11).
#   scripts/bench-peer.sh [TRACES]   default 200000 traces (about 3 M spans, 2.3 M logs)
# Environment: everything scripts/bench.sh takes (WORKLOAD_DIR, SKEIN_BIN, ...),
# PEER_RUNS (20, queries per kind for the peer), OUT (a directory for the raw
# outputs; default a temporary one, printed), PEER_JSON (reuse the peer's
# result of an earlier run on the same workload files instead of running it
# again: the peer's figures do not depend on Skein's build).
set -euo pipefail
cd "$(dirname "$0")/.."
traces=${1:-200000}
export WORKLOAD_DIR=${WORKLOAD_DIR:-/tmp/skein-workload-s1-$traces}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
python3 -c 'import chdb' 2>/dev/null || pip install -q chdb
bash scripts/bench.sh "$traces" | tee "$out/skein.txt"
if [ -n "${PEER_JSON:-}" ]; then
  cp "$PEER_JSON" "$out/peer.json"
else
  python3 scripts/peer_side.py --data "$WORKLOAD_DIR" --out "$out/peer.json" --runs "${PEER_RUNS:-20}" > "$out/peer.log" 2>&1
fi
echo
python3 scripts/side_by_side.py "$out/skein.txt" "$out/peer.json" | tee "$out/table.md"
echo "raw outputs: $out"
