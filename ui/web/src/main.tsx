import { render } from "preact";
import { useState } from "preact/hooks";
import "./style.css";
import { Link } from "./components";
import { navigate, setUtc, traceIdProblem, useLocation, utcStore } from "./util";
import { SearchPage } from "./pages/search";
import { TracePage } from "./pages/trace";
import { ComparePage } from "./pages/compare";
import { MapPage } from "./pages/map";
import { AlertsPage } from "./pages/alerts";
import { ServicePage } from "./pages/service";
import { LogsPage } from "./pages/logs";
import { authStore, loadCredentials, saveCredentials } from "./api";

/** Asks for the bearer token (and tenant) once the server answers 401, keeps
 * them for this tab's session, and reloads the page to run its queries again. */
function SignIn(props: { reason: string }) {
  const old = loadCredentials();
  const [token, setToken] = useState(old.token);
  const [tenant, setTenant] = useState(old.tenant);
  return (
    <div class="signin-backdrop">
      <form
        class="signin"
        role="dialog"
        aria-modal="true"
        aria-labelledby="signin-title"
        data-testid="signin"
        onSubmit={(e) => {
          e.preventDefault();
          saveCredentials({ token: token.trim(), tenant: tenant.trim() });
          authStore.set(null);
          location.reload();
        }}
      >
        <h2 id="signin-title">Sign in to Skein</h2>
        <p class="signin-reason" data-testid="signin-reason">
          {props.reason}
        </p>
        <label>
          Token
          <input
            type="password"
            autocomplete="current-password"
            value={token}
            data-testid="signin-token"
            onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Tenant (X-Scope-OrgID; leave empty if your token names it)
          <input
            value={tenant}
            data-testid="signin-tenant"
            onInput={(e) => setTenant((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit" data-testid="signin-submit">
          Sign in
        </button>
      </form>
    </div>
  );
}

function Nav(props: { path: string }) {
  const utc = utcStore.use();
  const [tid, setTid] = useState("");
  const [tidError, setTidError] = useState<string | null>(null);
  const item = (href: string, label: string, active: boolean, testid: string) => (
    <Link href={href} class={active ? "nav-item active" : "nav-item"} testid={testid}>
      {label}
    </Link>
  );
  const p = props.path;
  return (
    <header class="topbar">
      <Link href="/search" class="brand">
        <svg width="18" height="18" viewBox="0 0 16 16" aria-hidden="true">
          <circle cx="8" cy="8" r="6" fill="none" stroke="currentColor" stroke-width="2.5" />
          <path d="M3 8h10" stroke="currentColor" stroke-width="1.5" />
        </svg>
        Skein
      </Link>
      <nav>
        {item("/search", "Search", p === "/" || p.startsWith("/search") || p.startsWith("/trace"), "nav-search")}
        {item("/logs", "Logs", p.startsWith("/logs"), "nav-logs")}
        {item("/map", "Service map", p.startsWith("/map") || p.startsWith("/service"), "nav-map")}
        {item("/compare", "Compare", p.startsWith("/compare"), "nav-compare")}
        {item("/alerts", "Alerts", p.startsWith("/alerts"), "nav-alerts")}
      </nav>
      <form
        class="goto"
        onSubmit={(e) => {
          e.preventDefault();
          const id = tid.trim().toLowerCase();
          if (!id) return;
          const problem = traceIdProblem(id);
          setTidError(problem);
          if (!problem) navigate(`/trace/${encodeURIComponent(id)}`);
        }}
      >
        <input
          placeholder="Open trace ID…"
          value={tid}
          aria-label="Trace ID"
          aria-invalid={tidError ? true : undefined}
          aria-describedby={tidError ? "goto-error" : undefined}
          data-testid="goto-trace"
          onInput={(e) => {
            setTid((e.target as HTMLInputElement).value);
            setTidError(null);
          }}
        />
        {tidError && (
          <div class="goto-error" id="goto-error" role="alert" data-testid="goto-error">
            {tidError}
          </div>
        )}
      </form>
      <label class="utc-toggle" title="Show times in UTC instead of the browser's time zone">
        <input
          type="checkbox"
          checked={utc}
          data-testid="utc-toggle"
          onChange={(e) => setUtc((e.target as HTMLInputElement).checked)}
        />
        UTC
      </label>
    </header>
  );
}

function NotFound(props: { path: string }) {
  return (
    <div class="page">
      <div class="state empty">
        <div class="state-title">No page at {props.path}</div>
        <div class="state-hint">
          Go to <Link href="/search">trace search</Link>, <Link href="/logs">logs</Link> or the{" "}
          <Link href="/map">service map</Link>.
        </div>
      </div>
    </div>
  );
}

function App() {
  const loc = useLocation();
  const p = loc.path.replace(/\/+$/, "") || "/";
  let page;
  let m: RegExpMatchArray | null;
  if (p === "/" || p === "/search") page = <SearchPage loc={loc} />;
  else if ((m = p.match(/^\/trace\/([^/]+)$/))) page = <TracePage id={decodeURIComponent(m[1])} loc={loc} />;
  else if (p === "/compare") page = <ComparePage loc={loc} />;
  else if (p === "/map") page = <MapPage loc={loc} />;
  else if ((m = p.match(/^\/service\/([^/]+)$/))) page = <ServicePage name={decodeURIComponent(m[1])} loc={loc} />;
  else if (p === "/logs") page = <LogsPage loc={loc} />;
  else if (p === "/alerts") page = <AlertsPage />;
  else page = <NotFound path={p} />;
  const onTrace = p.startsWith("/trace/");
  const authReason = authStore.use();
  return (
    <>
      {authReason !== null && <SignIn reason={authReason} />}
      {onTrace && (
        <a
          class="skip-link"
          href="#waterfall"
          data-testid="skip-to-waterfall"
          onClick={(e) => {
            const wf = document.getElementById("waterfall");
            if (wf) {
              e.preventDefault();
              wf.focus();
              wf.scrollIntoView({ block: "nearest" });
            }
          }}
        >
          Skip to the waterfall
        </a>
      )}
      <Nav path={p} />
      <main>{page}</main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
