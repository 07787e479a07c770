import dagre from "@dagrejs/dagre";
import { useMemo, useState } from "preact/hooks";
import { api, type Edge, type RedResponse } from "../api";
import { Busy, Empty, ErrorState, Link, Loading, TimeRangePicker } from "../components";
import {
  type Loc,
  buildUrl,
  fmtDuration,
  fmtNum,
  navigate,
  rangeFromQuery,
  rangeToQuery,
  resolveRange,
  serviceColor,
  useFetch,
} from "../util";

interface NodeStat {
  name: string;
  requests: number;
  errors: number;
  p95: number;
}

export function nodeStats(red: RedResponse | null): Map<string, NodeStat> {
  const out = new Map<string, NodeStat>();
  for (const s of red?.series ?? []) {
    if (s.operation != null) continue;
    const st = out.get(s.service) ?? { name: s.service, requests: 0, errors: 0, p95: 0 };
    for (const p of s.points) {
      st.requests += p.request_count;
      st.errors += p.error_count;
      st.p95 = Math.max(st.p95, p.p95_ns);
    }
    out.set(s.service, st);
  }
  return out;
}

/** TraceQL for "traces in which `parent` calls `child`". */
export function edgeQuery(parent: string, child: string): string {
  return `{ resource.service.name = ${JSON.stringify(parent)} } > { resource.service.name = ${JSON.stringify(child)} }`;
}

export function MapPage(props: { loc: Loc }) {
  const q = props.loc.query;
  const range = rangeFromQuery(q);
  const bounds = useMemo(() => resolveRange(range), [props.loc.search]);
  const step = `${Math.max(1, Math.ceil((bounds.endMs - bounds.startMs) / 1000))}s`;
  const deps = useFetch(`deps:${props.loc.search}`, (s) => api.dependencies({ start: bounds.start, end: bounds.end }, s));
  const red = useFetch(`red:${props.loc.search}`, (s) => api.red({ start: bounds.start, end: bounds.end, step }, s));
  const rangeQ = rangeToQuery(range);
  const stats = useMemo(() => nodeStats(red.data), [red.data]);
  const secs = Math.max(1, (bounds.endMs - bounds.startMs) / 1000);
  return (
    <div class="page map-page" data-testid="page-map">
      <div class="page-head">
        <h1>Service map</h1>
        <span class="spacer" />
        <TimeRangePicker value={range} onChange={(r) => navigate(buildUrl("/map", rangeToQuery(r)))} />
      </div>
      <Busy on={(deps.loading || red.loading) && !!deps.data} />
      {deps.loading && !deps.data && <Loading what="service dependencies" />}
      {deps.error && <ErrorState error={deps.error} retry={deps.reload} what="the service dependencies" />}
      {red.error && (
        <div class="state error small" data-testid="error">
          Node statistics unavailable ({red.error.message}); the graph still shows the calls.
        </div>
      )}
      {deps.data && deps.data.edges.length === 0 && stats.size === 0 && (
        <Empty title="No service calls in this time range" testid="empty">
          The map is drawn from spans whose parent span belongs to another service. Widen the time range, or check that
          your services propagate trace context so their spans join up.
          <div class="empty-actions">
            {["24h", "7d", "30d", "all"].map((r) => (
              <button type="button" onClick={() => navigate(buildUrl("/map", { range: r }))}>
                {r === "all" ? "Show any time" : `Show last ${r}`}
              </button>
            ))}
          </div>
        </Empty>
      )}
      {deps.data && (deps.data.edges.length > 0 || stats.size > 0) && (
        <>
          <Graph edges={deps.data.edges} stats={stats} secs={secs} rangeQ={rangeQ} />
          <EdgeTable edges={deps.data.edges} rangeQ={rangeQ} />
        </>
      )}
    </div>
  );
}

const NW = 190,
  NH = 66;

