//! The web UI: a single-page app built from `ui/web` into `ui/dist` and
//! embedded in the binary, so running Skein needs no Node.js.

#![warn(missing_docs)]

use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "dist/"]
struct Assets;

/// The UI's Content-Security-Policy: its own scripts only, no plugins, no
/// framing (the clickjacking defence `X-Frame-Options` also gives old
/// browsers), API calls to its own origin. Inline style attributes stay
/// allowed for the charts' computed positions; inline scripts do not.
/// Rules from the OWASP HTTP Headers Cheat Sheet and MDN's CSP reference.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Serves `/assets/...` files, and `index.html` for every other path so
/// deep links (`/trace/{id}`, `/search?...`, `/logs?...`, `/map`) load the
/// app, which routes on the client. Only GET and HEAD: any other method is
/// a 405 with a JSON body, so a client that sends to the wrong port (an
/// OTLP exporter pointed at the UI's `/v1/traces`) is told, not answered
/// 200 and silently dropped. Every response carries
/// [`CONTENT_SECURITY_POLICY`], `X-Content-Type-Options: nosniff`,
/// `X-Frame-Options: DENY` and `Referrer-Policy: same-origin`.
pub fn router() -> Router {
    Router::new().fallback(serve)
}

async fn serve(method: Method, uri: Uri) -> Response {
    let mut r = if method == Method::GET || method == Method::HEAD {
        asset(uri).await
    } else {
        not_the_ui(&method, &uri)
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("same-origin"));
    r
}

/// The 405 for a method the UI does not take, with a hint when the path is
/// an OTLP/HTTP one.
fn not_the_ui(method: &Method, uri: &Uri) -> Response {
    let path = uri.path();
    let mut msg = format!("{method} {path}: the web UI takes GET and HEAD only");
    if path.starts_with("/v1/") {
        msg.push_str(
            "; OTLP/HTTP is served on the OTLP port (--otlp-http-addr, default 4318), \
             OTLP/gRPC on 4317, not on this UI/API port",
        );
    }
    let body = serde_json::json!({ "error": msg }).to_string();
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET,HEAD"), (header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn asset(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if !path.is_empty() {
        if let Some(f) = Assets::get(path) {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            // Built file names are stable, not content-hashed: revalidate.
            return (
                [
                    (header::CONTENT_TYPE, mime.as_ref().to_string()),
                    (header::CACHE_CONTROL, "no-cache".into()),
                ],
                f.data,
            )
                .into_response();
        }
        if path.starts_with("assets/") {
            return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
        }
    }
    match Assets::get("index.html") {
        Some(f) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], f.data).into_response(),
        None => (StatusCode::NOT_FOUND, "the UI bundle is missing from this build\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn every_ui_response_carries_the_security_headers() {
        for path in ["/", "/trace/0123", "/assets/index.js", "/assets/missing.js"] {
            let r = router().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
            let h = r.headers();
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY, "{path}");
            assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
            assert!(!CONTENT_SECURITY_POLICY.contains("script-src 'self' 'unsafe-inline'"));
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
            assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        }
    }

    /// An OTLP exporter pointed at the UI port got 200 and lost its data
    /// (issue 9 review): other methods than GET/HEAD are a JSON 405.
    #[tokio::test]
    async fn other_methods_are_a_json_405_with_an_otlp_hint() {
        for (method, path) in
            [("POST", "/v1/traces"), ("PUT", "/v1/logs"), ("POST", "/some"), ("DELETE", "/")]
        {
            let req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
            let r = router().oneshot(req).await.unwrap();
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(r.headers()[header::ALLOW], "GET,HEAD");
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
            let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(text.starts_with("{\"error\":\"") && text.ends_with("\"}"), "{text}");
            assert_eq!(text.contains("4318"), path.starts_with("/v1/"), "{text}");
        }
        let head = Request::builder().method("HEAD").uri("/").body(Body::empty()).unwrap();
        assert_eq!(router().oneshot(head).await.unwrap().status(), StatusCode::OK);
    }
}
