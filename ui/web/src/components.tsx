import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { ApiError } from "./api";
import {
  PRESETS,
  type TimeRange,
  describeRange,
  fmtTime,
  onLinkClick,
  resolveRange,
  serviceColor,
  utcStore,
} from "./util";

export function Link(props: {
  href: string;
  children: ComponentChildren;
  class?: string;
  title?: string;
  testid?: string;
  onClick?: () => void;
}) {
  return (
    <a
      href={props.href}
      class={props.class}
      title={props.title}
      data-testid={props.testid}
      onClick={(e) => {
        props.onClick?.();
        onLinkClick(e, props.href);
      }}
    >
      {props.children}
    </a>
  );
}

export function Loading(props: { what?: string }) {
  return (
    <div class="loading" data-testid="loading" role="status">
      <span class="spinner" aria-hidden="true" />
      Loading{props.what ? ` ${props.what}` : ""}…
    </div>
  );
}

/** A thin bar on top of a panel while it refreshes data it already shows. */
export function Busy(props: { on: boolean }) {
  return props.on ? <div class="busy" data-testid="loading" role="progressbar" aria-label="Loading" /> : null;
}

export function ErrorState(props: { error: Error; retry?: () => void; what?: string }) {
  const e = props.error;
  const status = e instanceof ApiError ? e.status : 0;
  let hint = "Retry; if it keeps failing, check the server log.";
  if (status === 0) hint = "Check that `skein serve` is running and reachable, then retry.";
  else if (status === 400) hint = "Fix the query (the server said what is wrong above) and search again.";
  else if (status === 404) hint = "Check the ID or the address; the data may also have passed its retention period.";
  else if (status === 429 || status === 503) hint = "The server is busy; wait a moment and retry.";
  else if (status === 504) hint = "The query took too long; narrow the time range or add filters.";
  return (
    <div class="state error" data-testid="error" role="alert">
      <div class="state-title">
        {props.what ? `Could not load ${props.what}` : "Something went wrong"}
        {status ? ` (HTTP ${status})` : ""}
      </div>
      <div class="state-msg">{e.message}</div>
      <div class="state-hint">{hint}</div>
      {props.retry && (
        <button type="button" onClick={props.retry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function Empty(props: { title: string; children?: ComponentChildren; testid?: string }) {
  return (
    <div class="state empty" data-testid={props.testid ?? "empty"}>
      <div class="state-title">{props.title}</div>
      {props.children && <div class="state-hint">{props.children}</div>}
    </div>
  );
}

export function ServiceChip(props: { name: string; count?: number; errors?: number }) {
  return (
    <span class="svc-chip" title={props.name}>
      <span class="svc-dot" style={{ background: serviceColor(props.name) }} />
      {props.name}
      {props.count != null && <span class="svc-count">{props.count}</span>}
      {props.errors ? <span class="svc-err">{props.errors}!</span> : null}
    </span>
  );
}

export function TimeText(props: { ms: number; ms3?: boolean; date?: boolean }) {
  const utc = utcStore.use();
  return <time dateTime={new Date(props.ms).toISOString()}>{fmtTime(props.ms, utc, { ms: props.ms3, date: props.date })}</time>;
}

// -------------------------------------------------------- time range picker --

function toInput(ms: number, utc: boolean): string {
  const d = new Date(utc ? ms : ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}
function fromInput(v: string, utc: boolean): number {
  return utc ? Date.parse(v + "Z") : new Date(v).getTime();
}

export function TimeRangePicker(props: { value: TimeRange; onChange: (r: TimeRange) => void }) {
  const utc = utcStore.use();
  const [custom, setCustom] = useState(!props.value.range);
  const b = resolveRange(props.value);
  const [from, setFrom] = useState(toInput(b.startMs, utc));
  const [to, setTo] = useState(toInput(b.endMs, utc));
  useEffect(() => {
    const r = resolveRange(props.value);
    setFrom(toInput(r.startMs, utc));
    setTo(toInput(r.endMs, utc));
    setCustom(!props.value.range);
  }, [props.value.range, props.value.start, props.value.end, utc]);
  const apply = () => {
    const s = fromInput(from, utc);
    const e = fromInput(to, utc);
    if (isNaN(s) || isNaN(e) || s >= e) return;
    props.onChange({ start: new Date(s).toISOString(), end: new Date(e).toISOString() });
  };
  return (
    <div class="timerange" data-testid="time-range">
      <label>
        <span class="lbl">Time range</span>
        <select
          data-testid="time-preset"
          value={custom ? "custom" : props.value.range}
          onChange={(e) => {
            const v = (e.target as HTMLSelectElement).value;
            if (v === "custom") setCustom(true);
            else {
              setCustom(false);
              props.onChange({ range: v });
            }
          }}
        >
          {PRESETS.map((p) => (
            <option value={p.key}>{p.label}</option>
          ))}
          {!custom && props.value.range && !PRESETS.some((p) => p.key === props.value.range) && (
            <option value={props.value.range}>{describeRange(props.value, utc)}</option>
          )}
          <option value="custom">Custom…</option>
        </select>
      </label>
      {custom && (
        <span class="custom-range">
          <input
            type="datetime-local"
            step="1"
            value={from}
            aria-label="From"
            onInput={(e) => setFrom((e.target as HTMLInputElement).value)}
          />
          <span>→</span>
          <input
            type="datetime-local"
            step="1"
            value={to}
            aria-label="To"
            onInput={(e) => setTo((e.target as HTMLInputElement).value)}
          />
          <button type="button" onClick={apply}>
            Apply
          </button>
          <span class="muted small">{utc ? "UTC" : "local time"}</span>
        </span>
      )}
      {!custom && <span class="muted small range-desc">{describeRange(props.value, utc)}</span>}
    </div>
  );
}

// ------------------------------------------------------------------ charts --

/** A uPlot chart that fills its container's width and rebuilds when data or options change. */
export function UChart(props: {
  opts: (width: number) => uPlot.Options;
  data: uPlot.AlignedData;
  height?: number;
  testid?: string;
  depKey?: string;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const optsRef = useRef(props.opts);
  optsRef.current = props.opts;
  useEffect(() => {
    const el = ref.current!;
    const width = Math.max(200, el.clientWidth);
    plot.current = new uPlot(optsRef.current(width), props.data, el);
    let last = width;
    const ro = new ResizeObserver(() => {
      const w = Math.max(200, el.clientWidth);
      if (Math.abs(w - last) > 2 && plot.current) {
        last = w;
        plot.current.setSize({ width: w, height: plot.current.height });
      }
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [props.data, props.depKey]);
  return <div class="uchart" ref={ref} data-testid={props.testid} style={{ minHeight: props.height ?? 160 }} />;
}

/** Axis/grid colours that follow the theme. */
export function axisStyle() {
  const cs = getComputedStyle(document.documentElement);
  const fg = cs.getPropertyValue("--muted").trim() || "#888";
  const grid = cs.getPropertyValue("--grid").trim() || "rgba(128,128,128,.15)";
  return { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
}

/** A time x-axis: labels in the browser zone or UTC, spaced so they never overlap. */
export function timeAxis(utc: boolean): uPlot.Axis {
  return { ...axisStyle(), values: timeAxisValues(utc), space: 90 };
}

/** x-axis tick labels in the browser zone or UTC, following the toggle. */
export function timeAxisValues(utc: boolean) {
  return (_u: uPlot, splits: number[], _ax: number, _space: number, incr: number) =>
    splits.map((s) => {
      const ms = s * 1000;
      const showMs = incr < 1;
      const t = fmtTime(ms, false, { date: false, ms: showMs });
      const tu = fmtTime(ms, true, { date: false, ms: showMs }).replace(" UTC", "");
      return utc ? tu : t;
    });
}