function Graph(props: { edges: Edge[]; stats: Map<string, NodeStat>; secs: number; rangeQ: Record<string, string | undefined> }) {
  const [hover, setHover] = useState<string | null>(null);
  const layout = useMemo(() => {
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 28, ranksep: 90, marginx: 20, marginy: 20 });
    g.setDefaultEdgeLabel(() => ({}));
    const names = new Set<string>();
    props.edges.forEach((e) => (names.add(e.parent), names.add(e.child)));
    props.stats.forEach((_, k) => names.add(k));
    for (const n of [...names].sort()) g.setNode(n, { width: NW, height: NH });
    for (const e of props.edges) if (e.parent !== e.child) g.setEdge(e.parent, e.child, { width: 60, height: 14, labelpos: "c" });
    dagre.layout(g);
    const gl = g.graph();
    return {
      width: gl.width ?? 600,
      height: gl.height ?? 300,
      nodes: g.nodes().map((n) => ({ name: n, ...(g.node(n) as { x: number; y: number }) })),
      edges: props.edges
        .filter((e) => e.parent !== e.child)
        .map((e) => ({ e, pts: (g.edge(e.parent, e.child) as unknown as { points: { x: number; y: number }[] }).points })),
    };
  }, [props.edges, props.stats]);
  const maxCalls = Math.max(1, ...props.edges.map((e) => e.call_count));
  const path = (pts: { x: number; y: number }[]) => {
    if (pts.length < 2) return "";
    let d = `M${pts[0].x},${pts[0].y}`;
    if (pts.length === 2) return d + ` L${pts[1].x},${pts[1].y}`;
    for (let i = 1; i < pts.length - 1; i++) {
      const mx = (pts[i].x + pts[i + 1].x) / 2,
        my = (pts[i].y + pts[i + 1].y) / 2;
      d += ` Q${pts[i].x},${pts[i].y} ${i === pts.length - 2 ? pts[i + 1].x : mx},${i === pts.length - 2 ? pts[i + 1].y : my}`;
    }
    return d;
  };
  return (
    <div class="map-wrap">
      <svg
        class="service-map"
        data-testid="service-map"
        viewBox={`0 0 ${layout.width} ${layout.height}`}
        style={{ maxWidth: "100%", width: layout.width, aspectRatio: `${layout.width} / ${layout.height}` }}
      >
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" orient="auto-start-reverse">
            <path d="M0,0 L10,5 L0,10 z" class="arrowhead" />
          </marker>
        </defs>
        {layout.edges.map(({ e, pts }) => {
          const mid = pts[Math.floor(pts.length / 2)];
          const errRate = e.call_count ? e.error_count / e.call_count : 0;
          const hot = hover === e.parent || hover === e.child;
          return (
            <g
              class={`map-edge${errRate > 0.05 ? " err" : ""}${hot ? " hot" : ""}`}
              data-testid="map-edge"
              data-parent={e.parent}
              data-child={e.child}
              data-calls={e.call_count}
              data-connection-type={e.connection_type ?? ""}
              onClick={() => navigate(buildUrl("/search", { q: edgeQuery(e.parent, e.child), ...props.rangeQ }))}
            >
              <title>
                {e.parent} → {e.child}
                {e.connection_type ? ` (${e.connection_type.replace("_", " ")})` : ""}: {e.call_count} calls, {e.error_count} errors. Click to find traces crossing this edge.
              </title>
              <path d={path(pts)} class="edge-hit" />
              <path d={path(pts)} class="edge-line" marker-end="url(#arrow)" style={{ strokeWidth: 1.2 + 3.5 * Math.sqrt(e.call_count / maxCalls) }} />
              <text x={mid.x} y={mid.y - 4} class="edge-label" text-anchor="middle">
                {fmtNum(e.call_count)}
                {e.error_count ? ` · ${fmtNum(e.error_count)} err` : ""}
              </text>
            </g>
          );
        })}
        {layout.nodes.map((n) => {
          const st = props.stats.get(n.name);
          const errPct = st && st.requests ? (st.errors / st.requests) * 100 : 0;
          return (
            <g
              class={`map-node${errPct >= 5 ? " err" : ""}`}
              transform={`translate(${n.x - NW / 2},${n.y - NH / 2})`}
              data-testid="map-node"
              data-service={n.name}
              onClick={() => navigate(buildUrl(`/service/${encodeURIComponent(n.name)}`, props.rangeQ))}
              onMouseEnter={() => setHover(n.name)}
              onMouseLeave={() => setHover(null)}
            >
              <title>
                {st
                  ? `${n.name}: ${fmtNum(st.requests / props.secs)} requests to the service per second (entry spans), ${errPct.toFixed(1)}% failed, p95 ≈ ${fmtDuration(st.p95)} (estimated from histogram buckets). Click to open its overview.`
                  : `Open the overview of ${n.name}`}
              </title>
              <rect width={NW} height={NH} rx="8" class="node-box" />
              <rect width="6" height={NH} rx="3" fill={serviceColor(n.name)} />
              <text x="14" y="22" class="node-name">
                {n.name.length > 22 ? n.name.slice(0, 21) + "…" : n.name}
              </text>
              {st ? (
                <>
                  <text x="14" y="40" class="node-stat">
                    {fmtNum(st.requests / props.secs)} req/s · {errPct.toFixed(errPct < 10 ? 1 : 0)}% err
                  </text>
                  <text x="14" y="56" class="node-stat">
                    p95 ≈ {fmtDuration(st.p95)} · {fmtNum(st.requests)} req
                  </text>
                </>
              ) : (
                <text x="14" y="42" class="node-stat">
                  no statistics
                </text>
              )}
            </g>
          );
        })}
      </svg>
      <div class="small muted">
        Node: requests to the service per second (its entry spans: server and consumer spans, and roots), the share of
        them that failed, and their p95 latency (≈: estimated from histogram buckets) over the range. Edge: calls from one service to
        another (thicker = more). Click a node for its overview, an edge to search the traces that cross it.
      </div>
    </div>
  );
}

function EdgeTable(props: { edges: Edge[]; rangeQ: Record<string, string | undefined> }) {
  const edges = props.edges.slice().sort((a, b) => b.call_count - a.call_count);
  return (
    <details class="edge-table">
      <summary>All {edges.length} edges as a table</summary>
      <table class="data" data-testid="edge-table">
        <thead>
          <tr>
            <th>Caller</th>
            <th>Callee</th>
            <th class="num">Calls</th>
            <th class="num">Errors</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {edges.map((e) => (
            <tr data-testid="edge-row" data-parent={e.parent} data-child={e.child}>
              <td>{e.parent}</td>
              <td>{e.child}</td>
              <td class="num">{e.call_count}</td>
              <td class={e.error_count ? "num err" : "num"}>{e.error_count}</td>
              <td>
                <Link href={buildUrl("/search", { q: edgeQuery(e.parent, e.child), ...props.rangeQ })}>traces</Link>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </details>
  );
}
