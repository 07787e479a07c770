import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import { api, tailLogs, type Log } from "../api";
import { Busy, Empty, ErrorState, Link, Loading, TimeRangePicker, TimeText, UChart, axisStyle, timeAxis } from "../components";
import { severityClass, severityLabel } from "../tracemodel";
import {
  type Loc,
  type TimeRange,
  attrText,
  buildUrl,
  cssVar,
  fmtNum,
  nsToMs,
  msToNs,
  rangeFromQuery,
  rangeToQuery,
  resolveRange,
  serviceColor,
  stepFor,
  useFetch,
  useUrlState,
  utcStore,
} from "../util";

interface LForm {
  q: string;
  service: string;
  severity: string;
  trace_id: string;
  limit: string;
  range: TimeRange;
  live: boolean;
}
const fromQuery = (q: URLSearchParams): LForm => ({
  q: q.get("q") ?? "",
  service: q.get("service") ?? "",
  severity: q.get("severity") ?? "",
  trace_id: q.get("trace_id") ?? "",
  limit: q.get("limit") ?? "100",
  range: rangeFromQuery(q),
  live: q.get("live") === "1",
});
const toUrl = (f: LForm) =>
  buildUrl("/logs", {
    q: f.q.trim(),
    service: f.service,
    severity: f.severity,
    trace_id: f.trace_id.trim(),
    limit: f.limit === "100" ? "" : f.limit,
    ...rangeToQuery(f.range),
    live: f.live ? "1" : "",
  });

export function LogsPage(props: { loc: Loc }) {
  const q = props.loc.query;
  const { form, setForm, applied, submit, runKey } = useUrlState(props.loc, fromQuery, toUrl);
  // a trace's logs are found by ID whatever their time, unless a range was chosen explicitly
  const traceOnly = !!applied.trace_id && !q.get("range") && !q.get("start") && !q.get("end");
  const bounds = useMemo(() => resolveRange(applied.range), [applied]);
  const services = useFetch("services", (s) => api.services(s));
  const filters = {
    q: applied.q,
    service: applied.service,
    severity: applied.severity,
    trace_id: applied.trace_id,
    start: traceOnly ? undefined : bounds.start,
    end: traceOnly ? undefined : bounds.end,
  };
  const live = applied.live;
  const res = useFetch(live ? null : `logs:${runKey}`, (s) => api.searchLogs({ ...filters, limit: applied.limit }, s));
  const hist = useFetch(traceOnly || live ? null : `hist:${runKey}`, (s) =>
    api.logHistogram({ ...filters, step: stepFor(bounds.startMs, bounds.endMs, 80) }, s),
  );
  return (
    <div class="page logs-page" data-testid="page-logs">
      <form
        class="logs-form"
        onSubmit={(e) => {
          e.preventDefault();
          submit(form);
        }}
      >
        <input
          class="logs-q"
          type="search"
          placeholder="Search log text and attribute values, e.g. timeout"
          value={form.q}
          data-testid="logs-query"
          onInput={(e) => setForm({ ...form, q: (e.target as HTMLInputElement).value })}
        />
        <select
          value={form.service}
          data-testid="logs-service"
          aria-label="Service"
          onChange={(e) => submit({ ...form, service: (e.target as HTMLSelectElement).value })}
        >
          <option value="">All services</option>
          {services.data?.services
            .slice()
            .sort((a, b) => a.name.localeCompare(b.name))
            .map((s) => (
              <option value={s.name}>{s.name}</option>
            ))}
        </select>
        <select
          value={form.severity}
          data-testid="logs-severity"
          aria-label="Minimum severity"
          onChange={(e) => submit({ ...form, severity: (e.target as HTMLSelectElement).value })}
        >
          <option value="">Any severity</option>
          <option value="DEBUG">DEBUG and above</option>
          <option value="INFO">INFO and above</option>
          <option value="WARN">WARN and above</option>
          <option value="ERROR">ERROR and above</option>
          <option value="FATAL">FATAL</option>
        </select>
        <select value={form.limit} aria-label="Limit" onChange={(e) => submit({ ...form, limit: (e.target as HTMLSelectElement).value })}>
          {["50", "100", "500", "1000"].map((l) => (
            <option value={l}>{l} rows</option>
          ))}
        </select>
        <button type="submit" class="primary" data-testid="logs-submit">
          Search
        </button>
        {!live && <TimeRangePicker value={form.range} onChange={(range) => submit({ ...form, range })} />}
        <button
          type="button"
          class={live ? "primary live-toggle on" : "live-toggle"}
          data-testid="logs-live"
          aria-pressed={live}
          title="Follow new log records as they arrive, with these filters"
          onClick={() => submit({ ...form, live: !live })}
        >
          {live ? "● Live" : "Live"}
        </button>
      </form>
      {applied.trace_id && (
        <div class="filter-chips">
          Logs of trace <span class="mono">{applied.trace_id}</span>{" "}
          <Link href={`/trace/${applied.trace_id}`}>open trace</Link>{" "}
          <button type="button" class="link" onClick={() => submit({ ...applied, trace_id: "" })}>
            remove this filter
          </button>
          {traceOnly && <span class="muted small"> (any time)</span>}
        </div>
      )}
      {live && (
        <LiveTail
          key={runKey}
          filters={{ q: applied.q, service: applied.service, severity: applied.severity, trace_id: applied.trace_id }}
          words={applied.q}
        />
      )}
      {!traceOnly && !live && (
        <div class="card hist-card">
          <Busy on={hist.loading && !!hist.data} />
          {hist.loading && !hist.data && <Loading what="log volume" />}
          {hist.error && <ErrorState error={hist.error} retry={hist.reload} what="the log volume histogram" />}
          {hist.data && (
            <Histogram
              data={hist.data}
              onZoom={(s, e) => submit({ ...applied, range: { start: new Date(s).toISOString(), end: new Date(e).toISOString() } })}
            />
          )}
        </div>
      )}
      <Busy on={res.loading && !!res.data} />
      {res.loading && !res.data && <Loading what="logs" />}
      {res.error && <ErrorState error={res.error} retry={res.reload} what="logs" />}
      {res.data && res.data.logs.length === 0 && (
        <Empty title="No logs match" testid="empty">
          Try fewer or other words (search matches whole words in the log text and attribute values), lower the
          severity, or widen the time range.
          <div class="empty-actions">
            {["24h", "7d", "30d", "all"].map((r) => (
              <button type="button" onClick={() => submit({ ...applied, range: { range: r } })}>
                {r === "all" ? "Search any time" : `Search last ${r}`}
              </button>
            ))}
          </div>
        </Empty>
      )}
      {res.data && res.data.logs.length > 0 && <LogList logs={res.data.logs} limit={parseInt(applied.limit) || 100} words={applied.q} />}
    </div>
  );
}

