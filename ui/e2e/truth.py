#!/usr/bin/env python3
"""Ground truth for the browser tests, read straight from a generated workload.

usage: truth.py WORKLOAD_DIR  ->  JSON on stdout:
  trace: a known trace (from truth.jsonl) with its spans and logs (span_id, body)
  error_trace: a trace with an error
  slowest: the five longest traces, longest first; newest: every trace ID, newest first
  word: a word from one of the known trace's logs that few other logs contain
  edges, start_unix_nano, end_unix_nano: from summary.json / truth.jsonl
Needs: pip install opentelemetry-proto protobuf
"""
import glob
import json
import os
import re
import sys

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

wl = sys.argv[1]
rows = [json.loads(line) for line in open(os.path.join(wl, "truth.jsonl"))]
summary = json.load(open(os.path.join(wl, "summary.json")))

# a mid-sized, error-free trace whose logs all belong to spans: deterministic for a given seed
cands = [r for r in rows if 8 <= r["span_count"] <= 20 and r["log_count"] >= 4 and not r["has_error"] and len(r["services"]) >= 3]
known = cands[len(cands) // 2]
tid = known["trace_id"]
errs = [r for r in rows if r["has_error"]]


def sval(v):
    k = v.WhichOneof("value")
    return getattr(v, k) if k else None


spans = []
for f in sorted(glob.glob(os.path.join(wl, "traces-*.pb"))):
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.ParseFromString(open(f, "rb").read())
    for rs in req.resource_spans:
        svc = next((sval(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                if s.trace_id.hex() == tid:
                    spans.append({"span_id": s.span_id.hex(), "parent_span_id": s.parent_span_id.hex(), "name": s.name, "service": svc,
                                  "start_unix_nano": str(s.start_time_unix_nano), "end_unix_nano": str(s.end_time_unix_nano),
                                  "error": s.status.code == 2})

logs = []
words = {}
for f in sorted(glob.glob(os.path.join(wl, "logs-*.pb"))):
    req = logs_service_pb2.ExportLogsServiceRequest()
    req.ParseFromString(open(f, "rb").read())
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                body = str(sval(lr.body))
                for w in set(re.findall(r"[a-z]{6,}", body.lower())):
                    words[w] = words.get(w, 0) + 1
                if lr.trace_id.hex() == tid:
                    logs.append({"span_id": lr.span_id.hex(), "body": body, "severity": lr.severity_text,
                                 "time_unix_nano": str(lr.time_unix_nano)})

own = set()
for l in logs:
    own |= set(re.findall(r"[a-z]{6,}", l["body"].lower()))
word = min(sorted(own), key=lambda w: (words[w], w)) if own else "timeout"

print(json.dumps({
    "trace": {**known, "spans": spans, "logs": logs},
    "error_trace": errs[0] if errs else None,
    # the longest traces of the workload, longest first (ties: newest first, as sort=duration)
    "slowest": sorted(rows, key=lambda r: (-r["duration_ns"], -r["start_unix_nano"]))[:5],
    # trace IDs newest first (by trace start)
    "newest": [r["trace_id"] for r in sorted(rows, key=lambda r: -r["start_unix_nano"])],
    "word": word,
    "word_count": words.get(word, 0),
    "edges": summary["edges"],
    "services": summary["services"],
    "start_unix_nano": str(min(r["start_unix_nano"] for r in rows)),
    "end_unix_nano": str(max(r["start_unix_nano"] + r["duration_ns"] for r in rows)),
}))
