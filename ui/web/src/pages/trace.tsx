import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, type Attrs, type Trace } from "../api";
import { Busy, Empty, ErrorState, Link, Loading, ServiceChip, TimeText } from "../components";
import {
  type LogItem,
  type OpStat,
  type SpanNode,
  type TraceModel,
  buildModel,
  selfTime,
  severityClass,
  severityLabel,
  traceStats,
} from "../tracemodel";
import {
  type Loc,
  attrText,
  buildUrl,
  copyText,
  downloadJson,
  fmtDuration,
  navigate,
  nsDiff,
  nsToMs,
  parseDuration,
  serviceColor,
  traceIdProblem,
  useFetch,
} from "../util";

export function TracePage(props: { id: string; loc: Loc }) {
  const id = props.id.toLowerCase();
  const res = useFetch(traceIdProblem(id) ? null : `trace:${id}`, (s) => api.trace(id, s));
  const model = useMemo(() => (res.data ? buildModel(res.data) : null), [res.data]);
  const problem = traceIdProblem(id);
  if (problem)
    return (
      <div class="page">
        <Empty title={`"${props.id}" is not a valid trace ID`} testid="error">
          {problem} Find the trace on the <Link href="/search">search page</Link>.
        </Empty>
      </div>
    );
  if (res.loading && !model)
    return (
      <div class="page">
        <Loading what={`trace ${id}`} />
      </div>
    );
  if (res.error)
    return (
      <div class="page" data-testid="page-trace">
        <ErrorState error={res.error} retry={res.reload} what={`trace ${id}`} />
        <p>
          <Link href="/search">Search traces</Link> to find one that exists in the chosen time range.
        </p>
      </div>
    );
  if (!model) return null;
  if (model.nodes.length === 0 && model.logs.length === 0)
    return (
      <div class="page">
        <Empty title="This trace has no spans yet">Its spans may still be arriving; reload in a moment.</Empty>
      </div>
    );
  return <TraceView key={model.trace.trace_id} model={model} raw={res.data!} initialSpan={props.loc.query.get("span")} initialView={props.loc.query.get("view")} busy={res.loading} />;
}

type Row = { kind: "span"; node: SpanNode; dim: boolean } | { kind: "log"; item: LogItem; node: SpanNode };

const ROW_H = 24;

type View = "timeline" | "stats" | "flame";

