import type { Log, Span, Trace } from "./api";
import { attrText, nsDiff } from "./util";

export interface SpanNode {
  span: Span;
  id: string;
  parent: SpanNode | null;
  children: SpanNode[];
  depth: number;
  /** ns since the trace start */
  start: number;
  end: number;
  dur: number;
  /** ns by which the span's end precedes its start (clock skew between
   *  hosts): 0 normally; the span is drawn with no width */
  skew: number;
  logs: LogItem[];
  error: boolean;
  /** critical-path segments [start, end] in ns since trace start */
  crit: [number, number][];
  /** lowercase text used by find-in-trace */
  text: string;
  /** position in depth-first order */
  order: number;
}

export interface LogItem {
  log: Log;
  /** index in model.logs (sorted by time) */
  idx: number;
  /** ns since the trace start */
  t: number;
  node: SpanNode | null;
}

export interface TraceModel {
  trace: Trace;
  startNs: string;
  total: number;
  roots: SpanNode[];
  nodes: SpanNode[]; // depth-first order
  byId: Map<string, SpanNode>;
  logs: LogItem[];
  services: { name: string; count: number; errors: number }[];
  maxDepth: number;
  errors: number;
}

export function buildModel(trace: Trace): TraceModel {
  const spans = trace.spans;
  let minStart: bigint | null = null;
  let maxEnd: bigint | null = null;
  for (const s of spans) {
    const a = BigInt(s.start_time_unix_nano);
    const b = BigInt(s.end_time_unix_nano);
    if (minStart === null || a < minStart) minStart = a;
    if (maxEnd === null || b > maxEnd) maxEnd = b;
  }
  if (minStart === null) {
    // a trace of logs only
    for (const l of trace.logs) {
      const a = BigInt(l.time_unix_nano);
      if (minStart === null || a < minStart) minStart = a;
      if (maxEnd === null || a > maxEnd) maxEnd = a;
    }
  }
  const startNs = (minStart ?? 0n).toString();
  const total = Math.max(1, Number((maxEnd ?? 0n) - (minStart ?? 0n)));

  const byId = new Map<string, SpanNode>();
  for (const s of spans) {
    const start = nsDiff(s.start_time_unix_nano, startNs);
    const rawEnd = nsDiff(s.end_time_unix_nano, startNs);
    const end = Math.max(start, rawEnd);
    const n: SpanNode = {
      span: s,
      id: s.span_id,
      parent: null,
      children: [],
      depth: 0,
      start,
      end,
      dur: end - start,
      skew: start - Math.min(start, rawEnd),
      logs: [],
      error: s.status?.code === "ERROR",
      crit: [],
      text: "",
      order: 0,
    };
    if (!byId.has(s.span_id)) byId.set(s.span_id, n);
  }
  const roots: SpanNode[] = [];
  for (const n of byId.values()) {
    const p = n.span.parent_span_id ? byId.get(n.span.parent_span_id) : undefined;
    if (p && p !== n) {
      n.parent = p;
      p.children.push(n);
    } else roots.push(n);
  }
  const byStart = (a: SpanNode, b: SpanNode) => a.start - b.start || a.span.name.localeCompare(b.span.name);
  roots.sort(byStart);

  // depth-first order, iterative (deep traces must not blow the stack)
  const nodes: SpanNode[] = [];
  const stack: SpanNode[] = roots.slice().reverse();
  const seen = new Set<SpanNode>();
  let maxDepth = 0;
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue; // cycles in bad data
    seen.add(n);
    n.depth = n.parent ? n.parent.depth + 1 : 0;
    if (n.depth > maxDepth) maxDepth = n.depth;
    n.order = nodes.length;
    nodes.push(n);
    n.children.sort(byStart);
    for (let i = n.children.length - 1; i >= 0; i--) stack.push(n.children[i]);
  }
  // spans in a parent cycle never reached from a root: show them as roots
  for (const n of byId.values())
    if (!seen.has(n)) {
      n.parent = null;
      n.order = nodes.length;
      nodes.push(n);
      roots.push(n);
      seen.add(n);
    }

  const logs: LogItem[] = trace.logs
    .map((log) => ({ log, idx: 0, t: nsDiff(log.time_unix_nano, startNs), node: (log.span_id && byId.get(log.span_id)) || null }))
    .sort((a, b) => a.t - b.t);
  logs.forEach((l, i) => {
    l.idx = i;
    l.node?.logs.push(l);
  });

  const svc = new Map<string, { name: string; count: number; errors: number }>();
  let errors = 0;
  for (const n of nodes) {
    const s = n.span;
    let e = svc.get(s.service_name);
    if (!e) svc.set(s.service_name, (e = { name: s.service_name, count: 0, errors: 0 }));
    e.count++;
    if (n.error) {
      e.errors++;
      errors++;
    }
    const parts = [s.name, s.service_name, s.span_id, s.kind, s.status?.message ?? ""];
    for (const [k, v] of Object.entries(s.attributes ?? {})) parts.push(k + "=" + attrText(v));
    for (const ev of s.events ?? []) parts.push(ev.name);
    for (const l of n.logs) parts.push(attrText(l.log.body));
    n.text = parts.join("\u0000").toLowerCase();
  }

  // critical path from the root that ends last
  if (roots.length) {
    const main = roots.reduce((a, b) => (b.end > a.end ? b : a));
    criticalPath(main, main.end);
  }

  return {
    trace,
    startNs,
    total,
    roots,
    nodes,
    byId,
    logs,
    services: [...svc.values()].sort((a, b) => b.count - a.count),
    maxDepth,
    errors,
  };
}

