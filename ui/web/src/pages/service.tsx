import { useMemo, useState } from "preact/hooks";
import type uPlot from "uplot";
import { api, type RedPoint, type RedSeries } from "../api";
import { Busy, Empty, ErrorState, Link, Loading, TimeRangePicker, TimeText, UChart, axisStyle, timeAxis, timeAxisValues } from "../components";
import {
  type Loc,
  buildUrl,
  cssVar,
  fmtDuration,
  fmtNum,
  msToNs,
  navigate,
  nsToMs,
  rangeFromQuery,
  rangeToQuery,
  resolveRange,
  serviceColor,
  stepFor,
  useFetch,
  utcStore,
} from "../util";

export function ServicePage(props: { name: string; loc: Loc }) {
  const q = props.loc.query;
  const name = props.name;
  const range = rangeFromQuery(q);
  const op = q.get("operation") || null;
  const bounds = useMemo(() => resolveRange(range), [props.loc.search, name]);
  const step = stepFor(bounds.startMs, bounds.endMs, 60);
  const key = `${name}|${range.range}|${range.start}|${range.end}`;
  const red = useFetch(`red:${key}`, (s) => api.red({ service: name, start: bounds.start, end: bounds.end, step }, s));
  const ops = useFetch(`ops:${name}`, (s) => api.operations(name, s));
  const [pick, setPick] = useState<{ t: number; series: string } | null>(null);
  const rangeQ = rangeToQuery(range);
  const setUrl = (patch: Record<string, string | undefined>) =>
    navigate(buildUrl(`/service/${encodeURIComponent(name)}`, { ...rangeQ, operation: op ?? undefined, ...patch }), true);

  // the API lists only buckets with spans: fill the gaps so rates drop to zero and latency lines break
  const series = useMemo(
    () =>
      (red.data?.series ?? []).map((s) => ({
        ...s,
        points: densify(s.points, msToNs(bounds.startMs), msToNs(bounds.endMs), red.data!.step_ns),
      })),
    [red.data],
  );
  const svcSeries = series.find((s) => s.operation == null) ?? null;
  const opSeries = series.filter((s) => s.operation != null);
  const current = op ? opSeries.find((s) => s.operation === op) ?? null : svcSeries;
  const stepNs = red.data?.step_ns ?? 60e9;

  return (
    <div class="page service-page" data-testid="page-service">
      <div class="page-head">
        <h1>
          <span class="svc-dot big" style={{ background: serviceColor(name) }} />
          {name}
          {op && (
            <>
              {" "}
              <span class="muted">/</span> {op}{" "}
              <button type="button" class="link small" onClick={() => setUrl({ operation: undefined })}>
                (whole service)
              </button>
            </>
          )}
        </h1>
        <span class="spacer" />
        <Link class="button" href={buildUrl("/search", { service: name, operation: op ?? undefined, ...rangeQ })}>
          Search traces
        </Link>
        <Link class="button" href={buildUrl("/logs", { service: name, ...rangeQ })}>
          Logs
        </Link>
        <TimeRangePicker value={range} onChange={(r) => navigate(buildUrl(`/service/${encodeURIComponent(name)}`, { ...rangeToQuery(r), operation: op ?? undefined }))} />
      </div>
      <Busy on={red.loading && !!red.data} />
      {red.loading && !red.data && <Loading what="RED metrics" />}
      {red.error && <ErrorState error={red.error} retry={red.reload} what={`the metrics of ${name}`} />}
      {red.data && !current && (
        <Empty title={`No spans from ${name}${op ? ` / ${op}` : ""} in this time range`} testid="empty">
          Widen the time range or check the service name (it comes from the resource attribute service.name).
          <div class="empty-actions">
            {["24h", "7d", "30d", "all"].map((r) => (
              <button type="button" onClick={() => setUrl({ range: r, start: undefined, end: undefined })}>
                {r === "all" ? "Show any time" : `Show last ${r}`}
              </button>
            ))}
          </div>
        </Empty>
      )}
      {current && (
        <>
          <RedCharts s={current} stepNs={stepNs} onPick={(t) => setPick({ t, series: key + op })} />
          {pick && pick.series === key + op && (
            <Examples service={name} operation={op} t={pick.t} stepNs={stepNs} s={current} onClose={() => setPick(null)} />
          )}
        </>
      )}
      {red.data && (
        <OperationTable name={name} ops={opSeries} kinds={ops.data?.operations ?? []} selected={op} stepNs={stepNs} onSelect={(o) => setUrl({ operation: o ?? undefined })} />
      )}
    </div>
  );
}

