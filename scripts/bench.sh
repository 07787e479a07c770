#!/usr/bin/env bash
# Load benchmark: replays the shared workload over OTLP/gRPC into a release
# build of Skein on this machine, then reports ingest rate, server CPU per
# span, bytes on disk, and query latencies (trace by ID warm and cold,
# search by service + attribute + duration, full-text log search, logs of
# one trace).
#   scripts/bench.sh [TRACES]      default 70000 traces (about 1.05 M spans, 0.8 M logs)
# Environment:
#   WORKLOAD_DIR   reuse a generated workload (default /tmp/skein-workload-s1-TRACES)
#   SKEIN_BIN      use this binary instead of building one
#   LOADGEN_BIN    run `loadgen` from this binary (default: the same one), to compare servers with one client
#   CONNECTIONS    gRPC connections (4)
#   SETTLE         after the flush, wait until no compaction ran for this long (70s; 0s = no wait),
#                  at most SETTLE_MAX (15m)
#   LOOKUPS SEARCHES LOG_SEARCHES TRACE_LOGS   query counts (1000 200 240 200)
#   EMPTY_SEARCHES TRACEQL_SEARCHES   searches that match nothing, structural TraceQL searches (60 30)
#   SERVICE_MAP_QUERIES RED_QUERIES   service maps and RED queries over the whole range (30 30);
#                  the service map's call counts are checked against summary.json's edges
#   TRACEQL_METRICS_QUERIES   TraceQL metrics queries over the whole range, step 1m (30)
#   COLD_LOOKUPS   trace-by-ID lookups with the page cache dropped before each (0; needs root)
#   PERF_DIR       record `perf record --call-graph dwarf` of the server during query-only passes,
#                  one per query kind (PERF_QUERIES each, 100)
#   PERF_INGEST    record a flat `perf record` profile of the server into this file for PERF_INGEST_S
#                  seconds (30), starting 20 s into the load (no call graphs: little overhead)
#   SEGMENT_BYTES=1  break bytes down per file and Parquet column (scripts/segment_bytes.py, pyarrow)
#   KEEP_DATA=DIR    move the data directory to DIR at the end (it must not exist), to query the
#                  same data again later, e.g. with another binary and `skein loadgen --queries-only`
set -euo pipefail
cd "$(dirname "$0")/.."
traces=${1:-70000}
wl=${WORKLOAD_DIR:-/tmp/skein-workload-s1-$traces}
if [ ! -f "$wl/truth.jsonl" ]; then
  python3 -c 'import opentelemetry.proto, zstandard' 2>/dev/null || pip install -q opentelemetry-proto protobuf zstandard
  python3 ../shared/workload/gen_workload.py --seed 1 --traces "$traces" --out "$wl" --no-zstd
fi
data=$(mktemp -d)
pid=
perf_pid=
trap 'for p in $perf_pid $pid; do kill $p 2>/dev/null || true; done; rm -rf "$data" "$data.bin" "$data.ready" "$data.out"' EXIT
mkdir "$data.bin"
if [ -n "${SKEIN_BIN:-}" ]; then
  cp "$SKEIN_BIN" "$data.bin/skein"
else
  cargo build --release --locked -q
  # A private copy: a build in another worktree sharing CARGO_TARGET_DIR
  # may replace target/release/skein while this runs.
  cp "${CARGO_TARGET_DIR:-target}/release/skein" "$data.bin/skein"
fi
skein=$data.bin/skein
echo "binary: $(sha256sum "$skein" | cut -c1-12) ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo '+changes'))"
"$skein" serve --data-dir "$data" --otlp-grpc-addr 127.0.0.1:0 \
  --otlp-http-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --zipkin-addr 127.0.0.1:0 > "$data.ready" &
pid=$!
for _ in $(seq 100); do [ -s "$data.ready" ] && break; sleep 0.1; done
grpc=$(grep -o 'otlp_grpc=[^ ]*' "$data.ready" | cut -d= -f2)
http=$(grep -o ' http=[^ ]*' "$data.ready" | cut -d= -f2)
until curl -sf "http://$http/readyz" >/dev/null; do sleep 0.1; done
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; load average before: $(cut -d' ' -f1-3 /proc/loadavg); workload: $wl"
if [ -n "${PERF_INGEST:-}" ]; then
  # perf records the PID until interrupted (`-- sleep N` would record the sleep).
  (sleep 20; timeout -s INT "${PERF_INGEST_S:-30}" perf record -F 199 -p "$pid" -o "$PERF_INGEST" >/dev/null 2>&1) &
