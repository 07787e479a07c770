//! Who may write and read, and as which tenant: bearer tokens for ingest
//! and for query (each optional, RFC 6750), and the tenant of a request
//! from the token it is bound to or from `X-Scope-OrgID` (Tempo and Loki's
//! header), as layers over the servers. The routers themselves read
//! only the [`TenantId`] this puts in the request's extensions.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde::Deserialize;
use skein_collector::{Ingest, IngestError};
use skein_storage::tenant::TenantId;
use subtle::ConstantTimeEq;

/// The header naming a request's tenant, as Grafana Tempo, Loki and Mimir
/// read it.
pub(crate) const TENANT_HEADER: &str = "x-scope-orgid";

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    /// Writing: OTLP/gRPC and OTLP/HTTP exports.
    Ingest,
    /// Reading: the HTTP API (native, Jaeger, Tempo, `/metrics`) and the
    /// data the UI shows.
    Query,
}

impl Scope {
    /// The name as written in the config file.
    fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
        }
    }
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// One token (`[[auth.tokens]]`): its value inline or in a file (the
/// file's content, surrounding white space removed, read at start), what
/// it allows, and the tenant it is bound to, if any.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenConfig {
    token: Option<Secret>,
    token_file: Option<PathBuf>,
    scopes: Vec<Scope>,
    tenant: Option<String>,
}

/// `[auth]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthConfig {
    /// The accepted tokens. With none of a scope, that scope is open.
    tokens: Vec<TokenConfig>,
}

#[derive(Debug)]
struct Token {
    value: Secret,
    scopes: Vec<Scope>,
    tenant: Option<TenantId>,
}

/// The authentication and tenancy rules the layers apply.
#[derive(Debug)]
pub(crate) struct Auth {
    tokens: Vec<Token>,
    /// Tempo's `multitenancy_enabled`: every request names a tenant (by its
    /// token or `X-Scope-OrgID`); off, every request is
    /// [`skein_storage::tenant::DEFAULT_TENANT`]'s and the header is ignored.
    multitenancy: bool,
}

/// Why a request was refused, before it reached a router.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401 / UNAUTHENTICATED.
    Unauthenticated(String),
    /// 403 / PERMISSION_DENIED.
    Forbidden(String),
    /// 400 / INVALID_ARGUMENT: a malformed `X-Scope-OrgID`, or a repeated
    /// `Authorization` or `X-Scope-OrgID` header.
    BadRequest(String),
}

impl Refusal {
    fn into_ingest(self) -> IngestError {
        match self {
            Refusal::Unauthenticated(m) => IngestError::Unauthenticated(m),
            Refusal::Forbidden(m) => IngestError::Forbidden(m),
            Refusal::BadRequest(m) => IngestError::Malformed(m),
        }
    }

    fn into_query(self) -> skein_query::Error {
        match self {
            Refusal::Unauthenticated(m) => skein_query::Error::Unauthorized(m),
            Refusal::Forbidden(m) => skein_query::Error::Forbidden(m),
            Refusal::BadRequest(m) => skein_query::Error::BadRequest(m),
        }
    }
}

