import { useMemo, useState } from "preact/hooks";
import { api, type TraceSummary } from "../api";
import { Busy, Empty, ErrorState, Link, Loading, ServiceChip, TimeRangePicker, TimeText } from "../components";
import {
  type Loc,
  type TimeRange,
  buildUrl,
  fmtDuration,
  fmtRelative,
  fmtTime,
  navigate,
  nsToMs,
  parseDuration,
  rangeFromQuery,
  rangeToQuery,
  resolveRange,
  serviceColor as svcColor,
  useFetch,
  useUrlState,
  utcStore,
} from "../util";

interface Form {
  service: string;
  operation: string;
  attrs: string[];
  min_duration: string;
  max_duration: string;
  status: string;
  q: string;
  limit: string;
  /** `start` (newest first) or `duration` (longest first): sorted by the server over the whole range. */
  sort: string;
  range: TimeRange;
}

function formFromQuery(q: URLSearchParams): Form {
  const attrs = q.getAll("attr");
  return {
    service: q.get("service") ?? "",
    operation: q.get("operation") ?? "",
    attrs: attrs.length ? attrs : [""],
    min_duration: q.get("min_duration") ?? "",
    max_duration: q.get("max_duration") ?? "",
    status: q.get("status") ?? "",
    q: q.get("q") ?? "",
    limit: q.get("limit") ?? "50",
    sort: q.get("sort") === "duration" ? "duration" : "start",
    range: rangeFromQuery(q),
  };
}

function formToUrl(f: Form): string {
  return buildUrl("/search", {
    service: f.service,
    operation: f.service ? f.operation : "",
    attr: f.attrs.map((a) => a.trim()).filter(Boolean),
    min_duration: f.min_duration.trim(),
    max_duration: f.max_duration.trim(),
    status: f.status,
    q: f.q.trim(),
    limit: f.limit === "50" ? "" : f.limit,
    sort: f.sort === "duration" ? "duration" : "",
    ...rangeToQuery(f.range),
  });
}

