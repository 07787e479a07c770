#!/usr/bin/env python3
"""Bytes on disk of Skein segments, per file kind and per Parquet column.

    python3 scripts/segment_bytes.py DATA_DIR/segments SPANS LOGS

Per file kind (spans.parquet, logs.parquet, traces.idx, span_index/*,
log_index/* by tantivy file extension, the rest), and per column of
spans.parquet and logs.parquet the compressed bytes from the Parquet
metadata (column chunks summed over row groups and segments; Parquet
footers and page indexes are the difference to the file size), each also
per span or per log record. Needs pyarrow.
"""
import collections
import os
import sys

import pyarrow.parquet as pq


def main():
    root, spans, logs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    kinds = collections.Counter()
    cols = {"spans.parquet": collections.Counter(), "logs.parquet": collections.Counter()}
    raw = {"spans.parquet": collections.Counter(), "logs.parquet": collections.Counter()}
    encodings = {"spans.parquet": {}, "logs.parquet": {}}
    row_groups = collections.Counter()
    segments = 0
    for seg in sorted(os.listdir(root)):
        d = os.path.join(root, seg)
        if not os.path.isdir(d):
            kinds["(top level) " + seg] += os.path.getsize(d)
            continue
        segments += 1
        for dirpath, _, files in os.walk(d):
            for f in files:
                p = os.path.join(dirpath, f)
                rel = os.path.relpath(p, d)
                size = os.path.getsize(p)
                top = rel.split(os.sep)[0]
                if top in ("span_index", "log_index"):
                    ext = os.path.splitext(f)[1] or f
                    kinds["%s/*%s" % (top, ext)] += size
                else:
                    kinds[rel] += size
                if f in cols:
                    md = pq.ParquetFile(p).metadata
                    row_groups[f] += md.num_row_groups
                    for rg in range(md.num_row_groups):
                        g = md.row_group(rg)
                        for c in range(g.num_columns):
                            cc = g.column(c)
                            cols[f][cc.path_in_schema] += cc.total_compressed_size
                            raw[f][cc.path_in_schema] += cc.total_uncompressed_size
                            encodings[f].setdefault(cc.path_in_schema, (cc.compression, cc.encodings))
    per = lambda k: spans if k.startswith("span") or k == "traces.idx" else logs
    print("segments: %d; spans %d, logs %d" % (segments, spans, logs))
    print("%-40s %14s %10s" % ("file kind", "bytes", "per record"))
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
        n = per(k)
        print("%-40s %14d %10.2f %s" % (k, v, v / n, "per span" if n == spans else "per log"))
    for f, c in cols.items():
        n = spans if f.startswith("spans") else logs
        total = sum(c.values())
        print("\n%s: %d row groups; column chunks %d bytes = %.2f per record (file total %d)"
              % (f, row_groups[f], total, total / n, kinds.get(f, 0)))
        print("  %-40s %12s %9s %9s  %s" % ("column", "compressed", "per rec", "raw/rec", "compression, encodings"))
        for col, v in sorted(c.items(), key=lambda kv: -kv[1]):
            comp, enc = encodings[f][col]
            print("  %-40s %12d %9.2f %9.2f  %s %s" % (col, v, v / n, raw[f][col] / n, comp, ",".join(enc)))


if __name__ == "__main__":
    main()
