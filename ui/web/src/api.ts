import { createStore } from "./util";
// Typed access to Skein's native HTTP API (see docs API.md). Relative URLs:
// the UI is served from the same origin as the API.

export type AttrValue = string | number | boolean | null | AttrValue[] | { [k: string]: AttrValue };
export type Attrs = Record<string, AttrValue>;

export interface SpanEvent {
  name: string;
  time_unix_nano: string;
  attributes: Attrs;
}
export interface SpanLink {
  trace_id: string;
  span_id: string;
  attributes: Attrs;
}
export interface Span {
  trace_id: string;
  span_id: string;
  parent_span_id: string | null;
  name: string;
  kind: string;
  service_name: string;
  start_time_unix_nano: string;
  end_time_unix_nano: string;
  duration_ns: number;
  status: { code: string; message?: string };
  attributes: Attrs;
  resource: Attrs;
  scope: { name?: string; version?: string };
  events: SpanEvent[];
  links: SpanLink[];
}
export interface Log {
  time_unix_nano: string;
  observed_time_unix_nano?: string;
  severity_number: number;
  severity_text: string;
  body: AttrValue;
  attributes: Attrs;
  resource: Attrs;
  service_name: string;
  trace_id: string | null;
  span_id: string | null;
}
export interface Trace {
  trace_id: string;
  spans: Span[];
  logs: Log[];
}
export interface ServiceCount {
  name: string;
  span_count: number;
  error_count: number;
}
export interface TraceSummary {
  trace_id: string;
  root_service: string;
  root_name: string;
  start_time_unix_nano: string;
  duration_ns: number;
  span_count: number;
  error_count: number;
  services: ServiceCount[];
}
export interface Operation {
  name: string;
  span_kind: string;
  span_count: number;
}
export interface Edge {
  parent: string;
  child: string;
  call_count: number;
  error_count: number;
  /** Tempo's service-graph label for a call to something other than an
   *  instrumented service: `database`, `messaging_system`, `virtual_node`. */
  connection_type?: string;
}
export interface RedPoint {
  time_unix_nano: string;
  request_count: number;
  error_count: number;
  p50_ns: number;
  p95_ns: number;
  p99_ns: number;
}
export interface RedSeries {
  service: string;
  operation: string | null;
  points: RedPoint[];
}
export interface RedResponse {
  step_ns: number;
  series: RedSeries[];
}
export interface HistogramResponse {
  step_ns: number;
  buckets: { time_unix_nano: string; count: number }[];
}

export class ApiError extends Error {
  constructor(
    message: string,
    public status: number,
    public url: string,
  ) {
    super(message);
  }
}

export type Params = Record<string, string | string[] | undefined | null>;

export function qs(params: Params): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v == null || v === "") continue;
    if (Array.isArray(v)) v.filter((x) => x !== "").forEach((x) => u.append(k, x));
    else u.append(k, v);
  }
  const s = u.toString();
  return s ? "?" + s : "";
}

/** The bearer token and tenant the user gave in the sign-in dialog, kept
 * for this browser tab's session only (sessionStorage), never in a cookie,
 * so no other site can send them. */
export interface Credentials {
  token: string;
  tenant: string;
}

const CREDS_KEY = "skein.credentials";

export function loadCredentials(): Credentials {
  try {
    const c = JSON.parse(sessionStorage.getItem(CREDS_KEY) || "{}");
    return { token: String(c.token || ""), tenant: String(c.tenant || "") };
  } catch {
    return { token: "", tenant: "" };
  }
}

export function saveCredentials(c: Credentials) {
  try {
    sessionStorage.setItem(CREDS_KEY, JSON.stringify(c));
  } catch {
    /* private mode: asked again on the next 401 */
  }
}

/** Set when the server answered 401: the UI shows its sign-in dialog. */
export const authStore = createStore<string | null>(null);

function authHeaders(): Record<string, string> {
  const c = loadCredentials();
  const h: Record<string, string> = { Accept: "application/json" };
  if (c.token) h["Authorization"] = `Bearer ${c.token}`;
  if (c.tenant) h["X-Scope-OrgID"] = c.tenant;
  return h;
}

export async function getJson<T>(path: string, params: Params = {}, signal?: AbortSignal): Promise<T> {
  const url = path + qs(params);
  let res: Response;
  try {
    res = await fetch(url, { signal, headers: authHeaders() });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError("Cannot reach the Skein server. Check that `skein serve` is running, then retry.", 0, url);
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    // 401: no or a wrong token; 403: a token that may not read the tenant
    // asked for. Either way the user can fix it in the sign-in dialog.
    if (res.status === 401 || res.status === 403) authStore.set(body && typeof body === "object" && "error" in body ? String((body as { error: unknown }).error) : "Sign in");
    const msg =
      body && typeof body === "object" && "error" in body
        ? String((body as { error: unknown }).error)
        : text.slice(0, 300) || res.statusText;
    throw new ApiError(msg, res.status, url);
  }
  if (body === null) throw new ApiError("The server answered with something that is not JSON.", res.status, url);
  return body as T;
}

