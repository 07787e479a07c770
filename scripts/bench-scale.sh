#!/usr/bin/env bash
# Scale-out benchmark (issue 14), every process on this machine, moto as the bucket:
#   1. spans/s accepted by one `--role ingest` node (one `skein loadgen`, the whole workload);
#   2. spans/s accepted by two ingest nodes (two `skein loadgen`s at once, each with every other
#      request file of the workload: round robin per request), over the wall time of both;
#   3. query latency (trace lookups, searches, log searches) from a `--role query` node over the
#      two nodes' flushed data, against one `--role all` node loaded with the same workload.
#   scripts/bench-scale.sh [TRACES]     default 20000 traces (about 300 k spans, 230 k logs)
# Environment:
#   SKEIN_BIN      the binary (default: $CARGO_TARGET_DIR/release/skein, else target/release/skein;
#                  this script does not build)
#   WORKLOAD_DIR   reuse a generated workload (default /tmp/skein-workload-s1-TRACES)
#   CONNECTIONS    gRPC connections per loadgen (4)
#   LOOKUPS SEARCHES LOG_SEARCHES   query counts (300 60 60)
#   MOTO_SERVER    moto's server command (moto_server; `pip install 'moto[server]'`)
set -euo pipefail
cd "$(dirname "$0")/.."
traces=${1:-20000}
wl=${WORKLOAD_DIR:-/tmp/skein-workload-s1-$traces}
bin=${SKEIN_BIN:-${CARGO_TARGET_DIR:-target}/release/skein}
[ -x "$bin" ] || { echo "no binary at $bin: set SKEIN_BIN" >&2; exit 1; }
if [ ! -f "$wl/truth.jsonl" ]; then
  python3 -c 'import opentelemetry.proto' 2>/dev/null || pip install -q opentelemetry-proto protobuf
  python3 ../shared/workload/gen_workload.py --seed 1 --traces "$traces" --out "$wl" --no-zstd >/dev/null
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/skein-bench-scale.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
# A private copy: a build sharing the target dir may replace the binary while this runs.
cp "$bin" "$tmp/skein"
skein=$tmp/skein
echo "binary: $bin ($(sha256sum "$skein" | cut -c1-12)); $(git rev-parse --short HEAD)"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; load average before: $(cut -d' ' -f1-3 /proc/loadavg); workload: $wl"

# Every other trace request file and every other log request file for each
# of two senders: round robin per request, each signal on its own, as an
# SDK's trace and log exporters send.
mkdir "$tmp/half0" "$tmp/half1"
for kind in traces logs; do
  i=0
  for f in $(cd "$wl" && ls -- "$kind"-*.pb | sort); do
    ln -s "$wl/$f" "$tmp/half$((i % 2))/$f"
    i=$((i + 1))
  done
done
for h in half0 half1; do ln -s "$wl/truth.jsonl" "$tmp/$h/"; ln -s "$wl/summary.json" "$tmp/$h/"; done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
${MOTO_SERVER:-moto_server} -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
pids+=($!)
until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.2; done
curl -sf -X PUT "http://127.0.0.1:$port/bench" >/dev/null
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1