/** Rows the live view keeps (newest first); older ones leave the page. */
const LIVE_ROWS = 500;
/** Records held while paused; past it the oldest held are dropped (and counted). */
const LIVE_HELD = 5000;
/** Stored records shown when the live view starts. */
const LIVE_BACKFILL = 50;

/** Follows GET /api/v1/tail/logs with `filters`: new records at the top,
 * Pause holds them (counted) until Resume. Remounted when the filters change. */
function LiveTail(props: { filters: Record<string, string>; words: string }) {
  const [rows, setRows] = useState<Log[]>([]);
  const [held, setHeld] = useState<Log[]>([]);
  const [paused, setPaused] = useState(false);
  const [dropped, setDropped] = useState(0);
  const [state, setState] = useState<{ s: string; msg?: string }>({ s: "connecting" });
  const pausedRef = useRef(false);
  pausedRef.current = paused;
  useEffect(() => {
    const ac = new AbortController();
    // Records of one network read arrive together; they are added in one update.
    let pending: Log[] = [];
    let flush = 0;
    const onLog = (l: Log) => {
      pending.push(l);
      if (flush) return;
      flush = requestAnimationFrame(() => {
        flush = 0;
        const batch = pending.reverse();
        pending = [];
        if (pausedRef.current) {
          setHeld((h) => {
            const all = batch.concat(h);
            if (all.length > LIVE_HELD) setDropped((d) => d + all.length - LIVE_HELD);
            return all.slice(0, LIVE_HELD);
          });
        } else setRows((r) => batch.concat(r).slice(0, LIVE_ROWS));
      });
    };
    tailLogs(
      { ...props.filters, limit: String(LIVE_BACKFILL) },
      {
        onLog,
        onLagged: (n) => setDropped((d) => d + n),
        onState: (s, msg) => setState({ s, msg }),
      },
      ac.signal,
    );
    return () => {
      ac.abort();
      if (flush) cancelAnimationFrame(flush);
    };
  }, []);
  const resume = () => {
    setRows((r) => held.concat(r).slice(0, LIVE_ROWS));
    setHeld([]);
    setPaused(false);
  };
  return (
    <div class="live-tail" data-testid="live-tail">
      <div class="live-bar card">
        <span class={`live-state ${state.s}`} data-testid="live-state">
          {state.s === "live" ? "● Following new records" : state.s === "connecting" ? "Connecting…" : state.msg || "Disconnected"}
        </span>
        {paused ? (
          <button type="button" class="primary" data-testid="logs-pause" onClick={resume}>
            Resume
          </button>
        ) : (
          <button type="button" data-testid="logs-pause" onClick={() => setPaused(true)}>
            Pause
          </button>
        )}
        {paused && (
          <span class="badge" data-testid="logs-held" data-count={held.length}>
            {fmtNum(held.length)} new record{held.length === 1 ? "" : "s"} held; Resume shows them
          </span>
        )}
        {dropped > 0 && (
          <span class="badge err" data-testid="logs-dropped" title="Records skipped because the page fell behind or held too many while paused">
            {fmtNum(dropped)} dropped
          </span>
        )}
        <span class="muted small">newest first; the page keeps the last {LIVE_ROWS}</span>
      </div>
      {rows.length === 0 ? (
        <Empty title={state.s === "live" ? "Waiting for new logs" : "Connecting"} testid="live-empty">
          New log records that match the filters appear here as they arrive.
        </Empty>
      ) : (
        <LogList logs={rows} limit={Infinity} words={props.words} />
      )}
    </div>
  );
}