export function SearchPage(props: { loc: Loc }) {
  const { form, setForm, applied, submit: apply, runKey } = useUrlState(props.loc, formFromQuery, formToUrl);
  const set = (patch: Partial<Form>) => setForm((f) => ({ ...f, ...patch }));

  const services = useFetch("services", (s) => api.services(s));
  const ops = useFetch(form.service ? `ops:${form.service}` : null, (s) => api.operations(form.service, s));

  const [problems, setProblems] = useState<string[]>([]);
  const validate = (f: Form): string[] => {
    const out: string[] = [];
    for (const a of f.attrs) if (a.trim() && !/^[^=]+=.*$/.test(a.trim())) out.push(`Attribute filter "${a}" must look like key=value.`);
    for (const [k, v] of [["Min duration", f.min_duration], ["Max duration", f.max_duration]])
      if (v.trim() && parseDuration(v) == null) out.push(`${k} "${v}" is not a duration; use e.g. 250ms, 1.5s, 900us.`);
    return out;
  };
  const submit = (f: Form = form) => {
    const p = validate(f);
    setProblems(p);
    if (p.length) return;
    apply(f);
  };

  // The search itself follows the URL, so a shared link reproduces it.
  const bounds = useMemo(() => resolveRange(applied.range), [applied]);
  const params = {
    service: applied.service,
    operation: applied.service ? applied.operation : "",
    attr: applied.attrs.map((a) => a.trim()).filter(Boolean),
    min_duration: applied.min_duration,
    max_duration: applied.max_duration,
    status: applied.status,
    q: applied.q,
    start: bounds.start,
    end: bounds.end,
  };
  const res = useFetch(`search:${runKey}`, (s) =>
    api.searchTraces({ ...params, limit: applied.limit, sort: applied.sort === "duration" ? "duration" : "" }, s),
  );
  // The scatter shows the range's distribution, not only the page: the
  // other order's top traces (the slowest of the range beside the newest
  // page, or the newest beside the slowest) are drawn with the results.
  const otherSort = applied.sort === "duration" ? "" : "duration";
  const other = useFetch(`search-other:${runKey}`, (s) =>
    api.searchTraces({ ...params, limit: String(SCATTER_EXTRA), sort: otherSort }, s),
  );

  const [selected, setSelected] = useState<string[]>([]);
  const toggleSel = (id: string) =>
    setSelected((s) => (s.includes(id) ? s.filter((x) => x !== id) : [...s.slice(-1), id]));

  return (
    <div class="page search-page" data-testid="page-search">
      <form
        class="sidebar"
        data-testid="search-form"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <h2>Find traces</h2>
        <label>
          <span class="lbl">Service</span>
          <select
            data-testid="service-select"
            value={form.service}
            onChange={(e) => set({ service: (e.target as HTMLSelectElement).value, operation: "" })}
          >
            <option value="">All services</option>
            {services.data?.services
              .slice()
              .sort((a, b) => a.name.localeCompare(b.name))
              .map((s) => (
                <option value={s.name}>{s.name}</option>
              ))}
            {form.service && !services.data?.services.some((s) => s.name === form.service) && (
              <option value={form.service}>{form.service}</option>
            )}
          </select>
          {services.loading && <span class="muted small">loading services…</span>}
          {services.error && <span class="err small">services unavailable: {services.error.message}</span>}
        </label>
        <label>
          <span class="lbl">Operation</span>
          <select
            data-testid="operation-select"
            value={form.operation}
            disabled={!form.service}
            onChange={(e) => set({ operation: (e.target as HTMLSelectElement).value })}
          >
            <option value="">{form.service ? "All operations" : "Pick a service first"}</option>
            {ops.data?.operations
              .slice()
              .sort((a, b) => a.name.localeCompare(b.name))
              .map((o) => (
                <option value={o.name}>
                  {o.name}
                  {o.span_kind && o.span_kind !== "UNSPECIFIED" ? ` (${o.span_kind.toLowerCase()})` : ""}
                </option>
              ))}
            {form.operation && !ops.data?.operations.some((o) => o.name === form.operation) && (
              <option value={form.operation}>{form.operation}</option>
            )}
          </select>
          {ops.loading && <span class="muted small">loading operations…</span>}
        </label>
        <div class="field">
          <span class="lbl">Attributes</span>
          {form.attrs.map((a, i) => (
            <div class="attr-row">
              <input
                placeholder="http.response.status_code=500"
                value={a}
                data-testid="attr-input"
                onInput={(e) => {
                  const attrs = form.attrs.slice();
                  attrs[i] = (e.target as HTMLInputElement).value;
                  set({ attrs });
                }}
              />
              <button
                type="button"
                class="icon"
                title="Remove this filter"
                onClick={() => set({ attrs: form.attrs.length > 1 ? form.attrs.filter((_, j) => j !== i) : [""] })}
              >
                ×
              </button>
            </div>
          ))}
          <button type="button" class="link" onClick={() => set({ attrs: [...form.attrs, ""] })}>
            + add attribute filter
          </button>
        </div>
        <div class="row2">
          <label>
            <span class="lbl">Min duration</span>
            <input
              placeholder="e.g. 250ms"
              value={form.min_duration}
              data-testid="min-duration"
              onInput={(e) => set({ min_duration: (e.target as HTMLInputElement).value })}
            />
          </label>
          <label>
            <span class="lbl">Max duration</span>
            <input
              placeholder="e.g. 2s"
              value={form.max_duration}
              data-testid="max-duration"
              onInput={(e) => set({ max_duration: (e.target as HTMLInputElement).value })}
            />
          </label>
        </div>
        <div class="row2">
          <label>
            <span class="lbl">Status</span>
            <select
              value={form.status}
              data-testid="status-select"
              onChange={(e) => set({ status: (e.target as HTMLSelectElement).value })}
            >
              <option value="">Any</option>
              <option value="error">Error</option>
              <option value="ok">OK</option>
            </select>
          </label>
          <label>
            <span class="lbl">Limit</span>
            <select
              value={form.limit}
              data-testid="limit-select"
              onChange={(e) => set({ limit: (e.target as HTMLSelectElement).value })}
            >
              {["20", "50", "100", "200", "500", "1000"].map((l) => (
                <option value={l}>{l}</option>
              ))}
            </select>
          </label>
        </div>
        <label>
          <span class="lbl">TraceQL</span>
          <textarea
            rows={2}
            placeholder='{ resource.service.name = "checkout" && duration > 50ms }'
            value={form.q}
            data-testid="traceql-input"
            onInput={(e) => set({ q: (e.target as HTMLTextAreaElement).value })}
          />
        </label>
        <TimeRangePicker
          value={form.range}
          onChange={(range) => {
            const f = { ...form, range };
            setForm(f);
            submit(f);
          }}
        />
        {problems.length > 0 && (
          <ul class="problems" data-testid="form-problems">
            {problems.map((p) => (
              <li>{p}</li>
            ))}
          </ul>
        )}
        <button type="submit" class="primary" data-testid="search-submit">
          Find traces
        </button>
      </form>
      <section class="results">
        <Busy on={res.loading && !!res.data} />
        {res.loading && !res.data && <Loading what="traces" />}
        {res.error && <ErrorState error={res.error} retry={res.reload} what="search results" />}
        {res.data && res.data.traces.length === 0 && (
          <Empty title="No traces match" testid="empty">
            Nothing was found {describeBounds(bounds.startMs, bounds.endMs)}. Widen the time range (the workload or your
            application may have sent data at another time), remove filters, or check that your application exports
            to Skein.
            <div class="empty-actions">
              {["24h", "7d", "30d", "all"].map((r) => (
                <button type="button" onClick={() => navigate(formToUrl({ ...applied, range: { range: r } }))}>
                  {r === "all" ? "Search any time" : `Search last ${r}`}
                </button>
              ))}
            </div>
          </Empty>
        )}
        {res.data && res.data.traces.length > 0 && (
          <SearchResults
            traces={res.data.traces}
            extra={other.data?.traces ?? []}
            extraKind={applied.sort === "duration" ? "newest" : "slowest"}
            selected={selected}
            toggle={toggleSel}
            limit={parseInt(applied.limit) || 50}
            sort={applied.sort}
            setSort={(sort) => submit({ ...applied, sort })}
          />
        )}
      </section>
    </div>
  );
}