function TraceView(props: { model: TraceModel; raw: Trace; initialSpan: string | null; initialView: string | null; busy: boolean }) {
  const m = props.model;
  const [collapsed, setCollapsed] = useState<Set<string>>(() => new Set());
  const [selected, setSelected] = useState<string | null>(() =>
    props.initialSpan && m.byId.has(props.initialSpan) ? props.initialSpan : null,
  );
  const [selLog, setSelLog] = useState<number | null>(null);
  const [cursor, setCursor] = useState<number>(0); // row index of keyboard focus
  const [detailOpen, setDetailOpen] = useState<boolean>(!!props.initialSpan);
  const [find, setFind] = useState("");
  const [showLogs, setShowLogs] = useState(true);
  const [showCrit, setShowCrit] = useState(true);
  const [win, setWin] = useState<[number, number]>([0, m.total]);
  const [logsOnlySel, setLogsOnlySel] = useState(false);
  const [view, setViewState] = useState<View>(props.initialView === "stats" || props.initialView === "flame" ? props.initialView : "timeline");
  // the view is part of the URL (`?view=stats|flame`), so a shared link opens it
  const setView = (v: View) => {
    setViewState(v);
    const q = new URLSearchParams(location.search);
    if (v === "timeline") q.delete("view");
    else q.set("view", v);
    const qs = q.toString();
    navigate(location.pathname + (qs ? `?${qs}` : ""), true);
  };
  const [fService, setFService] = useState("");
  const [fStatus, setFStatus] = useState("");
  const [fMin, setFMin] = useState("");
  const [fMax, setFMax] = useState("");
  const waterfallRef = useRef<HTMLDivElement>(null);

  const findLc = find.trim().toLowerCase();
  const minNs = fMin.trim() ? parseDuration(fMin) : null;
  const maxNs = fMax.trim() ? parseDuration(fMax) : null;
  const badDur = (fMin.trim() && minNs == null) || (fMax.trim() && maxNs == null);
  // Find-in-trace and the span filters (as Grafana's): a span matches when
  // it meets every one given; the others are dimmed or hidden.
  const matches = useMemo(() => {
    if (!findLc && !fService && !fStatus && minNs == null && maxNs == null) return null;
    const set = new Set<SpanNode>();
    for (const n of m.nodes) {
      if (findLc && !n.text.includes(findLc)) continue;
      if (fService && n.span.service_name !== fService) continue;
      if (fStatus === "error" && !n.error) continue;
      if (fStatus === "ok" && n.error) continue;
      if (minNs != null && n.dur < minNs) continue;
      if (maxNs != null && n.dur > maxNs) continue;
      set.add(n);
    }
    return set;
  }, [m, findLc, fService, fStatus, minNs, maxNs]);

  const rows = useMemo(() => {
    const out: Row[] = [];
    let visible: Set<SpanNode> | null = null;
    if (matches) {
      visible = new Set();
      for (const n of matches) for (let p: SpanNode | null = n; p && !visible.has(p); p = p.parent) visible.add(p);
    }
    const stack = m.roots.slice().reverse();
    while (stack.length) {
      const n = stack.pop()!;
      if (visible && !visible.has(n)) continue;
      const dim = !!matches && !matches.has(n);
      out.push({ kind: "span", node: n, dim });
      if (showLogs && !dim) for (const it of n.logs) out.push({ kind: "log", item: it, node: n });
      if (collapsed.has(n.id) && !matches) continue;
      for (let i = n.children.length - 1; i >= 0; i--) stack.push(n.children[i]);
    }
    return out;
  }, [m, collapsed, matches, showLogs]);

  const rowIndexOfSpan = (id: string) => rows.findIndex((r) => r.kind === "span" && r.node.id === id);

  const ensureVisible = (idx: number) => {
    const el = waterfallRef.current;
    if (!el || idx < 0) return;
    const top = idx * ROW_H;
    const body = el.clientHeight - ROW_H; // header row
    if (top < el.scrollTop) el.scrollTop = top;
    else if (top + ROW_H > el.scrollTop + body) el.scrollTop = top + ROW_H - body;
  };

  /** Selects a span (and optionally one of its logs), expanding collapsed ancestors. */
  const selectSpan = (id: string | null, opts: { log?: number | null; scroll?: boolean; open?: boolean } = {}) => {
    setSelected(id);
    setSelLog(opts.log ?? null);
    if (opts.open !== undefined) setDetailOpen(opts.open);
    if (id) {
      const n = m.byId.get(id);
      if (n) {
        let changed = false;
        const c = new Set(collapsed);
        for (let p = n.parent; p; p = p.parent) if (c.delete(p.id)) changed = true;
        if (changed) setCollapsed(c);
      }
      if (opts.scroll) pendingScroll.current = { span: id, log: opts.log ?? null };
    }
  };
  const pendingScroll = useRef<{ span: string; log: number | null } | null>(
    props.initialSpan ? { span: props.initialSpan, log: null } : null,
  );
  useLayoutEffect(() => {
    const p = pendingScroll.current;
    if (!p) return;
    pendingScroll.current = null;
    let idx = -1;
    if (p.log != null) idx = rows.findIndex((r) => r.kind === "log" && r.item.idx === p.log);
    if (idx < 0) idx = rowIndexOfSpan(p.span);
    if (idx >= 0) {
      setCursor(idx);
      ensureVisible(idx);
    }
  });

  // a link to another span of this trace (?span=) selects it
  const firstSpan = useRef(props.initialSpan);
  useEffect(() => {
    if (props.initialSpan === firstSpan.current) return;
    firstSpan.current = props.initialSpan;
    if (props.initialSpan && m.byId.has(props.initialSpan)) selectSpan(props.initialSpan, { scroll: true, open: true });
  }, [props.initialSpan]);

  const toggle = (id: string) => {
    const c = new Set(collapsed);
    if (c.has(id)) c.delete(id);
    else c.add(id);
    setCollapsed(c);
  };

  const onKey = (e: KeyboardEvent) => {
    if (!rows.length) return;
    const cur = Math.min(cursor, rows.length - 1);
    const row = rows[cur];
    const moveTo = (i: number) => {
      i = Math.max(0, Math.min(rows.length - 1, i));
      setCursor(i);
      const r = rows[i];
      if (r.kind === "span") selectSpan(r.node.id);
      else selectSpan(r.node.id, { log: r.item.idx });
      ensureVisible(i);
    };
    switch (e.key) {
      case "ArrowDown":
        moveTo(cur + 1);
        break;
      case "ArrowUp":
        moveTo(cur - 1);
        break;
      case "ArrowLeft":
        if (row.kind === "span" && row.node.children.length && !collapsed.has(row.node.id) && !matches) toggle(row.node.id);
        else {
          const parent = row.kind === "log" ? row.node : row.node.parent;
          if (parent) moveTo(rowIndexOfSpan(parent.id));
        }
        break;
      case "ArrowRight":
        if (row.kind === "span" && collapsed.has(row.node.id)) toggle(row.node.id);
        else if (row.kind === "span" && row.node.children.length) moveTo(rowIndexOfSpan(row.node.children[0].id));
        break;
      case "Enter":
      case " ":
        if (row.kind === "span") {
          if (selected === row.node.id) setDetailOpen(!detailOpen);
          else selectSpan(row.node.id, { open: true });
        } else selectSpan(row.node.id, { log: row.item.idx, open: true });
        break;
      case "Escape":
        setDetailOpen(false);
        break;
      case "Home":
        moveTo(0);
        break;
      case "End":
        moveTo(rows.length - 1);
        break;
      default:
        return;
    }
    e.preventDefault();
  };

  const sel = selected ? m.byId.get(selected) ?? null : null;
  return (
    <div class="page trace-page" data-testid="page-trace">
      <Busy on={props.busy} />
      <TraceHeader m={m} raw={props.raw} />
      <div class="trace-tools">
        <input
          class="find"
          type="search"
          placeholder="Find in trace: name, service, attribute, log text…"
          value={find}
          data-testid="find-in-trace"
          onInput={(e) => setFind((e.target as HTMLInputElement).value)}
        />
        <span class="span-filters" role="group" aria-label="Span filters">
          <select
            aria-label="Filter spans by service"
            data-testid="filter-service"
            value={fService}
            onChange={(e) => setFService((e.target as HTMLSelectElement).value)}
          >
            <option value="">All services</option>
            {m.services.map((x) => (
              <option value={x.name}>{x.name}</option>
            ))}
          </select>
          <select
            aria-label="Filter spans by status"
            data-testid="filter-status"
            value={fStatus}
            onChange={(e) => setFStatus((e.target as HTMLSelectElement).value)}
          >
            <option value="">Any status</option>
            <option value="error">Error</option>
            <option value="ok">Not error</option>
          </select>
          <input
            class="dur-filter"
            aria-label="Minimum span duration"
            placeholder="min, 5ms"
            data-testid="filter-min-duration"
            value={fMin}
            onInput={(e) => setFMin((e.target as HTMLInputElement).value)}
          />
          <input
            class="dur-filter"
            aria-label="Maximum span duration"
            placeholder="max, 1s"
            data-testid="filter-max-duration"
            value={fMax}
            onInput={(e) => setFMax((e.target as HTMLInputElement).value)}
          />
          {(fService || fStatus || fMin || fMax) && (
            <button
              type="button"
              class="link small"
              data-testid="filter-clear"
              onClick={() => {
                setFService("");
                setFStatus("");
                setFMin("");
                setFMax("");
              }}
            >
              clear filters
            </button>
          )}
        </span>
        {badDur && <span class="err small">durations look like 250ms, 1.5s, 900us</span>}
        {matches && (
          <span class="small" data-testid="find-count">
            {matches.size} of {m.nodes.length} spans match
          </span>
        )}
        <span class="spacer" />
        <span class="seg" role="tablist" aria-label="Trace view">
          {(
            [
              ["timeline", "Timeline"],
              ["stats", "Statistics"],
              ["flame", "Flame graph"],
            ] as const
          ).map(([k, label]) => (
            <button
              type="button"
              role="tab"
              aria-selected={view === k}
              class={view === k ? "button active" : "button"}
              data-testid={`view-${k}`}
              onClick={() => setView(k)}
            >
              {label}
            </button>
          ))}
        </span>
        <label class="small">
          <input type="checkbox" checked={showLogs} data-testid="toggle-inline-logs" onChange={() => setShowLogs(!showLogs)} /> Logs
          in timeline
        </label>
        <label class="small">
          <input type="checkbox" checked={showCrit} data-testid="toggle-critical" onChange={() => setShowCrit(!showCrit)} />{" "}
          <span class="crit-swatch" /> Critical path
        </label>
        <button type="button" onClick={() => setCollapsed(new Set())}>
          Expand all
        </button>
        <button
          type="button"
          onClick={() => setCollapsed(new Set(m.nodes.filter((n) => n.children.length && n.depth >= 1).map((n) => n.id)))}
        >
          Collapse
        </button>
      </div>
      <Minimap m={m} win={win} setWin={setWin} selected={sel} />
      <div class={detailOpen && sel ? "trace-main with-detail" : "trace-main"}>
        {view === "stats" && <TraceStatsTable m={m} />}
        {view === "flame" && (
          <FlameGraph m={m} matches={matches} selected={selected} onPick={(id) => selectSpan(id, { open: true })} />
        )}
        {view === "timeline" && (
        <Waterfall
          m={m}
          rows={rows}
          win={win}
          selected={selected}
          selLog={selLog}
          cursor={cursor}
          collapsed={collapsed}
          showCrit={showCrit}
          matches={matches}
          refEl={waterfallRef}
          onKey={onKey}
          onToggle={toggle}
          onRow={(i) => {
            setCursor(i);
            const r = rows[i];
            if (r.kind === "span") {
              if (selected === r.node.id && detailOpen) setDetailOpen(false);
              else selectSpan(r.node.id, { open: true });
            } else selectSpan(r.node.id, { log: r.item.idx, open: true });
          }}
        />
        )}
        {detailOpen && sel && (
          <SpanDetail
            m={m}
            n={sel}
            onClose={() => setDetailOpen(false)}
            onLog={(l) => selectSpan(sel.id, { log: l.idx, scroll: true })}
          />
        )}
      </div>
      <LogPane
        m={m}
        selected={selected}
        selLog={selLog}
        onlySel={logsOnlySel}
        setOnlySel={setLogsOnlySel}
        onPick={(l) => {
          if (l.node) selectSpan(l.node.id, { log: l.idx, scroll: true, open: true });
          else setSelLog(l.idx);
        }}
      />
    </div>
  );
}

