import { useEffect, useMemo, useState, useRef, useCallback } from "preact/hooks";
import type { AttrValue } from "./api";

// ---------------------------------------------------------------- router ----

type Listener = () => void;
const routeListeners = new Set<Listener>();

export function navigate(to: string, replace = false) {
  if (to === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  routeListeners.forEach((l) => l());
}
window.addEventListener("popstate", () => routeListeners.forEach((l) => l()));

export interface Loc {
  path: string;
  search: string;
  query: URLSearchParams;
}
function currentLoc(): Loc {
  return { path: location.pathname, search: location.search, query: new URLSearchParams(location.search) };
}
export function useLocation(): Loc {
  const [loc, setLoc] = useState(currentLoc);
  useEffect(() => {
    const l = () => setLoc(currentLoc());
    routeListeners.add(l);
    return () => void routeListeners.delete(l);
  }, []);
  return loc;
}

export interface UrlState<F> {
  /** The form as the user is editing it, not yet in the URL. */
  form: F;
  setForm: (f: F | ((prev: F) => F)) => void;
  /** The form as the URL holds it: what the page shows results for. */
  applied: F;
  /** Puts `f` in the URL as a new history entry; if the URL already says `f`, runs the search again instead. */
  submit: (f: F) => void;
  /** Changes whenever the search should run: a new URL, or the same one submitted again. A fetch key. */
  runKey: string;
}

/**
 * Form fields held in the URL query, so a shared link or Back reproduces a
 * search. `fromQuery` and `toUrl` must be inverse: `fromQuery` of the query
 * of `toUrl(f)` is `f` up to defaults. Back/forward reset the edited form to
 * the URL. Submitting the URL already shown runs the search again, because a
 * relative range ("last hour") means newer results by then.
 */
export function useUrlState<F>(
  loc: Loc,
  fromQuery: (q: URLSearchParams) => F,
  toUrl: (f: F) => string,
): UrlState<F> {
  const applied = useMemo(() => fromQuery(loc.query), [loc.search]);
  const [form, setForm] = useState<F>(applied);
  useEffect(() => setForm(applied), [applied]);
  const [runs, setRuns] = useState(0);
  const submit = (f: F) => {
    const url = toUrl(f);
    if (url === location.pathname + location.search) setRuns((n) => n + 1);
    else navigate(url);
  };
  return { form, setForm, applied, submit, runKey: `${loc.search}#${runs}` };
}

/** Click handler for in-app links: keeps modifier clicks (new tab) working. */
export function onLinkClick(e: MouseEvent, href: string) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(href);
  window.scrollTo(0, 0);
}

// ------------------------------------------------------------ small store ---

export function createStore<T>(initial: T) {
  let value = initial;
  const ls = new Set<Listener>();
  return {
    get: () => value,
    set(v: T) {
      value = v;
      ls.forEach((l) => l());
    },
    use(): T {
      const [, force] = useState(0);
      useEffect(() => {
        const l = () => force((x) => x + 1);
        ls.add(l);
        return () => void ls.delete(l);
      }, []);
      return value;
    },
  };
}

const storedUtc = (() => {
  try {
    return localStorage.getItem("skein.utc") === "1";
  } catch {
    return false;
  }
})();
export const utcStore = createStore<boolean>(storedUtc);
export function setUtc(v: boolean) {
  try {
    localStorage.setItem("skein.utc", v ? "1" : "0");
  } catch {
    /* private mode */
  }
  utcStore.set(v);
}

// ------------------------------------------------------------------ time ----