impl Auth {
    /// Reads the tokens (and token files) of `cfg`.
    ///
    /// # Errors
    /// A token with neither or both of `token` and `token_file`, an
    /// unreadable or empty token file, no scopes, an invalid tenant, or a
    /// tenant binding while multi-tenancy is off.
    pub(crate) fn new(cfg: &AuthConfig, multitenancy: bool) -> Result<Auth> {
        let mut tokens = Vec::new();
        for (i, t) in cfg.tokens.iter().enumerate() {
            let what = format!("auth.tokens[{i}]");
            let value = match (&t.token, &t.token_file) {
                (Some(v), None) => v.0.trim().to_string(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .with_context(|| format!("{what}: reading token_file {}", f.display()))?
                    .trim()
                    .to_string(),
                _ => bail!("{what}: give exactly one of token and token_file"),
            };
            if value.is_empty() {
                bail!("{what}: the token is empty");
            }
            // RFC 6750 §2.1's b64token is visible ASCII; anything else
            // could never arrive in a header intact.
            if !value.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("{what}: a token is visible ASCII only (RFC 6750 b64token): no spaces or other characters");
            }
            if tokens.iter().any(|t: &Token| t.value.0 == value) {
                bail!("{what}: the same token is listed twice; give each token once, with all its scopes");
            }
            if t.scopes.is_empty() {
                bail!("{what}: scopes is empty; give [\"ingest\"], [\"query\"] or both");
            }
            let tenant = match &t.tenant {
                Some(id) if !multitenancy => {
                    bail!("{what}: bound to tenant {id:?}, but multitenancy_enabled is false")
                }
                Some(id) => Some(TenantId::parse(id).map_err(|e| anyhow::anyhow!("{what}.tenant: {e}"))?),
                None => None,
            };
            tokens.push(Token { value: Secret(value), scopes: t.scopes.clone(), tenant });
        }
        Ok(Auth { tokens, multitenancy })
    }

    /// Whether a token is needed for `scope`.
    pub(crate) fn required(&self, scope: Scope) -> bool {
        self.tokens.iter().any(|t| t.scopes.contains(&scope))
    }

    /// The tenant the request's token is bound to, if any, once the token
    /// is checked (when `scope` needs one).
    ///
    /// Every configured token of the scope is compared in constant time,
    /// and all of them every time, so the answer's timing tells nothing of
    /// how much of a guess was right.
    fn check_token(&self, scope: Scope, headers: &HeaderMap) -> Result<Option<&TenantId>, Refusal> {
        // Which of two would count is a guess a proxy and Skein may make
        // differently: refuse instead.
        for h in [http::header::AUTHORIZATION.as_str(), TENANT_HEADER] {
            if headers.get_all(h).iter().count() > 1 {
                return Err(Refusal::BadRequest(format!("the {h} header is given more than once")));
            }
        }
        if !self.required(scope) {
            return Ok(None);
        }
        let given = bearer(headers).ok_or_else(|| {
            Refusal::Unauthenticated(
                "missing bearer token: send the header Authorization: Bearer <token>".into(),
            )
        })?;
        let mut found: Option<Option<&TenantId>> = None;
        for t in self.tokens.iter().filter(|t| t.scopes.contains(&scope)) {
            if bool::from(t.value.0.as_bytes().ct_eq(given.as_bytes())) {
                found = Some(t.tenant.as_ref());
            }
        }
        found.ok_or_else(|| {
            Refusal::Unauthenticated(format!("the bearer token is not valid for {}", scope.name()))
        })
    }

    /// The tenant a request of `scope` with `headers` acts as.
    ///
    /// # Errors
    /// [`Refusal::Unauthenticated`] for a missing or wrong token, or (with
    /// multi-tenancy) no tenant; [`Refusal::Forbidden`] for a token bound
    /// to another tenant than the header names; [`Refusal::BadRequest`] for
    /// a malformed or repeated header.
    pub(crate) fn authorize(&self, scope: Scope, headers: &HeaderMap) -> Result<TenantId, Refusal> {
        let bound = self.check_token(scope, headers)?;
        if !self.multitenancy {
            return Ok(TenantId::single());
        }
        let header = match headers.get(TENANT_HEADER).map(|v| v.to_str()) {
            None => None,
            Some(Ok(v)) => Some(
                TenantId::parse(v.trim()).map_err(|e| Refusal::BadRequest(format!("X-Scope-OrgID: {e}")))?,
            ),
            Some(Err(_)) => return Err(Refusal::BadRequest("X-Scope-OrgID: not visible ASCII".into())),
        };
        match (bound, header) {
            (Some(b), Some(h)) if *b != h => Err(Refusal::Forbidden(format!(
                "this token is bound to tenant {b}, and the request's X-Scope-OrgID names {h}"
            ))),
            (Some(b), _) => Ok(b.clone()),
            (None, Some(h)) => Ok(h),
            (None, None) => Err(Refusal::Unauthenticated(
                "no tenant: multi-tenancy is on, so send X-Scope-OrgID or use a token bound to a tenant"
                    .into(),
            )),
        }
    }
}