function TraceHeader(props: { m: TraceModel; raw: Trace }) {
  const m = props.m;
  const [copied, setCopied] = useState(false);
  const root = m.roots.length ? m.roots.reduce((a, b) => (b.dur > a.dur ? b : a)) : null;
  return (
    <div class="trace-header" data-testid="trace-header">
      <div class="th-title">
        <h1>
          {root ? (
            <>
              <span class="svc-dot" style={{ background: serviceColor(root.span.service_name) }} />
              {root.span.service_name}: {root.span.name}
            </>
          ) : (
            "Trace"
          )}
        </h1>
        <span class="mono trace-id" data-testid="trace-id">
          {m.trace.trace_id}
        </span>
        <button
          type="button"
          class="small-btn"
          data-testid="copy-trace-id"
          onClick={() => copyText(m.trace.trace_id).then(() => (setCopied(true), setTimeout(() => setCopied(false), 1500)))}
        >
          {copied ? "Copied" : "Copy ID"}
        </button>
        <span class="spacer" />
        <button
          type="button"
          data-testid="download-json"
          onClick={() => downloadJson(`trace-${m.trace.trace_id}.json`, props.raw)}
        >
          Download JSON
        </button>
        <Link class="button" href={buildUrl("/compare", { a: m.trace.trace_id })}>
          Compare with…
        </Link>
        <Link class="button" href={buildUrl("/logs", { trace_id: m.trace.trace_id })}>
          Open logs
        </Link>
      </div>
      <dl class="th-stats">
        <div>
          <dt>Start</dt>
          <dd>
            <TimeText ms={nsToMs(m.startNs)} />
          </dd>
        </div>
        <div>
          <dt>Duration</dt>
          <dd data-testid="trace-duration">{fmtDuration(m.total)}</dd>
        </div>
        <div>
          <dt>Spans</dt>
          <dd data-testid="trace-span-count">{m.nodes.length}</dd>
        </div>
        <div>
          <dt>Depth</dt>
          <dd>{m.maxDepth + 1}</dd>
        </div>
        <div>
          <dt>Errors</dt>
          <dd class={m.errors ? "err" : ""} data-testid="trace-errors">
            {m.errors}
          </dd>
        </div>
        <div>
          <dt>Logs</dt>
          <dd data-testid="trace-log-count">{m.logs.length}</dd>
        </div>
        <div class="th-svcs">
          <dt>Services ({m.services.length})</dt>
          <dd>
            {m.services.map((s) => (
              <ServiceChip name={s.name} count={s.count} errors={s.errors} />
            ))}
          </dd>
        </div>
      </dl>
    </div>
  );
}

