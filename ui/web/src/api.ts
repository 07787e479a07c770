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