function Histogram(props: { data: { step_ns: number; buckets: { time_unix_nano: string; count: number }[] }; onZoom: (s: number, e: number) => void }) {
  const utc = utcStore.use();
  const b = props.data.buckets;
  const total = b.reduce((a, x) => a + x.count, 0);
  const data = useMemo(() => [b.map((x) => nsToMs(x.time_unix_nano) / 1000), b.map((x) => x.count)] as uPlot.AlignedData, [props.data]);
  const color = cssVar("--accent") || "#6366f1";
  return (
    <>
      <div class="card-title">
        Log volume <span class="muted small">{fmtNum(total)} logs · drag across the chart to zoom into a time window</span>
      </div>
      {b.length === 0 ? (
        <div class="muted small pad">No logs in this range.</div>
      ) : (
        <UChart
          testid="logs-histogram"
          data={data}
          height={120}
          depKey={String(utc)}
          opts={(w) => {
            const ax = axisStyle();
            const stepS = props.data.step_ns / 1e9;
            return {
              width: w,
              height: 120,
              legend: { show: false },
              cursor: { drag: { x: true, y: false, setScale: false } },
              scales: { x: { time: true, range: (_u, mn, mx) => [mn, mx + stepS] } },
              series: [
                {},
                {
                  label: "logs",
                  stroke: color,
                  fill: color + "99",
                  paths: bars(),
                  points: { show: false },
                },
              ],
              axes: [timeAxis(utc), { ...ax, size: 50, values: (_u, vs) => vs.map((v) => fmtNum(v)) }],
              hooks: {
                setSelect: [
                  (u) => {
                    if (u.select.width < 3) return;
                    const s = u.posToVal(u.select.left, "x") * 1000;
                    const e = u.posToVal(u.select.left + u.select.width, "x") * 1000;
                    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
                    props.onZoom(s, e);
                  },
                ],
              },
            };
          }}
        />
      )}
    </>
  );
}

function bars() {
  return uPlot.paths.bars!({ size: [0.9, 40], align: 1 });
}