function Minimap(props: { m: TraceModel; win: [number, number]; setWin: (w: [number, number]) => void; selected: SpanNode | null }) {
  const m = props.m;
  const canvas = useRef<HTMLCanvasElement>(null);
  const box = useRef<HTMLDivElement>(null);
  const [drag, setDrag] = useState<[number, number] | null>(null);
  const H = 48;
  useEffect(() => {
    const c = canvas.current!;
    const draw = () => {
      const w = c.clientWidth;
      const dpr = window.devicePixelRatio || 1;
      c.width = w * dpr;
      c.height = H * dpr;
      const ctx = c.getContext("2d")!;
      ctx.scale(dpr, dpr);
      ctx.clearRect(0, 0, w, H);
      const n = m.nodes.length;
      const rowH = Math.max(0.5, Math.min(4, (H - 4) / Math.max(1, n)));
      const errColor = getComputedStyle(c).getPropertyValue("--err").trim() || "#e5484d";
      m.nodes.forEach((nd, i) => {
        const y = 2 + (n <= 1 ? 0 : (i / n) * (H - 4));
        ctx.fillStyle = nd.error ? errColor : serviceColor(nd.span.service_name);
        ctx.fillRect((nd.start / m.total) * w, y, Math.max(1, (nd.dur / m.total) * w), rowH);
      });
    };
    draw();
    const ro = new ResizeObserver(draw);
    ro.observe(c);
    return () => ro.disconnect();
  }, [m]);
  const frac = (e: MouseEvent) => {
    const r = box.current!.getBoundingClientRect();
    return Math.max(0, Math.min(1, (e.clientX - r.left) / r.width));
  };
  const [w0, w1] = drag ? [Math.min(...drag), Math.max(...drag)].map((f) => f * m.total) : props.win;
  const full = props.win[0] === 0 && props.win[1] === m.total;
  return (
    <div class="minimap-wrap">
      <div
        class="minimap"
        ref={box}
        data-testid="minimap"
        title="Drag to zoom the timeline to a time window; double-click to reset"
        onMouseDown={(e) => {
          const f = frac(e);
          setDrag([f, f]);
          const move = (ev: MouseEvent) => setDrag([f, frac(ev)]);
          const up = (ev: MouseEvent) => {
            window.removeEventListener("mousemove", move);
            window.removeEventListener("mouseup", up);
            const g = frac(ev);
            setDrag(null);
            const a = Math.min(f, g),
              b = Math.max(f, g);
            if (b - a > 0.002) props.setWin([a * m.total, b * m.total]);
          };
          window.addEventListener("mousemove", move);
          window.addEventListener("mouseup", up);
        }}
        onDblClick={() => props.setWin([0, m.total])}
      >
        <canvas ref={canvas} style={{ height: H + "px" }} />
        <div class="mm-shade" style={{ left: 0, width: `${(w0 / m.total) * 100}%` }} />
        <div class="mm-shade" style={{ left: `${(w1 / m.total) * 100}%`, right: 0 }} />
        <div class="mm-window" style={{ left: `${(w0 / m.total) * 100}%`, width: `${((w1 - w0) / m.total) * 100}%` }} />
        {props.selected && (
          <div
            class="mm-sel"
            style={{ left: `${(props.selected.start / m.total) * 100}%`, width: `${Math.max(0.2, (props.selected.dur / m.total) * 100)}%` }}
          />
        )}
      </div>
      <div class="mm-axis small muted">
        <span>0</span>
        {!full && (
          <span>
            window {fmtDuration(props.win[0])} – {fmtDuration(props.win[1])}{" "}
            <button type="button" class="link" data-testid="minimap-reset" onClick={() => props.setWin([0, m.total])}>
              reset zoom
            </button>
          </span>
        )}
        {full && <span>drag on the overview to zoom</span>}
        <span>{fmtDuration(m.total)}</span>
      </div>
    </div>
  );
}

