import { useEffect, useMemo, useState } from "preact/hooks";
import { api } from "../api";
import { Empty, ErrorState, Link, Loading, TimeText } from "../components";
import { type SpanNode, type TraceModel, buildModel } from "../tracemodel";
import { type Loc, buildUrl, fmtDuration, navigate, nsToMs, serviceColor, useFetch } from "../util";

interface Agg {
  count: number;
  total: number;
  first: number; // earliest start offset
  errors: number;
}
interface CRow {
  key: string;
  service: string;
  name: string;
  depth: number;
  a: Agg | null;
  b: Agg | null;
}

/** Mean duration of one call, ns. */
const mean = (g: Agg) => g.total / g.count;

/**
 * Per-call change from A to B: an operation called once in A and eight
 * times in B is judged on its mean time per call, not on the sum, which
 * grows with the number of calls. Over 10 % slower is red, over 10 %
 * faster green.
 */
export function perCallChange(a: Agg, b: Agg): { d: number; pct: number; cls: "err" | "ok" | "muted" } {
  const d = mean(b) - mean(a);
  const pct = mean(a) ? (d / mean(a)) * 100 : 0;
  return { d, pct, cls: pct > 10 ? "err" : pct < -10 ? "ok" : "muted" };
}

function add(map: Map<string, Agg>, key: string, n: SpanNode) {
  let g = map.get(key);
  if (!g) map.set(key, (g = { count: 0, total: 0, first: n.start, errors: 0 }));
  g.count++;
  g.total += n.dur;
  g.first = Math.min(g.first, n.start);
  if (n.error) g.errors++;
}

const SEP = "\u0001";
function flatAgg(m: TraceModel) {
  const map = new Map<string, Agg>();
  for (const n of m.nodes) add(map, n.span.service_name + SEP + n.span.name, n);
  return map;
}
function pathAgg(m: TraceModel) {
  const map = new Map<string, Agg>();
  const keys = new Map<SpanNode, string>();
  for (const n of m.nodes) {
    const k = (n.parent ? keys.get(n.parent)! + "\u0002" : "") + n.span.service_name + SEP + n.span.name;
    keys.set(n, k);
    add(map, k, n);
  }
  return map;
}

function mergedRows(a: TraceModel, b: TraceModel, mode: string): CRow[] {
  const fa = mode === "tree" ? pathAgg(a) : flatAgg(a);
  const fb = mode === "tree" ? pathAgg(b) : flatAgg(b);
  const keys = new Set([...fa.keys(), ...fb.keys()]);
  const rows: CRow[] = [...keys].map((key) => {
    const parts = key.split("\u0002");
    const [service, name] = parts[parts.length - 1].split(SEP);
    return { key, service, name, depth: parts.length - 1, a: fa.get(key) ?? null, b: fb.get(key) ?? null };
  });
  if (mode === "tree") {
    // depth-first by first start in either trace, so the tree reads top-down
    const first = (r: CRow) => Math.min(r.a?.first ?? Infinity, r.b?.first ?? Infinity);
    const byParent = new Map<string, CRow[]>();
    for (const r of rows) {
      const p = r.key.includes("\u0002") ? r.key.slice(0, r.key.lastIndexOf("\u0002")) : "";
      if (!byParent.has(p)) byParent.set(p, []);
      byParent.get(p)!.push(r);
    }
    const out: CRow[] = [];
    const walk = (p: string) => {
      const kids = (byParent.get(p) ?? []).sort((x, y) => first(x) - first(y));
      for (const k of kids) {
        out.push(k);
        walk(k.key);
      }
    };
    walk("");
    return out;
  }
  const delta = (r: CRow) => (r.a && r.b ? Math.abs(mean(r.b) - mean(r.a)) * Math.max(r.a.count, r.b.count) : (r.a ?? r.b)!.total);
  return rows.sort((x, y) => delta(y) - delta(x));
}