function describeBounds(s: number, e: number) {
  const utc = utcStore.get();
  return `between ${fmtTime(s, utc, { ms: false })} and ${fmtTime(e, utc, { ms: false })}`;
}

function SearchResults(props: {
  traces: TraceSummary[];
  /** Traces of the other order, drawn in the scatter only. */
  extra: TraceSummary[];
  extraKind: "slowest" | "newest";
  selected: string[];
  toggle: (id: string) => void;
  limit: number;
  sort: string;
  setSort: (sort: string) => void;
}) {
  const traces = props.traces;
  const maxDur = Math.max(1, ...props.traces.map((t) => t.duration_ns));
  const now = Date.now();
  return (
    <>
      <Scatter traces={props.traces} extra={props.extra} extraKind={props.extraKind} />
      <div class="results-head">
        <strong data-testid="result-count">
          {props.traces.length} trace{props.traces.length === 1 ? "" : "s"}
        </strong>
        {props.traces.length >= props.limit && (
          <span class="muted small"> (limit reached: raise the limit or narrow the search to see more)</span>
        )}
        <span class="spacer" />
        {props.selected.length === 2 ? (
          <Link
            class="button primary"
            testid="compare-selected"
            href={buildUrl("/compare", { a: props.selected[0], b: props.selected[1] })}
          >
            Compare the 2 selected
          </Link>
        ) : (
          <span class="muted small">Tick two traces to compare them</span>
        )}
        <label class="small" title="Sorted by the server over the whole time range">
          Sort{" "}
          <select value={props.sort} data-testid="sort-select" onChange={(e) => props.setSort((e.target as HTMLSelectElement).value)}>
            <option value="start">Most recent</option>
            <option value="duration">Longest first</option>
          </select>
        </label>
      </div>
      <ol class="trace-list" data-testid="trace-list">
        {traces.map((t) => {
          const ms = nsToMs(t.start_time_unix_nano);
          return (
            <li class={t.error_count ? "trace-item has-error" : "trace-item"} data-testid="trace-result" data-trace-id={t.trace_id}>
              <input
                type="checkbox"
                title="Select to compare"
                aria-label={`Select trace ${t.root_service}: ${t.root_name} (${t.trace_id}) to compare`}
                checked={props.selected.includes(t.trace_id)}
                onChange={() => props.toggle(t.trace_id)}
              />
              <div class="ti-main">
                <div class="ti-title">
                  <Link href={`/trace/${t.trace_id}`} testid="trace-link">
                    <span class="svc-dot" style={{ background: svcColor(t.root_service) }} />
                    <strong>{t.root_service}</strong>: {t.root_name}
                  </Link>
                  <span class="mono muted small"> {t.trace_id.slice(0, 12)}…</span>
                  {t.error_count > 0 && (
                    <span class="badge err" data-testid="error-badge">
                      {t.error_count} error{t.error_count === 1 ? "" : "s"}
                    </span>
                  )}
                </div>
                <div class="ti-bar">
                  <div
                    class="ti-bar-fill"
                    style={{ width: `${Math.max(0.5, (t.duration_ns / maxDur) * 100)}%` }}
                  />
                  <span class="ti-dur">{fmtDuration(t.duration_ns)}</span>
                </div>
                <div class="ti-svcs">
                  <span class="muted small">{t.span_count} spans</span>
                  {t.services
                    .slice()
                    .sort((a, b) => b.span_count - a.span_count)
                    .map((s) => (
                      <ServiceChip name={s.name} count={s.span_count} errors={s.error_count} />
                    ))}
                </div>
              </div>
              <div class="ti-time">
                <div>{fmtRelative(ms, now)}</div>
                <div class="muted small">
                  <TimeText ms={ms} ms3={false} />
                </div>
              </div>
            </li>
          );
        })}
      </ol>
    </>
  );
}