type DPoint = Omit<RedPoint, "p50_ns" | "p95_ns" | "p99_ns"> & { p50_ns: number | null; p95_ns: number | null; p99_ns: number | null };
type DSeries = Omit<RedSeries, "points"> & { points: DPoint[] };

function densify(points: RedPoint[], startNs: string, endNs: string, stepNs: number): DPoint[] {
  const step = BigInt(Math.max(1, Math.round(stepNs)));
  const s = BigInt(startNs);
  const e = BigInt(endNs);
  if ((e - s) / step > 5000n) return points;
  const byT = new Map(points.map((p) => [p.time_unix_nano, p]));
  const out: DPoint[] = [];
  for (let t = s - (s % step); t <= e; t += step) {
    const k = t.toString();
    out.push(byT.get(k) ?? { time_unix_nano: k, request_count: 0, error_count: 0, p50_ns: null, p95_ns: null, p99_ns: null });
    byT.delete(k);
  }
  // points off the grid (should not happen): keep them, in time order
  if (byT.size) return [...out, ...byT.values()].sort((a, b) => (BigInt(a.time_unix_nano) < BigInt(b.time_unix_nano) ? -1 : 1));
  return out;
}

function RedCharts(props: { s: DSeries; stepNs: number; onPick: (tMs: number) => void }) {
  const utc = utcStore.use();
  const pts = props.s.points;
  const stepS = props.stepNs / 1e9;
  const ms = (v: number | null) => (v == null ? null : v / 1e6);
  const data = useMemo(() => {
    const x = pts.map((p) => nsToMs(p.time_unix_nano) / 1000);
    return {
      rate: [x, pts.map((p) => p.request_count / stepS)] as uPlot.AlignedData,
      errors: [x, pts.map((p) => p.error_count / stepS), pts.map((p) => (p.request_count ? (p.error_count / p.request_count) * 100 : null))] as uPlot.AlignedData,
      latency: [x, pts.map((p) => ms(p.p50_ns)), pts.map((p) => ms(p.p95_ns)), pts.map((p) => ms(p.p99_ns))] as uPlot.AlignedData,
    };
  }, [props.s, stepS]);
  const total = pts.reduce((a, p) => a + p.request_count, 0);
  const errs = pts.reduce((a, p) => a + p.error_count, 0);
  const p95 = Math.max(0, ...pts.map((p) => p.p95_ns ?? 0));
  const base = (w: number, ySeries: uPlot.Series[], yFmt: (v: number) => string, extraScales?: uPlot.Options["scales"], extraAxes?: uPlot.Axis[]): uPlot.Options => {
    const ax = axisStyle();
    return {
      width: w,
      height: 170,
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      scales: { x: { time: true }, ...extraScales },
      series: [{ value: (_u, v) => (v == null ? "–" : timeAxisValues(utc)(_u, [v], 0, 0, 1)[0]) }, ...ySeries],
      axes: [
        timeAxis(utc),
        { ...ax, values: (_u, vs) => vs.map(yFmt), size: 64 },
        ...(extraAxes ?? []),
      ],
      hooks: {
        init: [
          (u) => {
            u.over.addEventListener("click", () => {
              let i = u.cursor.idx;
              if (i == null) return;
              // an empty bucket has no example: take the nearest one with requests
              const counts = pts.map((p) => p.request_count);
              if (!counts[i]) {
                let best = -1;
                for (let j = 0; j < counts.length; j++) if (counts[j] && (best < 0 || Math.abs(j - i) < Math.abs(best - i))) best = j;
                if (best >= 0) i = best;
              }
              props.onPick(((u.data[0][i] as number) ?? 0) * 1000);
            });
            u.over.style.cursor = "pointer";
          },
        ],
      },
    };
  };
  const c1 = cssVar("--accent") || "#6366f1";
  const cErr = cssVar("--err") || "#e5484d";
  return (
    <div class="red-grid">
      <div class="card">
        <div class="card-title">
          Requests{" "}
          <span class="muted small" data-testid="rate-label">
            requests to the service per second (its entry spans: server, consumer, roots) · {fmtNum(total)} in all
          </span>
        </div>
        <UChart
          testid="chart-rate"
          data={data.rate}
          depKey={String(utc)}
          opts={(w) => base(w, [{ label: "requests/s", stroke: c1, fill: c1 + "33", width: 1.5, value: (_u, v) => (v == null ? "–" : fmtNum(v)) }], (v) => fmtNum(v))}
        />
      </div>
      <div class="card">
        <div class="card-title">
          Errors <span class="muted small">{fmtNum(errs)} ({total ? ((errs / total) * 100).toFixed(2) : 0}%)</span>
        </div>
        <UChart
          testid="chart-errors"
          data={data.errors}
          depKey={String(utc)}
          opts={(w) =>
            base(
              w,
              [
                { label: "errors/s", stroke: cErr, fill: cErr + "33", width: 1.5, value: (_u, v) => (v == null ? "–" : fmtNum(v)) },
                { label: "error %", stroke: "#f59e0b", width: 1, dash: [4, 3], scale: "%", value: (_u, v) => (v == null ? "–" : v.toFixed(1) + "%") },
              ],
              (v) => fmtNum(v),
              { "%": { range: [0, 100] } },
              [{ ...axisStyle(), scale: "%", side: 1, values: (_u, vs) => vs.map((v) => v + "%"), grid: { show: false } }],
            )
          }
        />
      </div>
      <div class="card">
        <div class="card-title">
          Latency <span class="muted small" data-testid="latency-label">p95 ≈ up to {fmtDuration(p95)} (percentiles ≈: estimated from histogram buckets)</span>
        </div>
        <UChart
          testid="chart-latency"
          data={data.latency}
          depKey={String(utc)}
          opts={(w) =>
            base(
              w,
              [
                { label: "p50 ≈", spanGaps: true, points: { show: true, size: 4 }, stroke: "#10b981", width: 1.5, value: (_u, v) => (v == null ? "–" : fmtDuration(v * 1e6)) },
                { label: "p95 ≈", spanGaps: true, points: { show: true, size: 4 }, stroke: "#f59e0b", width: 1.5, value: (_u, v) => (v == null ? "–" : fmtDuration(v * 1e6)) },
                { label: "p99 ≈", spanGaps: true, points: { show: true, size: 4 }, stroke: cErr, width: 1.5, value: (_u, v) => (v == null ? "–" : fmtDuration(v * 1e6)) },
              ],
              (v) => fmtDuration(v * 1e6),
            )
          }
        />
      </div>
      <div class="small muted red-hint">Click a point on a chart to list example traces from that interval.</div>
    </div>
  );
}

