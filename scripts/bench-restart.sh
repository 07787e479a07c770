#!/usr/bin/env bash
# Restart benchmark: loads the shared workload into a release build of
# Skein, kills it with SIGKILL right after the last request is acknowledged
# (no final flush, so the WAL still holds everything not yet in segments),
# starts `skein serve` on the same data directory and times until /readyz
# answers 200.
#   scripts/bench-restart.sh [TRACES]      default 70000 traces
# Environment: WORKLOAD_DIR, SKEIN_BIN, CONNECTIONS as for scripts/bench.sh;
#   PERF_DIR  record `perf record -g` of the server during ingest (the
#             figures of this script do not include CPU) and during a
#             flush of the replayed head after the restart.
set -euo pipefail
cd "$(dirname "$0")/.."
traces=${1:-70000}
wl=${WORKLOAD_DIR:-/tmp/skein-workload-s1-$traces}
[ -f "$wl/truth.jsonl" ] || { echo "no workload at $wl (run scripts/bench.sh first or set WORKLOAD_DIR)" >&2; exit 1; }
data=$(mktemp -d)
pid=
perf_pid=
trap 'for p in $perf_pid $pid; do kill $p 2>/dev/null || true; done; rm -rf "$data" "$data.bin" "$data.ready" "$data.log"' EXIT
mkdir "$data.bin"
if [ -n "${SKEIN_BIN:-}" ]; then
  cp "$SKEIN_BIN" "$data.bin/skein"
else
  cargo build --release --locked -q
  cp "${CARGO_TARGET_DIR:-target}/release/skein" "$data.bin/skein"
fi
skein=$data.bin/skein
serve() {
  "$skein" serve --data-dir "$data" --otlp-grpc-addr 127.0.0.1:0 \
    --otlp-http-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --zipkin-addr 127.0.0.1:0 > "$data.ready" 2> "$data.log" &
  pid=$!
  for _ in $(seq 1000); do [ -s "$data.ready" ] && break; sleep 0.01; done
  grpc=$(grep -o 'otlp_grpc=[^ ]*' "$data.ready" | cut -d= -f2)
  http=$(grep -o ' http=[^ ]*' "$data.ready" | cut -d= -f2)
}
: > "$data.ready"
serve
until curl -sf "http://$http/readyz" >/dev/null; do sleep 0.1; done
echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg); workload: $wl"
if [ -n "${PERF_DIR:-}" ]; then
  mkdir -p "$PERF_DIR"
  perf record -F 499 -g -p "$pid" -o "$PERF_DIR/ingest.data" 2>/dev/null &
  perf_pid=$!
fi
"$skein" loadgen --data "$wl" --grpc "http://$grpc" --connections "${CONNECTIONS:-4}" --pid "$pid"
if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; perf_pid=; fi
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
echo "killed with SIGKILL; wal: $(du -sb "$data/wal" | cut -f1) bytes; segments: $(find "$data/segments" -maxdepth 1 -mindepth 1 -type d | wc -l), $(du -sb "$data/segments" | cut -f1) bytes"
: > "$data.ready"
t0=$(date +%s.%N)
serve
until curl -sf "http://$http/readyz" >/dev/null 2>&1; do sleep 0.02; done
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "restart_to_ready_s=%.2f\n", b - a }'
grep -h "WAL replay\|replay" "$data.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -3
if [ -n "${PERF_DIR:-}" ]; then
  perf record -F 499 -g -p "$pid" -o "$PERF_DIR/flush.data" 2>/dev/null &
  perf_pid=$!
  sleep 1
  t=$(date +%s.%N)
  echo "flush of the replayed head: $(curl -sf -X POST "http://$http/api/v1/flush") in $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }')"
  kill -INT "$perf_pid"; wait "$perf_pid" || true; perf_pid=
fi
kill -TERM "$pid"; wait "$pid" || true
pid=