/** Unix ns decimal string -> ms as a JS number (sub-ms precision kept as fraction). */
export function nsToMs(ns: string | number | bigint): number {
  if (typeof ns === "number") return ns / 1e6;
  const b = BigInt(ns);
  return Number(b / 1000n) / 1000;
}
/** Difference a - b of two ns strings, in ns, as a JS number (exact for spans within a trace). */
export function nsDiff(a: string, b: string): number {
  return Number(BigInt(a) - BigInt(b));
}
export function msToNs(ms: number): string {
  return (BigInt(Math.round(ms * 1000)) * 1000n).toString();
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

export function fmtTime(ms: number, utc: boolean, opts: { ms?: boolean; date?: boolean } = {}): string {
  const d = new Date(ms);
  const Y = utc ? d.getUTCFullYear() : d.getFullYear();
  const M = utc ? d.getUTCMonth() + 1 : d.getMonth() + 1;
  const D = utc ? d.getUTCDate() : d.getDate();
  const h = utc ? d.getUTCHours() : d.getHours();
  const m = utc ? d.getUTCMinutes() : d.getMinutes();
  const s = utc ? d.getUTCSeconds() : d.getSeconds();
  const milli = utc ? d.getUTCMilliseconds() : d.getMilliseconds();
  let out = `${pad(h)}:${pad(m)}:${pad(s)}`;
  if (opts.ms !== false) out += `.${pad(milli, 3)}`;
  if (opts.date !== false) out = `${Y}-${pad(M)}-${pad(D)} ${out}`;
  if (utc) out += " UTC";
  return out;
}

export function fmtDuration(ns: number): string {
  if (!isFinite(ns)) return "–";
  const a = Math.abs(ns);
  if (a < 1e3) return `${Math.round(ns)} ns`;
  if (a < 1e6) return `${trim(ns / 1e3)} µs`;
  if (a < 1e9) return `${trim(ns / 1e6)} ms`;
  if (a < 60e9) return `${trim(ns / 1e9)} s`;
  const s = Math.round(ns / 1e9);
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
function trim(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

export function fmtRelative(ms: number, now = Date.now()): string {
  const d = (now - ms) / 1000;
  const f = (v: number, u: string) => `${Math.floor(v)} ${u}${Math.floor(v) === 1 ? "" : "s"} ago`;
  if (d < 0) return "in the future";
  if (d < 60) return f(d, "second");
  if (d < 3600) return f(d / 60, "minute");
  if (d < 86400) return f(d / 3600, "hour");
  if (d < 86400 * 60) return f(d / 86400, "day");
  if (d < 86400 * 730) return f(d / 86400 / 30.4, "month");
  return f(d / 86400 / 365, "year");
}

export function fmtNum(n: number): string {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n * 100) / 100);
}

/** Parses `250ms`, `1.5s`, `900us`, `2m`, `1h` to ns; null if invalid. */
export function parseDuration(s: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)\s*$/.exec(s);
  if (!m) return null;
  const mul: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9, d: 86400e9 };
  return parseFloat(m[1]) * mul[m[2]];
}

/**
 * Why `s` is not a trace ID, or null when it is one: 1 to 32 hex digits
 * (shorter IDs are left-padded with zeros, as the API does) and not all
 * zero, which W3C Trace Context and OTLP define as invalid.
 */
export function traceIdProblem(s: string): string | null {
  const v = s.trim().toLowerCase();
  if (!/^[0-9a-f]{1,32}$/.test(v)) return `"${s.trim()}" is not a trace ID: a trace ID is up to 32 hexadecimal digits.`;
  if (/^0+$/.test(v)) return `"${s.trim()}" is not a valid trace ID: the all-zero ID means "no trace". Logs without a trace are found on the Logs page.`;
  return null;
}

// ------------------------------------------------------------ time range ----

export const PRESETS: { key: string; label: string }[] = [
  { key: "15m", label: "Last 15 minutes" },
  { key: "1h", label: "Last 1 hour" },
  { key: "6h", label: "Last 6 hours" },
  { key: "24h", label: "Last 24 hours" },
  { key: "7d", label: "Last 7 days" },
  { key: "30d", label: "Last 30 days" },
  { key: "all", label: "Any time (10 years)" },
];
/** Other spellings of a preset that links and users type (`range=any`). */
const PRESET_ALIASES: Record<string, string> = { any: "all", anytime: "all", "any-time": "all", "10y": "all" };
export const DEFAULT_RANGE = "1h";

export interface TimeRange {
  /** relative preset key, e.g. "1h"; absent when start/end are set */
  range?: string;
  start?: string;
  end?: string;
}
export function rangeFromQuery(q: URLSearchParams): TimeRange {
  const start = q.get("start") || undefined;
  const end = q.get("end") || undefined;
  if (start || end) return { start, end };
  return { range: normalizeRange(q.get("range")) };
}
/**
 * A `range` from a URL as a key the picker and `resolveRange` agree on: a
 * preset, an alias of one (`any` → `all`), or any duration (`2h`); anything
 * else is the default, so the picker never shows a range it does not search.
 */