impl Auth {
    /// Authorizes a query of process-wide data (`/metrics`): the query
    /// token when one is required, and with multi-tenancy one not bound to
    /// a tenant (an operator's), since the figures span every tenant.
    ///
    /// # Errors
    /// As [`Auth::authorize`]; [`Refusal::Forbidden`] for a token bound to
    /// a tenant.
    pub(crate) fn authorize_process_wide(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match self.check_token(Scope::Query, headers)? {
            Some(_) if self.multitenancy => Err(Refusal::Forbidden(
                "/metrics counts over every tenant: use a query token not bound to a tenant".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Warnings about settings that work but may not do what was meant,
    /// for the start-up log.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.multitenancy && !self.required(Scope::Query) {
            w.push(
                "multitenancy_enabled without a query token: any client can read any tenant by naming it in X-Scope-OrgID"
                    .to_string(),
            );
        }
        if self.multitenancy && !self.required(Scope::Ingest) {
            w.push(
                "multitenancy_enabled without an ingest token: any client can write to any tenant"
                    .to_string(),
            );
        }
        w
    }
}

/// The credentials of `Authorization: Bearer <token>` (the scheme is
/// case-insensitive, RFC 9110 §11.1), from HTTP headers or gRPC metadata;
/// or the password of `Basic` credentials (RFC 7617; the user name is not
/// read), because the Elasticsearch outputs of Fluent Bit (`HTTP_User`,
/// `HTTP_Passwd`) and Logstash (`user`, `password`) can send no other
/// header: they give the token as the password.
fn bearer(headers: &HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    use base64::Engine as _;
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded =
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(token).ok()?).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        return (!password.is_empty()).then(|| std::borrow::Cow::Owned(password.to_string()));
    }
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token)
        .filter(|t| !t.is_empty())
        .map(std::borrow::Cow::Borrowed)
}

/// Paths of the HTTP API answered without a token: liveness and readiness
/// probes, which say nothing of the data.
fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Runs `next` with the request's tenant in its extensions when it is
/// authorized for `scope`, else answers `refuse`'s response.
async fn authorized(
    auth: &Auth,
    scope: Scope,
    mut req: Request,
    next: Next,
    refuse: impl FnOnce(Refusal, &Request) -> Response,
) -> Response {
    match auth.authorize(scope, req.headers()) {
        Ok(t) => {
            req.extensions_mut().insert(t);
            next.run(req).await
        }
        Err(r) => refuse(r, &req),
    }
}

/// Middleware for the HTTP API: authorizes [`Scope::Query`] and puts the
/// tenant in the request; refusals are the API's `{"error": ...}`.
/// `/metrics` counts over every tenant, so with multi-tenancy it needs no
/// tenant and refuses tokens bound to one (403).
pub(crate) async fn query_layer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if open_path(req.uri().path()) {
        return next.run(req).await;
    }
    if req.uri().path() == "/metrics" {
        return match auth.authorize_process_wide(req.headers()) {
            Ok(()) => next.run(req).await,
            Err(r) => r.into_query().into_response(),
        };
    }
    authorized(&auth, Scope::Query, req, next, |r, _| r.into_query().into_response()).await
}

/// Middleware for OTLP/HTTP: authorizes [`Scope::Ingest`] and puts the
/// tenant in the request; refusals are OTLP/HTTP errors, counted.
pub(crate) async fn otlp_http_layer(
    State((auth, ingest)): State<(Arc<Auth>, Ingest)>,
    req: Request,
    next: Next,
) -> Response {
    authorized(&auth, Scope::Ingest, req, next, |r, req| {
        ingest.refuse_http(r.into_ingest(), req.uri().path(), req.headers())
    })
    .await
}