function LogList(props: { logs: Log[]; limit: number; words: string }) {
  const [open, setOpen] = useState<Set<Log>>(() => new Set());
  const toggle = (i: Log) => {
    const s = new Set(open);
    if (s.has(i)) s.delete(i);
    else s.add(i);
    setOpen(s);
  };
  const re = useMemo(() => {
    const ws = props.words
      .split(/\s+/)
      .map((w) => w.replace(/^"|"$/g, "").replace(/[^\p{L}\p{N}_.-]/gu, ""))
      .filter((w) => w.length > 1 && !/^(AND|OR|NOT)$/.test(w));
    return ws.length ? new RegExp(`(${ws.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})`, "gi") : null;
  }, [props.words]);
  const hl = (s: string) => {
    if (!re) return s;
    const parts = s.split(re);
    return parts.map((p, i) => (i % 2 ? <mark>{p}</mark> : p));
  };
  return (
    <div class="log-list" data-testid="log-list">
      <div class="results-head">
        <strong data-testid="log-count">
          {props.logs.length} log{props.logs.length === 1 ? "" : "s"}
        </strong>
        {props.logs.length >= props.limit && <span class="muted small"> (newest first; limit reached, narrow the search or raise the limit)</span>}
      </div>
      {props.logs.map((l) => {
        const isOpen = open.has(l);
        const body = attrText(l.body);
        return (
          <div class={`log-row ${severityClass(l)}${isOpen ? " open" : ""}`} data-testid="log-row" data-trace-id={l.trace_id ?? ""}>
            <div class="lr-main" onClick={() => toggle(l)} role="button" aria-expanded={isOpen}>
              <span class="twisty">{isOpen ? "▾" : "▸"}</span>
              <span class="lr-time mono small">
                <TimeText ms={nsToMs(l.time_unix_nano)} ms3 />
              </span>
              <span class={`sev ${severityClass(l)}`}>{severityLabel(l)}</span>
              <span class="lr-svc">
                <span class="svc-dot" style={{ background: serviceColor(l.service_name) }} />
                {l.service_name}
              </span>
              <span class="lr-body" data-testid="log-body">
                {hl(body)}
              </span>
              {l.trace_id ? (
                <span onClick={(e) => e.stopPropagation()}>
                  <Link
                    class="lr-trace"
                    href={buildUrl(`/trace/${l.trace_id}`, { span: l.span_id ?? undefined })}
                    testid="log-trace-link"
                    title="Open the trace, with the span that wrote this log selected"
                  >
                    trace ↗
                  </Link>
                </span>
              ) : (
                <span class="muted small lr-trace">no trace</span>
              )}
            </div>
            {isOpen && (
              <div class="lr-detail">
                <table class="kv">
                  <tbody>
                    <tr>
                      <th>time</th>
                      <td>
                        <TimeText ms={nsToMs(l.time_unix_nano)} ms3 /> <span class="muted mono small">{l.time_unix_nano}</span>
                      </td>
                    </tr>
                    <tr>
                      <th>severity</th>
                      <td>
                        {l.severity_text || "–"} ({l.severity_number})
                      </td>
                    </tr>
                    {l.trace_id && (
                      <tr>
                        <th>trace_id</th>
                        <td class="mono">
                          <Link href={`/trace/${l.trace_id}`}>{l.trace_id}</Link>
                        </td>
                      </tr>
                    )}
                    {l.span_id && (
                      <tr>
                        <th>span_id</th>
                        <td class="mono">
                          <Link href={buildUrl(`/trace/${l.trace_id}`, { span: l.span_id })}>{l.span_id}</Link>
                        </td>
                      </tr>
                    )}
                    <tr>
                      <th>body</th>
                      <td class="pre">{body}</td>
                    </tr>
                    {Object.entries(l.attributes ?? {}).map(([k, v]) => (
                      <tr>
                        <th>{k}</th>
                        <td>{attrText(v)}</td>
                      </tr>
                    ))}
                    {Object.entries(l.resource ?? {}).map(([k, v]) => (
                      <tr class="muted">
                        <th>resource.{k}</th>
                        <td>{attrText(v)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
                <div class="small">
                  <Link href={buildUrl("/logs", { trace_id: l.trace_id ?? undefined })}>{l.trace_id ? "All logs of this trace" : ""}</Link>{" "}
                  <Link
                    href={buildUrl("/logs", {
                      service: l.service_name,
                      start: msToNs(nsToMs(l.time_unix_nano) - 60000),
                      end: msToNs(nsToMs(l.time_unix_nano) + 60000),
                    })}
                  >
                    Logs of {l.service_name} ±1 min
                  </Link>
                </div>
              </div>
            )}
          </div>
        );
      })}
    </div>
  );
}
