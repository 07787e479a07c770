#!/usr/bin/env bash
# Load benchmark: replays the shared workload over OTLP/gRPC into a release
# build of Skein on this machine, then reports ingest rate, server CPU per
# span, bytes on disk, and trace-by-ID latency.
#   scripts/bench.sh [TRACES]      default 70000 traces (about 1.05 M spans, 0.8 M logs)
# Environment: WORKLOAD_DIR (reuse a generated workload), CONNECTIONS (4).
set -euo pipefail
cd "$(dirname "$0")/.."
traces=${1:-70000}
wl=${WORKLOAD_DIR:-/tmp/skein-workload-s1-$traces}
if [ ! -f "$wl/truth.jsonl" ]; then
  python3 -c 'import opentelemetry.proto, zstandard' 2>/dev/null || pip install -q opentelemetry-proto protobuf zstandard
  python3 ../shared/workload/gen_workload.py --seed 1 --traces "$traces" --out "$wl" --no-zstd
fi
cargo build --release --locked -q
data=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
target/release/skein serve --data-dir "$data" --otlp-grpc-addr 127.0.0.1:0 \
  --otlp-http-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 > "$data.ready" &
pid=$!
for _ in $(seq 100); do [ -s "$data.ready" ] && break; sleep 0.1; done
grpc=$(grep -o 'otlp_grpc=[^ ]*' "$data.ready" | cut -d= -f2)
http=$(grep -o ' http=[^ ]*' "$data.ready" | cut -d= -f2)
until curl -sf "http://$http/readyz" >/dev/null; do sleep 0.1; done
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; workload: $wl"
target/release/skein loadgen --data "$wl" --grpc "http://$grpc" --connections "${CONNECTIONS:-4}" \
  --pid "$pid" --api "$http" --lookups 1000 | tee "$data.out"
spans=$(grep -o 'spans_accepted=[0-9]*' "$data.out" | cut -d= -f2)
logs=$(grep -o 'logs_accepted=[0-9]*' "$data.out" | cut -d= -f2)
sum() { find "$data/segments" "$@" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
sp=$(sum -name spans.parquet); lp=$(sum -name logs.parquet)
si=$(sum -path '*span_index*'); li=$(sum -path '*log_index*')
ti=$(sum -name traces.idx); ro=$(sum -name rollup.json -o -name meta.json)
all=$(sum)
awk -v s="$spans" -v l="$logs" -v sp="$sp" -v lp="$lp" -v si="$si" -v li="$li" -v ti="$ti" -v ro="$ro" -v all="$all" 'BEGIN {
  printf "bytes_per_span: spans.parquet=%.1f span_index=%.1f traces.idx=%.1f\n", sp/s, si/s, ti/s
  printf "bytes_per_log: logs.parquet=%.1f log_index=%.1f\n", lp/l, li/l
  printf "segments_total_bytes=%d (%.1f per span+log record; rollups+meta %d)\n", all, all/(s+l), ro
}'
echo "segments: $(find "$data/segments" -maxdepth 1 -mindepth 1 -type d | wc -l)"
kill -TERM "$pid"; wait "$pid" || true
