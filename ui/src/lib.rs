//! The web UI: a single-page app built from `ui/web` into `ui/dist` and
//! embedded in the binary, so running Skein needs no Node.js.

#![warn(missing_docs)]

use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "dist/"]
struct Assets;

/// Serves `/assets/...` files, and `index.html` for every other path so
/// deep links (`/trace/{id}`, `/search?...`, `/logs?...`, `/map`) load the
/// app, which routes on the client.
pub fn router() -> Router {
    Router::new().fallback(serve)
}

async fn serve(uri: Uri) -> Response {
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