export function ComparePage(props: { loc: Loc }) {
  const q = props.loc.query;
  const a = (q.get("a") ?? "").trim().toLowerCase();
  const b = (q.get("b") ?? "").trim().toLowerCase();
  const [fa, setFa] = useState(a);
  const [fb, setFb] = useState(b);
  useEffect(() => {
    setFa(a);
    setFb(b);
  }, [a, b]);
  const ra = useFetch(a ? `trace:${a}` : null, (s) => api.trace(a, s));
  const rb = useFetch(b ? `trace:${b}` : null, (s) => api.trace(b, s));
  const ma = useMemo(() => (ra.data ? buildModel(ra.data) : null), [ra.data]);
  const mb = useMemo(() => (rb.data ? buildModel(rb.data) : null), [rb.data]);
  const mode = q.get("view") === "tree" ? "tree" : "flat";
  return (
    <div class="page compare-page" data-testid="page-compare">
      <h1>Compare two traces</h1>
      <form
        class="compare-form"
        onSubmit={(e) => {
          e.preventDefault();
          navigate(buildUrl("/compare", { a: fa.trim(), b: fb.trim(), view: mode === "tree" ? "tree" : "" }));
        }}
      >
        <label>
          <span class="lbl">Trace A</span>
          <input class="mono" value={fa} placeholder="trace ID" data-testid="compare-a" onInput={(e) => setFa((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          <span class="lbl">Trace B</span>
          <input class="mono" value={fb} placeholder="trace ID" data-testid="compare-b" onInput={(e) => setFb((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" class="primary" data-testid="compare-submit">
          Compare
        </button>
      </form>
      {(!a || !b) && (
        <Empty title="Pick two traces" testid="empty">
          Paste two trace IDs above, or tick two traces in the <Link href="/search">search results</Link> and press
          “Compare”. Spans are matched by service and operation; the table shows which got slower and which appear in
          only one trace.
        </Empty>
      )}
      {(ra.loading || rb.loading) && <Loading what="traces" />}
      {ra.error && <ErrorState error={ra.error} retry={ra.reload} what={`trace A (${a})`} />}
      {rb.error && <ErrorState error={rb.error} retry={rb.reload} what={`trace B (${b})`} />}
      {ma && mb && <CompareView a={ma} b={mb} mode={mode} />}
    </div>
  );
}

function CompareView(props: { a: TraceModel; b: TraceModel; mode: string }) {
  const { a, b, mode } = props;
  const rows = useMemo(() => mergedRows(a, b, mode), [a, b, mode]);
  const scale = Math.max(a.total, b.total);
  const onlyA = rows.filter((r) => !r.b).length;
  const onlyB = rows.filter((r) => !r.a).length;
  const slower = rows.filter((r) => r.a && r.b && perCallChange(r.a, r.b).cls === "err").length;
  const head = (m: TraceModel, label: string) => {
    const root = m.roots.length ? m.roots.reduce((x, y) => (y.dur > x.dur ? y : x)) : null;
    return (
      <div class="cmp-head">
        <span class={`cmp-tag ${label}`}>{label.toUpperCase()}</span>
        <Link href={`/trace/${m.trace.trace_id}`}>
          {root ? `${root.span.service_name}: ${root.span.name}` : m.trace.trace_id}
        </Link>
        <span class="muted small mono"> {m.trace.trace_id}</span>
        <div class="small">
          {fmtDuration(m.total)} · {m.nodes.length} spans · {m.errors} errors · <TimeText ms={nsToMs(m.startNs)} />
        </div>
      </div>
    );
  };
  const bar = (g: Agg | null, cls: string) =>
    g ? (
      <div class="cmp-bar-track">
        <div class={`cmp-bar ${cls}`} style={{ left: `${(g.first / scale) * 100}%`, width: `${Math.max(0.3, (g.total / g.count / scale) * 100)}%` }} />
      </div>
    ) : (
      <div class="cmp-bar-track" />
    );
  return (
    <>
      <div class="cmp-heads">
        {head(a, "a")}
        {head(b, "b")}
      </div>
      <div class="cmp-summary" data-testid="compare-summary">
        Duration {fmtDuration(a.total)} → {fmtDuration(b.total)} (
        <span class={b.total > a.total ? "err" : "ok"}>
          {b.total >= a.total ? "+" : "−"}
          {fmtDuration(Math.abs(b.total - a.total))}
        </span>
        ) · <span class="cmp-tag a">only in A</span> {onlyA} · <span class="cmp-tag b">only in B</span> {onlyB} · {slower} slower per
        call by more than 10%
        <span class="spacer" />
        <span class="seg">
          <Link class={mode === "flat" ? "button active" : "button"} href={buildUrl("/compare", { a: a.trace.trace_id, b: b.trace.trace_id })}>
            By service and operation
          </Link>
          <Link
            class={mode === "tree" ? "button active" : "button"}
            href={buildUrl("/compare", { a: a.trace.trace_id, b: b.trace.trace_id, view: "tree" })}
          >
            Merged tree
          </Link>
        </span>
      </div>
      <div class="table-scroll" data-testid="compare-scroll">
      <table class="cmp-table" data-testid="compare-table">
        <thead>
          <tr>
            <th>Service: operation</th>
            <th class="num" title="Spans of this operation in trace A">A calls</th>
            <th class="num" title="Sum of their durations">A total</th>
            <th class="num" title="Mean duration of one call">A per call</th>
            <th class="num" title="Spans of this operation in trace B">B calls</th>
            <th class="num" title="Sum of their durations">B total</th>
            <th class="num" title="Mean duration of one call">B per call</th>
            <th class="num" title="Change of the mean time per call from A to B (red: over 10 % slower, green: over 10 % faster); the change of the total is below it">
              Change per call
            </th>
            <th class="cmp-bars-col">A / B on a shared axis (first start, mean duration)</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => {
            let change;
            let cls = "";
            if (!r.b) {
              change = <span class="cmp-tag a">only in A</span>;
              cls = "only-a";
            } else if (!r.a) {
              change = <span class="cmp-tag b">only in B</span>;
              cls = "only-b";
            } else {
              const c = perCallChange(r.a, r.b);
              const dt = r.b.total - r.a.total;
              cls = c.cls === "err" ? "slower" : c.cls === "ok" ? "faster" : "";
              change = (
                <>
                  <span class={c.cls} data-testid="compare-change">
                    {c.d >= 0 ? "+" : "−"}
                    {fmtDuration(Math.abs(c.d))} ({c.pct >= 0 ? "+" : ""}
                    {c.pct.toFixed(0)}%)
                  </span>
                  {r.a.count !== r.b.count && (
                    <div class="muted small" data-testid="compare-total-change">
                      total {dt >= 0 ? "+" : "−"}
                      {fmtDuration(Math.abs(dt))}
                    </div>
                  )}
                </>
              );
            }
            return (
              <tr class={cls} data-testid="compare-row" data-service={r.service} data-operation={r.name}>
                <td style={{ paddingLeft: 6 + r.depth * 14 }}>
                  <span class="svc-dot" style={{ background: serviceColor(r.service) }} />
                  <strong>{r.service}</strong>: {r.name}
                </td>
                <td class="num" data-testid="a-count">{r.a?.count ?? "–"}</td>
                <td class="num" data-testid="a-total">{r.a ? fmtDuration(r.a.total) : "–"}</td>
                <td class="num" data-testid="a-mean">{r.a ? fmtDuration(mean(r.a)) : "–"}</td>
                <td class="num" data-testid="b-count">{r.b?.count ?? "–"}</td>
                <td class="num" data-testid="b-total">{r.b ? fmtDuration(r.b.total) : "–"}</td>
                <td class="num" data-testid="b-mean">{r.b ? fmtDuration(mean(r.b)) : "–"}</td>
                <td class="num">{change}</td>
                <td class="cmp-bars-col">
                  {bar(r.a, "a")}
                  {bar(r.b, "b")}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      </div>
    </>
  );
}
