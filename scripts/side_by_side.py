#!/usr/bin/env python3
"""Prints issue 11's side-by-side table (Markdown) from one `scripts/bench.sh` output and one
`scripts/peer_side.py` JSON result on the same workload:

  python3 scripts/side_by_side.py skein.txt peer.json
"""
import json
import re
import sys


def skein_figures(text):
    def kv(prefix, key):
        for line in text.splitlines():
            if line.startswith(prefix):
                m = re.search(r"\b%s=([0-9.]+)" % re.escape(key), line)
                if m:
                    return float(m.group(1))
        return None

    # The whole life: the last CPU line bench.sh printed (with compaction when it settled).
    cpu = [l for l in text.splitlines() if re.match(r"ingest(\+\w+)*: server_cpu_s=", l)]
    last = cpu[-1] if cpu else ""
    return {
        "span": kv("data_dir:", "per_span"),
        "log": kv("data_dir:", "per_log"),
        "cpu": float(re.search(r"us_per_record=([0-9.]+)", last).group(1)) if last else None,
        "rss": float(re.search(r"server_peak_rss_mb=([0-9.]+)", last).group(1)) if last else None,
        "id50": kv("trace_by_id ", "p50_ms"),
        "id99": kv("trace_by_id ", "p99_ms"),
        "search": kv("search_traces ", "p50_ms"),
        "empty": kv("empty_search ", "p50_ms"),
        "log_search": kv("log_search ", "p50_ms"),
        "trace_logs": kv("logs_of_trace ", "p50_ms"),
        "traceql": kv("traceql_structural ", "p50_ms"),
        "spans": kv("spans_accepted=", "spans_accepted"),
        "logs": kv("spans_accepted=", "logs_accepted"),
    }


def peer_figures(p):
    q, st, side = p["queries"], p["storage"], p["side"]
    return {
        "span": st["traces_incl_trace_id_ts_bytes_on_disk_per_span"],
        "log": st["logs_bytes_on_disk_per_log"],
        "cpu": side["cpu_us_per_record"],
        "rss": side["process_peak_rss_mb"],
        "id50": q["a_trace_by_id"]["median_ms"],
        "id99": q["a_trace_by_id"]["p95_ms"],
        "search": q["b_search"]["median_ms"],
        "empty": side["empty_search"]["median_ms"],
        "log_search": q["d_log_search"]["median_ms"],
        "trace_logs": q["e_logs_by_trace"]["median_ms"],
        "traceql": None,
        "spans": p["insert"]["spans_inserted"],
        "logs": p["insert"]["logs_inserted"],
    }


ROWS = [
    ("span", "bytes on disk per span (every file)", "%.1f"),
    ("log", "bytes on disk per log record (every file)", "%.1f"),
    ("cpu", "CPU µs per record (Skein: whole server life; ClickHouse: INSERT + OPTIMIZE FINAL)", "%.1f"),
    ("rss", "peak RSS, MB (ClickHouse: the peer process, Python staging included)", "%.0f"),
    ("id50", "trace by ID p50, ms", "%.2f"),
    ("id99", "trace by ID p99, ms (ClickHouse: p95)", "%.2f"),
    ("search", "search service + attribute + duration p50, ms", "%.2f"),
    ("empty", "search matching nothing, whole range, p50, ms", "%.2f"),
    ("log_search", "full-text log search p50, ms", "%.2f"),
    ("trace_logs", "logs of one trace p50, ms", "%.2f"),
    ("traceql", "structural TraceQL `>>` p50, ms", "%.2f"),
]


def main():
    s = skein_figures(open(sys.argv[1]).read())
    p = peer_figures(json.load(open(sys.argv[2])))
    print("| figure (%d spans + %d logs) | Skein | ClickHouse | Skein / ClickHouse |" % (s["spans"] or 0, s["logs"] or 0))
    print("| --- | --- | --- | --- |")
    for key, label, fmt in ROWS:
        a, b = s[key], p[key]
        ratio = "%.2f" % (a / b) if a is not None and b else "—"
        print("| %s | %s | %s | %s |" % (label, fmt % a if a is not None else "—", fmt % b if b is not None else "—", ratio))


if __name__ == "__main__":
    main()