export const api = {
  trace: (id: string, s?: AbortSignal) => getJson<Trace>(`/api/v1/traces/${encodeURIComponent(id)}`, {}, s),
  searchTraces: (p: Params, s?: AbortSignal) => getJson<{ traces: TraceSummary[] }>("/api/v1/search/traces", p, s),
  searchLogs: (p: Params, s?: AbortSignal) => getJson<{ logs: Log[] }>("/api/v1/search/logs", p, s),
  services: (s?: AbortSignal) => getJson<{ services: ServiceCount[] }>("/api/v1/services", {}, s),
  operations: (svc: string, s?: AbortSignal) =>
    getJson<{ operations: Operation[] }>(`/api/v1/services/${encodeURIComponent(svc)}/operations`, {}, s),
  dependencies: (p: Params, s?: AbortSignal) => getJson<{ edges: Edge[] }>("/api/v1/dependencies", p, s),
  red: (p: Params, s?: AbortSignal) => getJson<RedResponse>("/api/v1/metrics/red", p, s),
  logHistogram: (p: Params, s?: AbortSignal) => getJson<HistogramResponse>("/api/v1/logs/histogram", p, s),
};

/** What a live tail stream reports (GET /api/v1/tail/logs, server-sent
 * events): each matching log record, `ready` once the backfill is sent,
 * `lagged` with the records dropped because this client fell behind, and
 * the connection's state for the page to show. */
export interface TailHandlers {
  onLog: (l: Log) => void;
  onReady?: (backfilled: number) => void;
  onLagged?: (dropped: number) => void;
  onState?: (s: "connecting" | "live" | "error", message?: string) => void;
}

/** Follows `/api/v1/tail/logs` with `params` until `signal` aborts,
 * reconnecting after a pause when the stream ends or fails (a restarting
 * server). Read with fetch rather than EventSource, so the sign-in token
 * and tenant headers go along as with every other request. */
export async function tailLogs(params: Params, h: TailHandlers, signal: AbortSignal): Promise<void> {
  // The newest record received: a reconnect backfills only what came
  // after it, so no record is shown twice and none missed in between.
  let last: string | null = null;
  while (!signal.aborted) {
    h.onState?.("connecting");
    const p: Params = { ...params };
    if (last !== null) {
      p.start = (BigInt(last) + BigInt(1)).toString();
    }
    const url = "/api/v1/tail/logs" + qs(p);
    try {
      const res = await fetch(url, { signal, headers: { ...authHeaders(), Accept: "text/event-stream" } });
      if (!res.ok || !res.body) {
        const text = await res.text().catch(() => "");
        let msg = text.slice(0, 300) || res.statusText;
        try {
          msg = String(JSON.parse(text).error ?? msg);
        } catch {
          /* not JSON */
        }
        if (res.status === 401 || res.status === 403) authStore.set(msg);
        h.onState?.("error", msg);
        // A bad filter does not get better by retrying.
        if (res.status === 400 || res.status === 401 || res.status === 403) return;
      } else {
        await readEvents(res.body, signal, (event, data) => {
          if (event === "message") {
            const l = JSON.parse(data) as Log;
            if (last === null || BigInt(l.time_unix_nano) > BigInt(last)) last = l.time_unix_nano;
            h.onLog(l);
          }
          else if (event === "ready") {
            h.onState?.("live");
            h.onReady?.(Number(JSON.parse(data).backfilled) || 0);
          } else if (event === "lagged") h.onLagged?.(Number(JSON.parse(data).dropped) || 0);
        });
        if (!signal.aborted) h.onState?.("error", "The live stream ended; reconnecting.");
      }
    } catch (e) {
      if (signal.aborted || (e as Error).name === "AbortError") return;
      h.onState?.("error", "Cannot reach the Skein server; reconnecting.");
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/** Parses a text/event-stream body (WHATWG HTML, "Server-sent events"):
 * events end at a blank line; `event:` names one, `data:` lines are joined
 * with newlines, lines starting with `:` are comments (keep-alives). */
async function readEvents(body: ReadableStream<Uint8Array>, signal: AbortSignal, on: (event: string, data: string) => void) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  let buf = "";
  let event = "message";
  let data: string[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let nl: number;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (data.length) on(event, data.join("\n"));
        event = "message";
        data = [];
      } else if (!line.startsWith(":")) {
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
    }
  }
}
