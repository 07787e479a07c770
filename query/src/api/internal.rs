//! The internal endpoint an ingest node serves to query nodes (issue 14):
//! `GET /internal/v1/head` answers what the node holds in memory for the
//! request's tenant (its head and in-flight flushes) and the segments it
//! has uploaded, in [`skein_storage::cluster::MemoryExport`]'s binary form
//! (`application/octet-stream`). Behind the same authentication as every
//! query API (the query token, when configured) and scoped to the
//! request's tenant. A node that is not an ingest node (no node ID) answers
//! 404.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::{ApiState, Error, Result, Tenant};

/// The internal routes.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/internal/v1/head", get(head))
}

async fn head(State(st): State<ApiState>, Tenant(tenant): Tenant) -> Result<Response> {
    let Some(node) = st.node_id.clone() else {
        return Err(Error::NotFound("this node is not an ingest node (--role ingest)".into()));
    };
    let storage = st.tenants.get_for_read(&tenant);
    let body = tokio::task::spawn_blocking(move || storage.export_memory(&node).encode())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}