function ticks(w0: number, w1: number, n = 5): number[] {
  const out: number[] = [];
  for (let i = 0; i <= n; i++) out.push(w0 + ((w1 - w0) * i) / n);
  return out;
}

function Waterfall(props: {
  m: TraceModel;
  rows: Row[];
  win: [number, number];
  selected: string | null;
  selLog: number | null;
  cursor: number;
  collapsed: Set<string>;
  showCrit: boolean;
  matches: Set<SpanNode> | null;
  refEl: { current: HTMLDivElement | null };
  onKey: (e: KeyboardEvent) => void;
  onToggle: (id: string) => void;
  onRow: (i: number) => void;
}) {
  const { m, rows } = props;
  const [scroll, setScroll] = useState(0);
  const [height, setHeight] = useState(600);
  const [wfWidth, setWfWidth] = useState(1000);
  const [nameW, setNameW] = useState(36); // % of the width for the span names
  const startResize = (e: MouseEvent) => {
    e.preventDefault();
    const el = props.refEl.current!;
    const r = el.getBoundingClientRect();
    const move = (ev: MouseEvent) => setNameW(Math.max(15, Math.min(75, ((ev.clientX - r.left) / r.width) * 100)));
    const up = () => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  };
  useEffect(() => {
    const el = props.refEl.current!;
    const ro = new ResizeObserver(() => {
      setHeight(el.clientHeight);
      setWfWidth(el.clientWidth);
    });
    ro.observe(el);
    setHeight(el.clientHeight);
    setWfWidth(el.clientWidth);
    return () => ro.disconnect();
  }, []);
  const [w0, w1] = props.win;
  const ww = Math.max(1, w1 - w0);
  const pct = (t: number) => ((t - w0) / ww) * 100;
  const first = Math.max(0, Math.floor(scroll / ROW_H) - 10);
  const last = Math.min(rows.length, Math.ceil((scroll + height) / ROW_H) + 10);
  const items = [];
  for (let i = first; i < last; i++) {
    const r = rows[i];
    const top = i * ROW_H;
    const isCursor = i === props.cursor;
    if (r.kind === "span") {
      const n = r.node;
      const s = n.span;
      const color = serviceColor(s.service_name);
      const isSel = props.selected === n.id;
      const hasKids = n.children.length > 0;
      const isCol = props.collapsed.has(n.id) && !props.matches;
      const left = pct(n.start);
      const width = Math.max(0.15, (n.dur / ww) * 100);
      // The duration label goes right of the bar, else left of it, else
      // inside the bar at its right end: wherever it fits in the timeline
      // column, whose width changes when the span panel opens.
      const durText = fmtDuration(n.dur);
      const tlPx = Math.max(1, wfWidth * (1 - nameW / 100));
      const needPct = ((durText.length * 7 + 10) / tlPx) * 100;
      const place = left + width + needPct <= 100 ? "right" : left - needPct >= 0 ? "left" : "inside";
      items.push(
        <div
          key={"s" + n.id}
          class={`wf-row span-row${isSel ? " selected" : ""}${isCursor ? " cursor" : ""}${r.dim ? " dim" : ""}${n.error ? " error" : ""}${
            props.matches?.has(n) ? " match" : ""
          }`}
          style={{ top }}
          data-testid="span-row"
          data-row={i}
          data-span-id={n.id}
          data-service={s.service_name}
          role="treeitem"
          aria-level={n.depth + 1}
          aria-expanded={hasKids ? !isCol : undefined}
          aria-selected={isSel}
          onClick={() => props.onRow(i)}
        >
          <div class="wf-name" style={{ paddingLeft: 4 + n.depth * 14 }}>
            {hasKids ? (
              <button
                type="button"
                class="twisty"
                tabIndex={-1}
                aria-label={isCol ? "Expand" : "Collapse"}
                onClick={(e) => {
                  e.stopPropagation();
                  props.onToggle(n.id);
                }}
              >
                {isCol ? "▸" : "▾"}
              </button>
            ) : (
              <span class="twisty" />
            )}
            <span class="svc-bar" style={{ background: color }} />
            <span class="wf-svc">{s.service_name}</span>
            <span class="wf-op" title={s.name}>
              {s.name}
            </span>
            {n.error && (
              <span class="err-mark" title={s.status?.message || "error"} data-testid="span-error">
                !
              </span>
            )}
            {s.kind && s.kind !== "UNSPECIFIED" && s.kind !== "INTERNAL" && <span class="kind">{s.kind.toLowerCase()}</span>}
            {isCol && <span class="muted small"> +{countDesc(n)}</span>}
          </div>
          <div class="wf-tl">
            <div class="wf-bar" style={{ left: `${left}%`, width: `${width}%`, background: color }}>
              {props.showCrit &&
                n.crit.map(([a, b]) => (
                  <span class="crit" style={{ left: `${((a - n.start) / Math.max(1, n.dur)) * 100}%`, width: `${((b - a) / Math.max(1, n.dur)) * 100}%` }} />
                ))}
              {s.events?.map((ev) => (
                <span
                  class="ev-mark"
                  title={ev.name}
                  style={{ left: `${((nsDiff(ev.time_unix_nano, m.startNs) - n.start) / Math.max(1, n.dur)) * 100}%` }}
                />
              ))}
            </div>
            {n.logs.map((l) => (
              <span
                class={`log-mark ${severityClass(l.log)}`}
                title={`${severityLabel(l.log)}: ${attrText(l.log.body)}`}
                style={{ left: `${pct(l.t)}%` }}
              />
            ))}
            <span
              class={place === "inside" ? "wf-dur inside" : "wf-dur"}
              data-testid="span-duration"
              style={
                place === "right"
                  ? { left: `calc(${left + width}% + 4px)` }
                  : place === "left"
                    ? { right: `calc(${100 - left}% + 4px)` }
                    : { right: `calc(${Math.max(0, 100 - left - width)}% + 4px)` }
              }
            >
              {durText}
            </span>
          </div>
        </div>,
      );
    } else {
      const l = r.item;
      const isSel = props.selLog === l.idx;
      items.push(
        <div
          key={"l" + l.idx}
          class={`wf-row log-row${isSel ? " selected" : ""}${isCursor ? " cursor" : ""}${props.selected === r.node.id ? " of-selected" : ""}`}
          style={{ top }}
          data-testid="inline-log"
          data-row={i}
          data-span-id={r.node.id}
          onClick={() => props.onRow(i)}
        >
          <div class="wf-name" style={{ paddingLeft: 4 + (r.node.depth + 1) * 14 + 16 }}>
            <span class={`sev ${severityClass(l.log)}`}>{severityLabel(l.log)}</span>
            <span class="log-body" title={attrText(l.log.body)}>
              {attrText(l.log.body)}
            </span>
          </div>
          <div class="wf-tl">
            <span class="log-line" style={{ left: `${pct(r.node.start)}%`, width: `${(r.node.dur / ww) * 100}%` }} />
            <span class={`log-mark big ${severityClass(l.log)}`} style={{ left: `${pct(l.t)}%` }} />
            <span class="wf-dur" style={{ left: `calc(${pct(l.t)}% + 8px)` }}>
              +{fmtDuration(l.t)}
            </span>
          </div>
        </div>,
      );
    }
  }
  return (
    <div
      class="waterfall"
      id="waterfall"
      ref={props.refEl}
      tabIndex={0}
      role="tree"
      aria-label="Spans of the trace; use the arrow keys to move, Enter to open details"
      data-testid="waterfall"
      onKeyDown={props.onKey}
      onScroll={(e) => setScroll((e.target as HTMLDivElement).scrollTop)}
      style={{ "--name-w": `${nameW}%` }}
    >
      <div class="wf-header">
        <div class="wf-name" title={`${rows.length} rows; keys: ↑ ↓ ← → Enter Esc Home End`}>
          <strong>Service: operation</strong>
          <span class="muted small offset-label"> · times since trace start</span>
          <span class="col-resize" title="Drag to resize the name column" onMouseDown={startResize} />
        </div>
        <div class="wf-tl">
          {ticks(w0, w1).map((t, i) => (
            <span class="tick" style={i === 5 ? { right: 0 } : { left: `${pct(t)}%` }}>
              {fmtDuration(t)}
            </span>
          ))}
        </div>
      </div>
      <div class="wf-body" style={{ height: rows.length * ROW_H }}>
        <div class="wf-grid">
          {ticks(w0, w1).map((t) => (
            <span style={{ left: `${pct(t)}%` }} />
          ))}
        </div>
        {items}
      </div>
    </div>
  );
}