function Examples(props: { service: string; operation: string | null; t: number; stepNs: number; s: DSeries; onClose: () => void }) {
  const startNs = (BigInt(Math.round(props.t)) * 1000000n).toString();
  const endNs = (BigInt(startNs) + BigInt(Math.round(props.stepNs))).toString();
  const pt = props.s.points.find((p) => p.time_unix_nano === startNs) ?? props.s.points.find((p) => Math.abs(nsToMs(p.time_unix_nano) - props.t) < 1);
  const [kind, setKind] = useState<"all" | "error" | "slow">("all");
  const minDur = kind === "slow" && pt?.p95_ns ? `${Math.floor(pt.p95_ns / 1000)}us` : "";
  const params = {
    service: props.service,
    operation: props.operation ?? undefined,
    start: startNs,
    end: endNs,
    status: kind === "error" ? "error" : undefined,
    min_duration: minDur || undefined,
  };
  const res = useFetch(`ex:${JSON.stringify(params)}`, (s) => api.searchTraces({ ...params, limit: "10" }, s));
  return (
    <div class="card examples" data-testid="examples">
      <div class="card-title">
        Example traces from <TimeText ms={props.t} ms3={false} /> (+{fmtDuration(props.stepNs)})
        <span class="spacer" />
        <span class="seg">
          <button type="button" class={kind === "all" ? "active" : ""} onClick={() => setKind("all")}>
            Any
          </button>
          <button type="button" class={kind === "error" ? "active" : ""} onClick={() => setKind("error")}>
            Errors
          </button>
          <button type="button" class={kind === "slow" ? "active" : ""} onClick={() => setKind("slow")} disabled={!pt?.p95_ns}>
            Slowest (≥ p95)
          </button>
        </span>
        <Link class="button" href={buildUrl("/search", { ...params, limit: "100" })}>
          Open in search
        </Link>
        <button type="button" class="icon" onClick={props.onClose} title="Close">
          ×
        </button>
      </div>
      {res.loading && <Loading what="example traces" />}
      {res.error && <ErrorState error={res.error} retry={res.reload} what="example traces" />}
      {res.data && res.data.traces.length === 0 && <div class="muted small pad">No traces of this kind in that interval; try “Any”.</div>}
      {res.data && (
        <ul class="examples-list">
          {res.data.traces.map((t) => (
            <li>
              <Link href={`/trace/${t.trace_id}`} testid="example-trace">
                {t.root_service}: {t.root_name}
              </Link>{" "}
              <span class="muted small">
                {fmtDuration(t.duration_ns)} · {t.span_count} spans{t.error_count ? ` · ${t.error_count} errors` : ""}
              </span>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function OperationTable(props: {
  name: string;
  ops: DSeries[];
  kinds: { name: string; span_kind: string; span_count: number }[];
  selected: string | null;
  stepNs: number;
  onSelect: (op: string | null) => void;
}) {
  const rows = props.ops
    .map((s) => {
      const req = s.points.reduce((a, p) => a + p.request_count, 0);
      const err = s.points.reduce((a, p) => a + p.error_count, 0);
      const p95 = Math.max(0, ...s.points.map((p) => p.p95_ns ?? 0));
      const p50 = Math.max(0, ...s.points.map((p) => p.p50_ns ?? 0));
      const kind = props.kinds.find((k) => k.name === s.operation)?.span_kind ?? "";
      return { op: s.operation!, req, err, p95, p50, kind, spark: s.points.map((p) => p.request_count) };
    })
    .sort((a, b) => b.req - a.req);
  if (!rows.length) return null;
  return (
    <div class="card">
      <div class="card-title">Operations ({rows.length}) <span class="muted small">click one to chart it</span></div>
      <div class="table-scroll" data-testid="ops-scroll">
      <table class="data ops-table" data-testid="ops-table">
        <thead>
          <tr>
            <th>Operation</th>
            <th>Kind</th>
            <th class="num" title="Requests to the operation (entry spans)">Requests</th>
            <th class="num">Errors</th>
            <th class="num" title="Estimated from histogram buckets; the highest over the range">p50 ≈ (max)</th>
            <th class="num" title="Estimated from histogram buckets; the highest over the range">p95 ≈ (max)</th>
            <th>Requests over time</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr class={r.op === props.selected ? "selected clickable" : "clickable"} data-testid="op-row" onClick={() => props.onSelect(r.op === props.selected ? null : r.op)}>
              <td>{r.op}</td>
              <td class="muted small">{r.kind.toLowerCase()}</td>
              <td class="num">{fmtNum(r.req)}</td>
              <td class={r.err ? "num err" : "num"}>
                {fmtNum(r.err)} {r.req ? <span class="muted small">({((r.err / r.req) * 100).toFixed(1)}%)</span> : null}
              </td>
              <td class="num">{fmtDuration(r.p50)}</td>
              <td class="num">{fmtDuration(r.p95)}</td>
              <td>
                <Spark values={r.spark} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      </div>
    </div>
  );
}

function Spark(props: { values: number[] }) {
  const v = props.values;
  const max = Math.max(1, ...v);
  const w = 120,
    h = 22;
  const d = v.map((x, i) => `${i ? "L" : "M"}${((i / Math.max(1, v.length - 1)) * w).toFixed(1)},${(h - 1 - (x / max) * (h - 2)).toFixed(1)}`).join(" ");
  return (
    <svg width={w} height={h} class="spark">
      <path d={d} />
    </svg>
  );
}
