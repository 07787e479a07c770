#!/usr/bin/env python3
"""Runs the shared ClickHouse peer (shared/workload/peer_clickhouse.py) on a workload and adds
what issue 11's side-by-side table needs that the peer does not report itself:

  * CPU seconds of ClickHouse's own work (chdb runs in this process, so getrusage(RUSAGE_SELF)
    around each statement counts every ClickHouse thread): the INSERTs (parsing the staged
    Parquet, sorting, compressing, skip indexes, the trace-ID materialized view) and
    OPTIMIZE FINAL (the merges). The peer's Python OTLP decoding is excluded, as the peer
    itself excludes it from its insert rate;
  * the same search the peer times as (b), but matching nothing over the whole range, in the two
    forms `skein loadgen --empty-searches` sends (a duration no span has; a value no span has);
  * the process's peak RSS (which includes the Python staging of the peer's convert phase).

The peer script is used as is (imported, not copied). Writes one JSON document to --out.

  python3 scripts/peer_side.py --data /tmp/skein-workload-s1-200000 --out /tmp/peer.json
"""
import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import sys
import time


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="workload directory written by gen_workload.py")
    ap.add_argument("--out", required=True, help="JSON result")
    ap.add_argument("--runs", type=int, default=20, help="runs per query (default 20)")
    ap.add_argument("--peer", default=os.path.join(os.path.dirname(__file__), "../../shared/workload/peer_clickhouse.py"))
    args = ap.parse_args()

    spec = importlib.util.spec_from_file_location("peer_clickhouse", args.peer)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    import chdb.session

    cpu = {"insert": 0.0, "optimize": 0.0}
    orig = chdb.session.Session.query

    def counted(self, sql, *a, **kw):
        kind = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        c0 = cpu_s()
        try:
            return orig(self, sql, *a, **kw)
        finally:
            if kind == "INSERT":
                cpu["insert"] += cpu_s() - c0
            elif kind == "OPTIMIZE":
                cpu["optimize"] += cpu_s() - c0

    chdb.session.Session.query = counted
    work = os.path.abspath(args.out) + ".work"
    shutil.rmtree(work, ignore_errors=True)
    peer_json = args.out + ".peer"
    try:
        peer.main(["--data", args.data, "--out", peer_json, "--runs", str(args.runs), "--keep", "--workdir", work])
        chdb.session.Session.query = orig
        result = json.load(open(peer_json))
        spans, logs = result["insert"]["spans_inserted"], result["insert"]["logs_inserted"]
        result["side"] = {
            "insert_cpu_s": round(cpu["insert"], 2),
            "optimize_cpu_s": round(cpu["optimize"], 2),
            "cpu_us_per_record": round((cpu["insert"] + cpu["optimize"]) * 1e6 / max(1, spans + logs), 2),
            "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        # The empty searches, on the kept database.
        srch = json.load(open(os.path.join(args.data, "summary.json"))).get("search") or {
            "service": "checkout", "attr": "http.response.status_code", "value": "500", "min_duration_ms": 50}
        s = chdb.session.Session(os.path.join(result["workdir"], "chdb"))
        forms = [
            (srch["value"], 10 * 3600 * 10**9),
            (srch["value"] + "-matches-nothing", int(srch["min_duration_ms"] * 1e6)),
        ]
        lat, rows = [], []
        for i in range(args.runs):
            value, dur = forms[i % 2]
            sql = ("SELECT DISTINCT TraceId FROM otel.otel_traces WHERE ServiceName = '%s' AND SpanAttributes['%s'] = '%s'"
                   " AND Duration > %d LIMIT 20" % (srch["service"], srch["attr"], value, dur))
            t = time.perf_counter()
            out = s.query(sql, "JSONCompactEachRow").bytes().decode()
            lat.append((time.perf_counter() - t) * 1000)
            rows.append(len([x for x in out.splitlines() if x]))
        s.close()
        result["side"]["empty_search"] = {"runs": args.runs, "median_ms": round(statistics.median(lat), 2),
                                          "max_ms": round(max(lat), 2), "rows_returned_max": max(rows)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if os.path.exists(peer_json):
            os.remove(peer_json)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["side"]), file=sys.stderr)


if __name__ == "__main__":
    main()
