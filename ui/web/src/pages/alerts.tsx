import { getJson } from "../api";
import { Empty, ErrorState, Link, Loading } from "../components";
import { fmtDuration, fmtTime, nsToMs, useFetch, utcStore } from "../util";

/** One rule of `GET /api/v1/alerts` (docs/alerts.md). */
export interface AlertRule {
  name: string;
  kind: string;
  query: string;
  comparison: string;
  threshold: number;
  window_ns: number;
  for_ns: number;
  state: "inactive" | "pending" | "firing";
  active_at: string | null;
  fired_at: string | null;
  last_evaluation: string | null;
  value: number | null;
  health: "ok" | "err" | "unknown";
  last_error: string | null;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  receivers: string[];
  undelivered_notifications: number;
  search_url: string;
}

const ORDER = { firing: 0, pending: 1, inactive: 2 };

/** Alert rules from the config file and their state; refreshed every 15 s. */
export function AlertsPage() {
  const utc = utcStore.use();
  const res = useFetch("alerts", (s) => getJson<{ evaluation_interval_ns: number; rules: AlertRule[] }>("/api/v1/alerts", {}, s));
  const t = (ns: string | null) => (ns ? fmtTime(nsToMs(ns), utc, { date: true }) : "–");
  const rules = [...(res.data?.rules ?? [])].sort((a, b) => ORDER[a.state] - ORDER[b.state] || a.name.localeCompare(b.name));
  return (
    <div class="page" data-testid="page-alerts">
      <div class="page-head">
        <h1>Alerts</h1>
        <span class="spacer" />
        <button type="button" onClick={() => res.reload()} data-testid="alerts-reload">
          Refresh
        </button>
      </div>
      {res.error ? (
        <ErrorState error={res.error} retry={res.reload} what="alert rules" />
      ) : res.loading && !res.data ? (
        <Loading what="alert rules" />
      ) : rules.length === 0 ? (
        <Empty title="No alert rules" testid="alerts-empty">
          Rules are set in the config file under <code>[[alerts.rules]]</code>; see docs/alerts.md.
        </Empty>
      ) : (
        <table class="data" data-testid="alerts-table">
          <thead>
            <tr>
              <th>State</th>
              <th>Rule</th>
              <th>Condition</th>
              <th>Value</th>
              <th>Active since</th>
              <th>Last evaluation</th>
              <th>Traces</th>
            </tr>
          </thead>
          <tbody>
            {rules.map((r) => (
              <tr key={r.name} data-testid="alert-row" data-state={r.state}>
                <td>
                  <span class={`badge alert-${r.state}`} data-testid="alert-state">
                    {r.state}
                  </span>
                  {r.health === "err" && (
                    <div class="error-text" title={r.last_error ?? ""}>
                      evaluation failed: {r.last_error}
                    </div>
                  )}
                </td>
                <td>
                  <strong>{r.name}</strong>
                  {Object.entries(r.labels)
                    .filter(([k]) => k !== "alertname")
                    .map(([k, v]) => (
                      <span class="tag" key={k}>
                        {k}={v}
                      </span>
                    ))}
                  {r.annotations.summary && <div class="muted">{r.annotations.summary}</div>}
                </td>
                <td>
                  <code>{r.query}</code>
                  {r.for_ns > 0 && <div class="muted">for {fmtDuration(r.for_ns)}</div>}
                </td>
                <td>{r.value == null ? "no data" : r.kind === "latency" ? fmtDuration(r.value * 1e9) : String(+r.value.toFixed(4))}</td>
                <td>{t(r.active_at)}</td>
                <td>{t(r.last_evaluation)}</td>
                <td>
                  <Link href={r.search_url}>Show traces</Link>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