# start NAME ARGS...: starts `skein serve` on port 0, waits until ready; sets
# ${NAME}_pid, ${NAME}_grpc, ${NAME}_http.
start() {
  local name=$1; shift
  mkdir -p "$tmp/$name"
  SKEIN_LOG=warn "$skein" serve --data-dir "$tmp/$name/data" --otlp-grpc-addr 127.0.0.1:0 \
    --otlp-http-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --zipkin-addr 127.0.0.1:0 "$@" \
    > "$tmp/$name/ready" 2> "$tmp/$name/log" &
  pids+=($!)
  printf -v "${name}_pid" %s $!
  for _ in $(seq 300); do [ -s "$tmp/$name/ready" ] && break; sleep 0.1; done
  printf -v "${name}_grpc" %s "$(grep -o 'otlp_grpc=[^ ]*' "$tmp/$name/ready" | cut -d= -f2)"
  local http; http=$(grep -o ' http=[^ ]*' "$tmp/$name/ready" | cut -d= -f2)
  printf -v "${name}_http" %s "$http"
  until curl -sf "http://$http/readyz" >/dev/null; do sleep 0.1; done
}
# loadgen OUT ARGS...: one `skein loadgen`, its report in OUT and its own CPU
# time (it shares the 2 cores with the servers) in OUT.cpu.
loadgen() {
  local out=$1; shift
  /usr/bin/time -f '%U %S' -o "$out.cpu" "$skein" loadgen --connections "${CONNECTIONS:-4}" "$@" > "$out"
}
cpu() { awk '{printf "%.2f", $1 + $2}' "$1.cpu"; }
# metric NAME HOST:PORT: the sum of a metric's samples on that node.
metric() { curl -sf "http://$2/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {printf "%.0f", s}'; }
field() { grep -o "$1=[0-9.]*" "$2" | head -1 | cut -d= -f2; }

echo "== one ingest node"
start one_ingest --role ingest --node-id solo --storage-url s3://bench/one
loadgen "$tmp/one.out" --data "$wl" --grpc "http://$one_ingest_grpc" --pid "$one_ingest_pid"
grep -E 'elapsed_s|spans_accepted|spans_per_s|request_latency|ingest:' "$tmp/one.out"
echo "loadgen_cpu_s=$(cpu "$tmp/one.out")"
one_rate=$(field spans_per_s "$tmp/one.out")
kill "$one_ingest_pid"

echo "== two ingest nodes, one loadgen each, every other request"
start n1 --role ingest --node-id n1 --storage-url s3://bench/two
start n2 --role ingest --node-id n2 --storage-url s3://bench/two
loadgen "$tmp/n1.out" --data "$tmp/half0" --grpc "http://$n1_grpc" --pid "$n1_pid" &
l1=$!
loadgen "$tmp/n2.out" --data "$tmp/half1" --grpc "http://$n2_grpc" --pid "$n2_pid" &
l2=$!
wait $l1 $l2
for n in n1 n2; do
  echo "$n:"
  grep -E 'elapsed_s|spans_accepted|spans_per_s|request_latency|ingest:' "$tmp/$n.out" | sed 's/^/  /'
  echo "  loadgen_cpu_s=$(cpu "$tmp/$n.out")"
done
# Both senders start sending once they have read their files, within a
# fraction of a second of each other: all spans over the longer send.
spans2=$(( $(field spans_accepted "$tmp/n1.out") + $(field spans_accepted "$tmp/n2.out") ))
two_rate=$(python3 -c "print(round($spans2 / max($(field elapsed_s "$tmp/n1.out"), $(field elapsed_s "$tmp/n2.out"))))")
echo "spans/s accepted: one node $one_rate, two nodes $two_rate (all spans over the longer of the two sends)"

echo "== query node over the two nodes' uploaded segments, against one all node"
for h in $n1_http $n2_http; do curl -sf -X POST "http://$h/api/v1/flush" >/dev/null; done
printf '[cluster]\ncatalog_poll_interval = "1s"\n' > "$tmp/query.toml"
start q --role query --node-id q --storage-url s3://bench/two --config "$tmp/query.toml" \
  --ingest-nodes "http://$n1_http,http://$n2_http"
# Like for like: the split deployment has no compactor running here, so the
# single node does not compact either; both answer from flushed segments.
printf '[compaction]\nenabled = false\n' > "$tmp/all.toml"
start all --config "$tmp/all.toml"
loadgen "$tmp/all-load.out" --data "$wl" --grpc "http://$all_grpc"
curl -sf -X POST "http://$all_http/api/v1/flush" >/dev/null
queries=(--lookups "${LOOKUPS:-300}" --searches "${SEARCHES:-60}" --log-searches "${LOG_SEARCHES:-60}")
# Two passes each, alternating: the first reads the query node's segments
# from the bucket into its cache, the second finds them there.
for pass in 1 2; do
  for n in q all; do
    api_var=${n}_http
    segs=$(curl -sf "http://${!api_var}/api/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["segments"])')
    echo "$n, pass $pass ($segs segments):"
    r0=$(metric skein_object_store_requests "${!api_var}"); b0=$(metric skein_object_store_read_bytes "${!api_var}")
    loadgen "$tmp/$n.q$pass" --data "$wl" --queries-only --api "${!api_var}" "${queries[@]}"
    grep -E '^[a-z_]+ n=' "$tmp/$n.q$pass" | sed 's/^/  /'
    r1=$(metric skein_object_store_requests "${!api_var}"); b1=$(metric skein_object_store_read_bytes "${!api_var}")
    echo "  object store during the pass: $((r1 - r0)) requests, $((b1 - b0)) bytes read"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