/** Traces of the other order drawn in the scatter beside the results. */
const SCATTER_EXTRA = 20;

/** Round tick values 0, s, 2s, ... covering `max`, with s in 1-2-5 steps (so 200 ms, not 183 ms). */
export function niceTicks(max: number, target = 4): number[] {
  if (!(max > 0)) return [0];
  const raw = max / target;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw) ?? 10 * mag;
  const n = Math.max(1, Math.ceil(max / step - 1e-9));
  const out: number[] = [];
  // integer multiples of `mag`, so no floating-point residue in the labels
  for (let i = 0; i <= n; i++) out.push(Math.round((i * step) / mag) * mag);
  return out;
}

/**
 * Duration-over-time scatter: one dot per trace; click opens the trace.
 * Besides the results it draws `extra` (the range's slowest, or newest,
 * traces) as ringed dots, so an outlier of the range is one click away
 * whatever the list shows.
 */
function Scatter(props: { traces: TraceSummary[]; extra: TraceSummary[]; extraKind: "slowest" | "newest" }) {
  const utc = utcStore.use();
  const [hover, setHover] = useState<TraceSummary | null>(null);
  const W = 1000,
    H = 180,
    L = 64,
    R = 16,
    T = 10,
    B = 24;
  const inList = new Set(props.traces.map((t) => t.trace_id));
  const extra = props.extra.filter((t) => !inList.has(t.trace_id));
  const all = [...props.traces.map((t) => ({ t, extra: false })), ...extra.map((t) => ({ t, extra: true }))];
  const pts = all.map(({ t, extra }) => ({ t, extra, x: nsToMs(t.start_time_unix_nano), y: t.duration_ns }));
  let x0 = Math.min(...pts.map((p) => p.x)),
    x1 = Math.max(...pts.map((p) => p.x));
  if (x1 - x0 < 1) {
    x0 -= 500;
    x1 += 500;
  }
  const yTicks = niceTicks(Math.max(1, ...pts.map((p) => p.y)));
  const yMax = yTicks[yTicks.length - 1] || 1;
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - y / yMax) * (H - T - B);
  const xTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => x0 + f * (x1 - x0));
  const span = x1 - x0;
  const maxSpans = Math.max(...pts.map((p) => p.t.span_count));
  return (
    <div class="scatter-wrap">
      <svg class="scatter" viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" data-testid="scatter" role="img" aria-label="Trace duration over time">
        {yTicks.map((v) => (
          <g>
            <line x1={L} x2={W - R} y1={sy(v)} y2={sy(v)} class="gridline" />
            <text x={L - 6} y={sy(v) + 4} class="axis-label" text-anchor="end" data-testid="scatter-ytick" data-value={v}>
              {fmtDuration(v)}
            </text>
          </g>
        ))}
        {xTicks.map((v, i) => (
          <text
            x={sx(v)}
            y={H - 6}
            class="axis-label"
            text-anchor={i === 0 ? "start" : i === xTicks.length - 1 ? "end" : "middle"}
            data-testid="scatter-xtick"
          >
            {fmtTime(v, utc, { date: span > 86400e3, ms: span < 10e3 }).replace(" UTC", "")}
          </text>
        ))}
        {pts.map((p) => (
          <circle
            cx={sx(p.x)}
            cy={sy(p.y)}
            r={3 + (5 * p.t.span_count) / maxSpans}
            class={`${p.t.error_count ? "dot err" : "dot"}${p.extra ? " extra" : ""}`}
            data-testid="scatter-dot"
            data-extra={p.extra ? props.extraKind : undefined}
            data-trace-id={p.t.trace_id}
            onMouseEnter={() => setHover(p.t)}
            onMouseLeave={() => setHover(null)}
            onClick={() => navigate(`/trace/${p.t.trace_id}`)}
          >
            <title>
              {p.t.root_service}: {p.t.root_name} — {fmtDuration(p.t.duration_ns)}, {p.t.span_count} spans
              {p.extra ? ` (one of the ${props.extraKind} of the range, not in the list)` : ""}
            </title>
          </circle>
        ))}
      </svg>
      <div class="scatter-info small muted" data-testid="scatter-info">
        {hover ? (
          <>
            <strong>{hover.root_service}</strong>: {hover.root_name} · {fmtDuration(hover.duration_ns)} ·{" "}
            {hover.span_count} spans{hover.error_count ? ` · ${hover.error_count} errors` : ""} (click to open)
          </>
        ) : (
          <>
            Duration over time; dot size = span count, red = has errors. Click a dot to open the trace.
            {extra.length > 0 &&
              ` Ringed: ${extra.length} of the ${props.extraKind === "slowest" ? "slowest" : "newest"} traces of the whole range that are not in the list.`}
          </>
        )}
      </div>
    </div>
  );
}