fi
"${LOADGEN_BIN:-$skein}" loadgen --data "$wl" --grpc "http://$grpc" --connections "${CONNECTIONS:-4}" \
  --pid "$pid" --api "$http" --settle "${SETTLE:-70s}" --settle-max "${SETTLE_MAX:-15m}" --lookups "${LOOKUPS:-1000}" \
  --searches "${SEARCHES:-200}" --log-searches "${LOG_SEARCHES:-240}" --trace-logs "${TRACE_LOGS:-200}" \
  --empty-searches "${EMPTY_SEARCHES:-60}" --traceql-searches "${TRACEQL_SEARCHES:-30}" \
  --service-map-queries "${SERVICE_MAP_QUERIES:-30}" --red-queries "${RED_QUERIES:-30}" \
  --traceql-metrics-queries "${TRACEQL_METRICS_QUERIES:-30}" \
  --cold-lookups "${COLD_LOOKUPS:-0}" | tee "$data.out"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
spans=$(grep -o 'spans_accepted=[0-9]*' "$data.out" | cut -d= -f2)
logs=$(grep -o 'logs_accepted=[0-9]*' "$data.out" | cut -d= -f2)
sum() { find "$data/segments" "$@" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
sp=$(sum -name spans.parquet); lp=$(sum -name logs.parquet)
si=$(sum -path '*span_index*'); li=$(sum -path '*log_index*')
ti=$(sum -name traces.idx); ro=$(sum -name rollup.json -o -name meta.json)
all=$(sum)
rb=$(sum -name resources.bin)
# Every file of the data directory (WAL, catalog, rollups, meta included):
# what is not a span or a log file is shared out by record count.
dir=$(find "$data" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
awk -v s="$spans" -v l="$logs" -v sp="$sp" -v lp="$lp" -v si="$si" -v li="$li" -v ti="$ti" -v ro="$ro" -v all="$all" -v rb="$rb" -v dir="$dir" 'BEGIN {
  printf "bytes_per_span: spans.parquet=%.1f span_index=%.1f traces.idx=%.1f total=%.1f\n", sp/s, si/s, ti/s, (sp+si+ti)/s
  printf "bytes_per_log: logs.parquet=%.1f log_index=%.1f total=%.1f\n", lp/l, li/l, (lp+li)/l
  printf "segments_total_bytes=%d (%.1f per span+log record; rollups+meta %d)\n", all, all/(s+l), ro
  other = dir - (sp+si+ti+rb) - (lp+li)
  printf "data_dir: bytes=%d per_span=%.1f per_log=%.1f other_per_record=%.2f\n", dir, (sp+si+ti+rb)/s + other/(s+l), (lp+li)/l + other/(s+l), other/(s+l)
}'
echo "segments: $(find "$data/segments" -maxdepth 1 -mindepth 1 -type d | wc -l); wal: $(du -sb "$data/wal" | cut -f1) bytes"
if [ "${SEGMENT_BYTES:-0}" = 1 ]; then
  python3 scripts/segment_bytes.py "$data/segments" "$spans" "$logs" || true
fi
if [ -n "${PERF_DIR:-}" ]; then
  # One profile per query kind, with DWARF call graphs (the release build
  # has no frame pointers), during a second, query-only pass.
  mkdir -p "$PERF_DIR"
  for kind in lookups searches log-searches; do
    perf record -F 499 --call-graph dwarf,16384 -p "$pid" -o "$PERF_DIR/query-$kind.data" 2>/dev/null &
    perf_pid=$!
    sleep 1
    other=(--lookups 0)
    [ "$kind" = lookups ] && other=()
    "$skein" loadgen --data "$wl" --queries-only --api "$http" "${other[@]}" --"$kind" "${PERF_QUERIES:-100}"
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    perf_pid=
  done
  echo "perf data: $PERF_DIR/query-*.data (server during query-only passes)"
fi
kill -TERM "$pid"; wait "$pid" || true
pid=
if [ -n "${KEEP_DATA:-}" ]; then
  mv "$data" "$KEEP_DATA" && mkdir "$data" && echo "data directory kept: $KEEP_DATA"
fi