/// Middleware for the Zipkin listener: authorizes [`Scope::Ingest`] as
/// OTLP/HTTP does; refusals are Zipkin's plain-text errors, counted.
pub(crate) async fn zipkin_layer(
    State((auth, ingest)): State<(Arc<Auth>, Ingest)>,
    req: Request,
    next: Next,
) -> Response {
    authorized(&auth, Scope::Ingest, req, next, |r, req| {
        ingest.refuse_zipkin(r.into_ingest(), req.uri().path())
    })
    .await
}

/// Middleware for OTLP/gRPC (served as an axum router): authorizes
/// [`Scope::Ingest`] from the request's metadata and puts the tenant in its
/// extensions, which tonic hands to the service; refusals are
/// trailers-only gRPC statuses, counted.
pub(crate) async fn grpc_layer(
    State((auth, ingest)): State<(Arc<Auth>, Ingest)>,
    req: Request,
    next: Next,
) -> Response {
    authorized(&auth, Scope::Ingest, req, next, |r, req| {
        ingest.refuse_grpc(r.into_ingest(), req.uri().path()).into_http()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn auth(toml_text: &str, multitenancy: bool) -> Result<Auth> {
        Auth::new(&toml::from_str(toml_text).unwrap(), multitenancy)
    }

    const TOKENS: &str = r#"
        [[tokens]]
        token = "ingest-secret"
        scopes = ["ingest"]
        [[tokens]]
        token = "reader"
        scopes = ["query"]
        [[tokens]]
        token = "team-a"
        scopes = ["ingest", "query"]
        tenant = "a"
    "#;

    #[test]
    fn test_tokens_per_scope() {
        let a = auth(TOKENS.replace("tenant = \"a\"", "").as_str(), false).unwrap();
        let single = Ok(TenantId::single());
        assert_eq!(
            a.authorize(Scope::Ingest, &headers(&[("authorization", "Bearer ingest-secret")])),
            single
        );
        assert_eq!(a.authorize(Scope::Ingest, &headers(&[("authorization", "bearer  team-a ")])), single);
        // Basic with the token as the password (Fluent Bit's and Logstash's
        // Elasticsearch outputs can send nothing else); the user is not read.
        let basic = format!("Basic {}", "Zmx1ZW50LWJpdDppbmdlc3Qtc2VjcmV0");
        assert_eq!(a.authorize(Scope::Ingest, &headers(&[("authorization", &basic)])), single);
        assert_eq!(a.authorize(Scope::Query, &headers(&[("authorization", "Bearer reader")])), single);
        for (scope, h) in [
            (Scope::Query, headers(&[("authorization", "Bearer ingest-secret")])),
            (Scope::Ingest, headers(&[("authorization", "Bearer reader")])),
            (Scope::Ingest, headers(&[("authorization", "Bearer ingest-secre")])),
            (Scope::Ingest, headers(&[("authorization", "Basic aW5nZXN0LXNlY3JldA==")])),
            // Basic with the token as the password, but of another scope.
            (Scope::Ingest, headers(&[("authorization", "Basic dXNlcjpyZWFkZXI=")])),
            (Scope::Ingest, headers(&[("authorization", "Basic dXNlcjo=")])),
            (Scope::Ingest, headers(&[("authorization", "Basic !!")])),
            (Scope::Ingest, headers(&[])),
        ] {
            assert!(matches!(a.authorize(scope, &h), Err(Refusal::Unauthenticated(_))), "{scope:?} {h:?}");
        }
        // No token of a scope: that scope is open.
        let open = auth("[[tokens]]\ntoken = \"x\"\nscopes = [\"ingest\"]", false).unwrap();
        assert_eq!(open.authorize(Scope::Query, &headers(&[])), single);
        assert!(!open.required(Scope::Query) && open.required(Scope::Ingest));
        // Tokens never print.
        assert!(!format!("{a:?}").contains("ingest-secret"));
    }

    #[test]
    fn test_tenant_from_token_or_header() {
        let a = auth(TOKENS, true).unwrap();
        let ta = TenantId::parse("a").unwrap();
        let bearer_a = ("authorization", "Bearer team-a");
        assert_eq!(a.authorize(Scope::Query, &headers(&[bearer_a])), Ok(ta.clone()));
        assert_eq!(a.authorize(Scope::Query, &headers(&[bearer_a, ("x-scope-orgid", "a")])), Ok(ta));
        assert!(matches!(
            a.authorize(Scope::Query, &headers(&[bearer_a, ("X-Scope-OrgID", "b")])),
            Err(Refusal::Forbidden(_))
        ));
        // An unbound token takes the header's tenant, and needs one.
        let reader = ("authorization", "Bearer reader");
        assert_eq!(
            a.authorize(Scope::Query, &headers(&[reader, ("X-Scope-OrgID", "b")])),
            Ok(TenantId::parse("b").unwrap())
        );
        assert!(matches!(a.authorize(Scope::Query, &headers(&[reader])), Err(Refusal::Unauthenticated(_))));
        assert!(matches!(
            a.authorize(Scope::Query, &headers(&[reader, ("X-Scope-OrgID", "../x")])),
            Err(Refusal::BadRequest(_))
        ));
        // Without multi-tenancy the header is ignored, as Tempo does.
        let off = auth("", false).unwrap();
        assert_eq!(off.authorize(Scope::Query, &headers(&[("X-Scope-OrgID", "b")])), Ok(TenantId::single()));
        // A repeated header is refused, whichever copy is good (QA: the
        // first used to win).
        for (k, v1, v2) in [("authorization", "Bearer wrong", "Bearer reader"), ("x-scope-orgid", "a", "b")] {
            let mut h = headers(&[reader]);
            if k == "authorization" {
                h.remove(k);
            }
            h.append(k, v1.parse().unwrap());
            h.append(k, v2.parse().unwrap());
            assert!(matches!(a.authorize(Scope::Query, &h), Err(Refusal::BadRequest(_))), "{k}");
        }
        // /metrics spans every tenant: no tenant needed, and no token bound
        // to one accepted.
        assert_eq!(a.authorize_process_wide(&headers(&[reader])), Ok(()));
        assert!(matches!(a.authorize_process_wide(&headers(&[bearer_a])), Err(Refusal::Forbidden(_))));
        assert!(matches!(a.authorize_process_wide(&headers(&[])), Err(Refusal::Unauthenticated(_))));
    }

    #[test]
    fn test_bad_configs_say_what_is_wrong() {
        for (text, mt, want) in [
            ("[[tokens]]\nscopes = [\"query\"]", false, "exactly one of token and token_file"),
            ("[[tokens]]\ntoken = \" \"\nscopes = [\"query\"]", false, "empty"),
            ("[[tokens]]\ntoken = \"x\"\nscopes = []", false, "scopes is empty"),
            ("[[tokens]]\ntoken = \"tökén\"\nscopes = [\"query\"]", false, "visible ASCII"),
            (
                "[[tokens]]\ntoken = \"x\"\nscopes = [\"query\"]\ntenant = \"a\"\n[[tokens]]\ntoken = \"x\"\nscopes = [\"query\"]\ntenant = \"b\"",
                true,
                "listed twice",
            ),
            (
                "[[tokens]]\ntoken = \"x\"\nscopes = [\"query\"]\ntenant = \"a\"",
                false,
                "multitenancy_enabled is false",
            ),
            ("[[tokens]]\ntoken = \"x\"\nscopes = [\"query\"]\ntenant = \"a/b\"", true, "tenant"),
            (
                "[[tokens]]\ntoken_file = \"/nonexistent/t\"\nscopes = [\"query\"]",
                false,
                "reading token_file",
            ),
        ] {
            let e = format!("{:#}", auth(text, mt).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "from-file\n").unwrap();
        let a =
            auth(&format!("[[tokens]]\ntoken_file = {:?}\nscopes = [\"query\"]", f.path()), false).unwrap();
        assert!(a.authorize(Scope::Query, &headers(&[("authorization", "Bearer from-file")])).is_ok());
    }
}