/**
 * Critical path: walk back from the span's end; the child that finished last
 * before the cursor was blocking, recurse into it, move the cursor to its
 * start; time not covered by children is the span's own.
 */
function criticalPath(root: SpanNode, limit: number) {
  const work: [SpanNode, number][] = [[root, limit]];
  while (work.length) {
    const [n, lim] = work.pop()!;
    let cursor = Math.min(n.end, lim);
    const kids = n.children.slice().sort((a, b) => b.end - a.end);
    for (const k of kids) {
      if (cursor <= n.start) break;
      if (k.start >= cursor || k.end <= n.start) continue;
      const kEnd = Math.min(k.end, cursor);
      if (kEnd < cursor) n.crit.push([kEnd, cursor]);
      work.push([k, kEnd]);
      cursor = Math.max(k.start, n.start);
    }
    if (cursor > n.start) n.crit.push([n.start, cursor]);
  }
}

/**
 * A span's self time, ns: its duration less the time covered by at least
 * one child (children clipped to the span, overlaps counted once), as in
 * Jaeger UI's trace statistics.
 */
export function selfTime(n: SpanNode): number {
  const iv = n.children
    .map((c) => [Math.max(c.start, n.start), Math.min(c.end, n.end)] as [number, number])
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0]);
  let covered = 0;
  let curA = -Infinity,
    curB = -Infinity;
  for (const [a, b] of iv) {
    if (a > curB) {
      if (curB > curA) covered += curB - curA;
      curA = a;
      curB = b;
    } else curB = Math.max(curB, b);
  }
  if (curB > curA) covered += curB - curA;
  return Math.max(0, n.dur - covered);
}

/** One row of the trace statistics: the spans of one service and operation. */
export interface OpStat {
  service: string;
  name: string;
  count: number;
  /** sums of durations and of self times, ns */
  total: number;
  self: number;
  min: number;
  max: number;
  errors: number;
}

/** Per (service, operation): count, total, self time, min, max and errors of the trace's spans. */
export function traceStats(m: TraceModel): OpStat[] {
  const by = new Map<string, OpStat>();
  for (const n of m.nodes) {
    const k = n.span.service_name + "\u0001" + n.span.name;
    let g = by.get(k);
    if (!g) by.set(k, (g = { service: n.span.service_name, name: n.span.name, count: 0, total: 0, self: 0, min: Infinity, max: 0, errors: 0 }));
    g.count++;
    g.total += n.dur;
    g.self += selfTime(n);
    g.min = Math.min(g.min, n.dur);
    g.max = Math.max(g.max, n.dur);
    if (n.error) g.errors++;
  }
  return [...by.values()];
}

export function severityClass(l: Log): string {
  const n = l.severity_number || 0;
  const t = (l.severity_text || "").toUpperCase();
  if (n >= 17 || t.startsWith("ERR") || t.startsWith("FATAL") || t === "CRITICAL") return "sev-error";
  if (n >= 13 || t.startsWith("WARN")) return "sev-warn";
  if (n >= 9 || t.startsWith("INFO")) return "sev-info";
  return "sev-debug";
}
export function severityLabel(l: Log): string {
  if (l.severity_text) return l.severity_text.toUpperCase();
  const n = l.severity_number || 0;
  if (n >= 21) return "FATAL";
  if (n >= 17) return "ERROR";
  if (n >= 13) return "WARN";
  if (n >= 9) return "INFO";
  if (n >= 5) return "DEBUG";
  return n ? "TRACE" : "UNSET";
}