export function normalizeRange(r: string | null): string {
  const v = (r ?? "").trim().toLowerCase();
  if (!v) return DEFAULT_RANGE;
  if (PRESETS.some((p) => p.key === v)) return v;
  if (PRESET_ALIASES[v]) return PRESET_ALIASES[v];
  return parseDuration(v) != null ? v : DEFAULT_RANGE;
}
export function rangeToQuery(r: TimeRange): Record<string, string | undefined> {
  return r.range ? { range: r.range === DEFAULT_RANGE ? undefined : r.range } : { start: r.start, end: r.end };
}
/** A time parameter (Unix ns or RFC 3339) to epoch ms. */
export function parseTimeParam(s: string): number | null {
  if (/^\d+$/.test(s)) return nsToMs(s);
  const t = Date.parse(s);
  return isNaN(t) ? null : t;
}
/** Resolves a range to absolute bounds: ms numbers for display, ns strings for the API. */
export function resolveRange(r: TimeRange, now = Date.now()) {
  let endMs: number, startMs: number;
  let startParam: string, endParam: string;
  if (r.range) {
    const dur = r.range === "all" ? 3650 * 86400e9 : parseDuration(r.range) ?? 3600e9;
    endMs = now;
    startMs = now - dur / 1e6;
    startParam = msToNs(startMs);
    endParam = msToNs(endMs);
  } else {
    endMs = (r.end && parseTimeParam(r.end)) || now;
    startMs = (r.start && parseTimeParam(r.start)) || endMs - 3600e3;
    startParam = r.start || msToNs(startMs);
    endParam = r.end || msToNs(endMs);
  }
  return { startMs, endMs, start: startParam, end: endParam };
}
export function describeRange(r: TimeRange, utc: boolean): string {
  if (r.range) return PRESETS.find((p) => p.key === r.range)?.label ?? `Last ${r.range}`;
  const b = resolveRange(r);
  return `${fmtTime(b.startMs, utc, { ms: false })} → ${fmtTime(b.endMs, utc, { ms: false })}`;
}
/** A step that gives about `buckets` buckets over the range, as an API duration string. */
export function stepFor(startMs: number, endMs: number, buckets = 60): string {
  const s = Math.max(1, Math.ceil((endMs - startMs) / 1000 / buckets));
  return `${s}s`;
}

// ----------------------------------------------------------------- colour ---

const PALETTE = [
  "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
  "#ff9da7", "#9c755f", "#8cd17d", "#499894", "#d37295", "#a0cbe8",
  "#ffbe7d", "#86bcb6", "#d4a6c8", "#79706e",
];
const colorCache = new Map<string, string>();
export function serviceColor(name: string): string {
  let c = colorCache.get(name);
  if (!c) {
    let h = 2166136261;
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
    c = PALETTE[(h >>> 0) % PALETTE.length];
    colorCache.set(name, c);
  }
  return c;
}

export function attrText(v: AttrValue): string {
  if (v == null) return "";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

// ------------------------------------------------------------------ fetch ---

export interface FetchState<T> {
  data: T | null;
  error: Error | null;
  loading: boolean;
  reload: () => void;
}
/** Runs `fn` whenever `key` changes; aborts the previous request. key === null: idle. */
export function useFetch<T>(key: string | null, fn: (signal: AbortSignal) => Promise<T>): FetchState<T> {
  const [state, setState] = useState<{ data: T | null; error: Error | null; loading: boolean }>({
    data: null,
    error: null,
    loading: key !== null,
  });
  const [n, setN] = useState(0);
  const fnRef = useRef(fn);
  fnRef.current = fn;
  useEffect(() => {
    if (key === null) {
      setState({ data: null, error: null, loading: false });
      return;
    }
    const ac = new AbortController();
    setState((s) => ({ data: s.data, error: null, loading: true }));
    fnRef.current(ac.signal).then(
      (data) => !ac.signal.aborted && setState({ data, error: null, loading: false }),
      (error: Error) => !ac.signal.aborted && setState({ data: null, error, loading: false }),
    );
    return () => ac.abort();
  }, [key, n]);
  const reload = useCallback(() => setN((x) => x + 1), []);
  return { ...state, reload };
}

export function copyText(s: string): Promise<void> {
  if (navigator.clipboard?.writeText) return navigator.clipboard.writeText(s).catch(() => fallbackCopy(s));
  fallbackCopy(s);
  return Promise.resolve();
}
function fallbackCopy(s: string) {
  const ta = document.createElement("textarea");
  ta.value = s;
  document.body.appendChild(ta);
  ta.select();
  try {
    document.execCommand("copy");
  } catch {
    /* ignore */
  }
  ta.remove();
}

export function downloadJson(name: string, data: unknown) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

export function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export function buildUrl(path: string, params: Record<string, string | string[] | undefined | null>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v == null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => x && u.append(k, x));
    else u.append(k, v);
  }
  const s = u.toString();
  return s ? `${path}?${s}` : path;
}