function countDesc(n: SpanNode): number {
  let c = 0;
  const st = [...n.children];
  while (st.length) {
    const x = st.pop()!;
    c++;
    st.push(...x.children);
  }
  return c;
}

function AttrTable(props: { attrs: Attrs | undefined; testid?: string }) {
  const entries = Object.entries(props.attrs ?? {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return <div class="muted small">none</div>;
  return (
    <table class="kv" data-testid={props.testid}>
      <tbody>
        {entries.map(([k, v]) => (
          <tr>
            <th>{k}</th>
            <td class={typeof v === "string" ? "" : "mono"}>{attrText(v)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function SpanDetail(props: { m: TraceModel; n: SpanNode; onClose: () => void; onLog: (l: LogItem) => void }) {
  const { m, n } = props;
  const s = n.span;
  return (
    <aside class="span-detail" data-testid="span-detail" data-span-id={n.id}>
      <div class="sd-head">
        <span class="svc-bar" style={{ background: serviceColor(s.service_name) }} />
        <div>
          <div class="sd-title">
            <strong>{s.service_name}</strong>: {s.name}
          </div>
          <div class="small muted mono">span {s.span_id}</div>
        </div>
        <button type="button" class="icon" title="Close (Esc)" onClick={props.onClose}>
          ×
        </button>
      </div>
      <dl class="sd-stats">
        <dt>Duration</dt>
        <dd>
          {fmtDuration(n.dur)}
          {n.skew > 0 && (
            <span class="err small" data-testid="span-clock-skew">
              {" "}
              clock skew: the end is {fmtDuration(n.skew)} before the start, as sent
            </span>
          )}
        </dd>
        <dt>Start</dt>
        <dd>
          <span data-testid="span-start-offset">+{fmtDuration(n.start)}</span> <span class="muted small">since trace start</span> ·{" "}
          <TimeText ms={nsToMs(s.start_time_unix_nano)} ms3 />
        </dd>
        <dt>Self time</dt>
        <dd data-testid="span-self-time">{fmtDuration(selfTime(n))}</dd>
        <dt>Kind</dt>
        <dd>{s.kind}</dd>
        <dt>Status</dt>
        <dd class={n.error ? "err" : ""} data-testid="span-status">
          {s.status?.code ?? "UNSET"}
          {s.status?.message ? `: ${s.status.message}` : ""}
        </dd>
        <dt>Parent</dt>
        <dd class="mono small">{s.parent_span_id ?? "— (root)"}{s.parent_span_id && !n.parent ? " (not in this trace)" : ""}</dd>
        {n.crit.length > 0 && (
          <>
            <dt>Critical path</dt>
            <dd>{fmtDuration(n.crit.reduce((a, [x, y]) => a + y - x, 0))} of this span is on the critical path</dd>
          </>
        )}
      </dl>
      <div class="sd-links small">
        <Link href={buildUrl("/search", { service: s.service_name, operation: s.name })}>Find similar spans</Link>
        {" · "}
        <Link href={`/service/${encodeURIComponent(s.service_name)}`}>Service overview</Link>
      </div>
      <details open>
        <summary>Attributes ({Object.keys(s.attributes ?? {}).length})</summary>
        <AttrTable attrs={s.attributes} testid="span-attributes" />
      </details>
      <details open={n.logs.length > 0}>
        <summary>
          Logs ({n.logs.length}) <span class="muted small offset-label" data-testid="offset-label">times since trace start</span>
        </summary>
        {n.logs.length === 0 && <div class="muted small">This span wrote no logs.</div>}
        <ul class="sd-logs">
          {n.logs.map((l) => (
            <li class="clickable" data-testid="span-detail-log" data-log-idx={l.idx} onClick={() => props.onLog(l)}>
              <span class="muted small" data-testid="log-offset">+{fmtDuration(l.t)}</span> <span class={`sev ${severityClass(l.log)}`}>{severityLabel(l.log)}</span>{" "}
              {attrText(l.log.body)}
            </li>
          ))}
        </ul>
      </details>
      <details open={(s.events?.length ?? 0) > 0}>
        <summary>
          Events ({s.events?.length ?? 0}) <span class="muted small offset-label">times since trace start</span>
        </summary>
        {(s.events ?? []).map((ev) => (
          <div class="sd-event">
            <div>
              <span class="muted small">+{fmtDuration(nsDiff(ev.time_unix_nano, m.startNs))}</span> <strong>{ev.name}</strong>
            </div>
            <AttrTable attrs={ev.attributes} />
          </div>
        ))}
      </details>
      <details open={(s.links?.length ?? 0) > 0}>
        <summary>Links ({s.links?.length ?? 0})</summary>
        {(s.links ?? []).map((l) => (
          <div class="sd-event">
            <Link href={buildUrl(`/trace/${l.trace_id}`, { span: l.span_id })} testid="span-link">
              {l.trace_id === m.trace.trace_id ? "span in this trace" : "trace"} {l.trace_id.slice(0, 16)}… / {l.span_id}
            </Link>
            <AttrTable attrs={l.attributes} />
          </div>
        ))}
      </details>
      <details>
        <summary>Resource ({Object.keys(s.resource ?? {}).length})</summary>
        <AttrTable attrs={s.resource} />
      </details>
      <details>
        <summary>Scope</summary>
        <div class="small">
          {s.scope?.name || "(unnamed)"} {s.scope?.version}
        </div>
      </details>
    </aside>
  );
}

function LogPane(props: {
  m: TraceModel;
  selected: string | null;
  selLog: number | null;
  onlySel: boolean;
  setOnlySel: (v: boolean) => void;
  onPick: (l: LogItem) => void;
}) {
  const { m } = props;
  const list = props.onlySel && props.selected ? m.logs.filter((l) => l.node?.id === props.selected) : m.logs;
  const ref = useRef<HTMLDivElement>(null);
  // bring the selected span's logs (or the selected log) into view
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const target =
      (props.selLog != null && el.querySelector(`[data-log-idx="${props.selLog}"]`)) ||
      (props.selected && el.querySelector(`[data-span-id="${props.selected}"]`));
    if (target) {
      const t = target as HTMLElement;
      if (t.offsetTop < el.scrollTop || t.offsetTop > el.scrollTop + el.clientHeight - 24) el.scrollTop = t.offsetTop - 30;
    }
  }, [props.selected, props.selLog]);
  const shown = list.slice(0, 2000);
  return (
    <section class="log-pane" data-testid="log-pane">
      <div class="lp-head">
        <strong>Logs of this trace</strong>{" "}
        <span class="muted small">
          ({m.logs.length}; <span class="offset-label" data-testid="log-pane-offset-label">times since trace start</span>; click one to
          select its span)
        </span>
        <span class="spacer" />
        <label class="small">
          <input type="checkbox" checked={props.onlySel} onChange={() => props.setOnlySel(!props.onlySel)} /> only the selected span
        </label>
        <Link class="small" href={buildUrl("/logs", { trace_id: m.trace.trace_id })}>
          open in Logs
        </Link>
      </div>
      <div class="lp-body" ref={ref}>
        {list.length === 0 && (
          <div class="muted small pad">
            {m.logs.length === 0
              ? "No logs carry this trace's ID. Logs appear here when your logging SDK adds trace_id/span_id."
              : "The selected span wrote no logs."}
          </div>
        )}
        {shown.map((l) => (
          <div
            class={`lp-row${props.selLog === l.idx ? " selected" : ""}${l.node && l.node.id === props.selected ? " of-selected" : ""}`}
            data-testid="log-pane-row"
            data-log-idx={l.idx}
            data-span-id={l.log.span_id ?? ""}
            onClick={() => props.onPick(l)}
          >
            <span class="muted mono small" data-testid="log-offset">+{fmtDuration(l.t)}</span>
            <span class={`sev ${severityClass(l.log)}`}>{severityLabel(l.log)}</span>
            <span class="lp-svc">
              <span class="svc-dot" style={{ background: serviceColor(l.log.service_name) }} />
              {l.log.service_name}
            </span>
            <span class="lp-msg">{attrText(l.log.body)}</span>
            {l.node ? <span class="muted small">{l.node.span.name}</span> : <span class="muted small">(no span)</span>}
          </div>
        ))}
        {list.length > shown.length && <div class="muted small pad">… {list.length - shown.length} more; open them in the Logs page.</div>}
      </div>
    </section>
  );
}


type StatKey = "service" | "count" | "total" | "self" | "avg" | "min" | "max";

/** Jaeger UI's trace statistics: per service and operation, count, total, self time, mean, min and max. */
function TraceStatsTable(props: { m: TraceModel }) {
  const [key, setKey] = useState<StatKey>("total");
  const stats = useMemo(() => traceStats(props.m), [props.m]);
  const val = (r: OpStat, k: StatKey): number | string =>
    k === "service" ? r.service + "\u0001" + r.name : k === "avg" ? r.total / r.count : (r[k] as number);
  const rows = stats.slice().sort((a, b) => {
    const x = val(a, key),
      y = val(b, key);
    return typeof x === "string" ? x.localeCompare(y as string) : (y as number) - x;
  });
  const total = props.m.total;
  const th = (k: StatKey, label: string, title: string) => (
    <th class={k === "service" ? "" : "num"} title={title} aria-sort={key === k ? (k === "service" ? "ascending" : "descending") : undefined}>
      <button type="button" class="link" data-testid={`stats-sort-${k}`} onClick={() => setKey(k)}>
        {label}
        {key === k ? (k === "service" ? " ▲" : " ▼") : ""}
      </button>
    </th>
  );
  return (
    <div class="stats-view table-scroll" data-testid="trace-stats">
      <table class="data stats-table" data-testid="stats-table">
        <thead>
          <tr>
            {th("service", "Service: operation", "Sort by name")}
            {th("count", "Count", "Spans of the operation")}
            {th("total", "Total", "Sum of their durations")}
            {th("self", "Self time", "Sum of the time not covered by their child spans")}
            {th("avg", "Avg", "Mean duration")}
            {th("min", "Min", "Shortest")}
            {th("max", "Max", "Longest")}
            <th class="num" title="Self time as a share of the trace's duration">Self %</th>
            <th class="num">Errors</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr
              data-testid="stats-row"
              data-service={r.service}
              data-operation={r.name}
              data-count={r.count}
              data-total-ns={r.total}
              data-self-ns={r.self}
              data-min-ns={r.min}
              data-max-ns={r.max}
            >
              <td>
                <span class="svc-dot" style={{ background: serviceColor(r.service) }} />
                <strong>{r.service}</strong>: {r.name}
              </td>
              <td class="num">{r.count}</td>
              <td class="num">{fmtDuration(r.total)}</td>
              <td class="num">{fmtDuration(r.self)}</td>
              <td class="num">{fmtDuration(r.total / r.count)}</td>
              <td class="num">{fmtDuration(r.min)}</td>
              <td class="num">{fmtDuration(r.max)}</td>
              <td class="num">{((r.self / Math.max(1, total)) * 100).toFixed(1)}%</td>
              <td class={r.errors ? "num err" : "num"}>{r.errors}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

const FLAME_ROW = 22;

/**
 * The trace as a flame graph (an icicle: the root on top, each span below
 * its parent, width = duration on the trace's time axis), as Jaeger UI's
 * trace flame graph. Click a span for its detail; spans the filters leave
 * out are dimmed.
 */
function FlameGraph(props: { m: TraceModel; matches: Set<SpanNode> | null; selected: string | null; onPick: (id: string) => void }) {
  const { m } = props;
  const total = Math.max(1, m.total);
  return (
    <div class="flame" data-testid="flame-graph" style={{ height: (m.maxDepth + 1) * FLAME_ROW + 8 }}>
      {m.nodes.map((n) => {
        const left = (n.start / total) * 100;
        const width = Math.max(0.05, (n.dur / total) * 100);
        const dim = props.matches && !props.matches.has(n);
        return (
          <div
            class={`flame-node${n.error ? " error" : ""}${dim ? " dim" : ""}${props.selected === n.id ? " selected" : ""}`}
            data-testid="flame-node"
            data-span-id={n.id}
            data-depth={n.depth}
            style={{ left: `${left}%`, width: `${width}%`, top: n.depth * FLAME_ROW, background: serviceColor(n.span.service_name) }}
            title={`${n.span.service_name}: ${n.span.name} — ${fmtDuration(n.dur)} (self ${fmtDuration(selfTime(n))})`}
            onClick={() => props.onPick(n.id)}
          >
            <span class="flame-label">
              {n.span.service_name}: {n.span.name}
            </span>
          </div>
        );
      })}
    </div>
  );
}
