//! The control-plane API (HTTP, axum) on loopback, behind the edge: the resources the ingress
//! enforces, scoped to the tenant named by `x-tenant-id` (which the edge sets from the API key;
//! a request without it is refused, 401). So far: the SIP IP access list (seed 001).
//!
//! ```text
//! GET    /v1/sip/ip-access-list              200 {"items": [{"id", "address", "description"}]}
//! POST   /v1/sip/ip-access-list              201 the entry, Location: .../{id}
//! DELETE /v1/sip/ip-access-list/{entryId}    204, or 404 (also for another tenant's entry)
//! ```
//!
//! Bodies are validated with the same `policy` rules as the edge and refused with the same
//! RFC 9457 documents, so the API is safe when called without the edge too. A write returns once
//! it is durable and in force: the next INVITE is decided with it.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use policy::body::IpAccessEntryBody;
use policy::problem::CONTENT_TYPE as PROBLEM;
use policy::{Problem, ProblemKind, parse_body};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::store::{AccessRecord, Store};

/// The header naming the tenant, set by the edge.
const TENANT: &str = "x-tenant-id";

/// A request to put the store's current content in force; answered when it is.
pub type Apply = oneshot::Sender<Result<(), String>>;

/// What the handlers share.
pub struct Api {
    store: Arc<Store>,
    apply: mpsc::Sender<Apply>,
}

impl Api {
    /// An API over `store`, asking for every change to be put in force through `apply`.
    pub fn new(store: Arc<Store>, apply: mpsc::Sender<Apply>) -> Self {
        Self { store, apply }
    }

    /// Puts the stored configuration in force.
    async fn apply(&self) -> Result<(), String> {
        let (done, applied) = oneshot::channel();
        self.apply
            .send(done)
            .await
            .map_err(|_| "the reloader has stopped".to_owned())?;
        applied
            .await
            .map_err(|_| "the reloader has stopped".to_owned())?
    }
}

fn problem(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, PROBLEM)], problem.to_json()).into_response()
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn internal(error: impl std::fmt::Display) -> Response {
    tracing::error!("api: {error}");
    problem(&Problem::new(
        ProblemKind::Internal,
        "the request could not be completed",
    ))
}

/// The tenant a request is for, if it names a valid one.
fn tenant(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(TENANT)?.to_str().ok()?;
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    valid.then(|| value.to_owned())
}

fn unauthenticated() -> Response {
    problem(&Problem::new(
        ProblemKind::Unauthenticated,
        "x-tenant-id is required; call the API through the edge with an API key",
    ))
}

fn entry_json(record: &AccessRecord) -> serde_json::Value {
    json!({
        "id": record.id,
        "address": record.entry.to_string(),
        "description": record.description,
    })
}

async fn list_access(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let Some(tenant) = tenant(&headers) else {
        return unauthenticated();
    };
    match api.store.access_entries(&tenant) {
        Ok(records) => json(
            StatusCode::OK,
            &json!({ "items": records.iter().map(entry_json).collect::<Vec<_>>() }),
        ),
        Err(e) => internal(e),
    }
}

async fn add_access(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(tenant) = tenant(&headers) else {
        return unauthenticated();
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return problem(&Problem::new(
            ProblemKind::UnsupportedMediaType,
            "the body must be application/json",
        ));
    }
    let entry: IpAccessEntryBody = match parse_body(&body) {
        Ok(entry) => entry,
        Err(errors) => return problem(&Problem::invalid_body(&errors)),
    };
    let record = match api.store.add_access(&tenant, &entry) {
        Ok(record) => record,
        Err(e) => return internal(e),
    };
    if let Err(e) = api.apply().await {
        return internal(format!("entry {} stored but not in force: {e}", record.id));
    }
    tracing::info!(tenant, id = record.id, address = %record.entry, "access entry added");
    let mut response = json(StatusCode::CREATED, &entry_json(&record));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sip/ip-access-list/{}", record.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn delete_access(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(tenant) = tenant(&headers) else {
        return unauthenticated();
    };
    match api.store.delete_access(&tenant, &id) {
        Ok(true) => {}
        Ok(false) => {
            return problem(&Problem::new(
                ProblemKind::NotFound,
                format!("no access-list entry {id}"),
            ));
        }
        Err(e) => return internal(e),
    }
    if let Err(e) = api.apply().await {
        return internal(format!("entry {id} deleted but still in force: {e}"));
    }
    tracing::info!(tenant, id, "access entry deleted");
    StatusCode::NO_CONTENT.into_response()
}

async fn not_found() -> Response {
    problem(&Problem::new(ProblemKind::NotFound, "no such resource"))
}

async fn method_not_allowed() -> Response {
    problem(&Problem::new(
        ProblemKind::MethodNotAllowed,
        "this resource does not allow that method",
    ))
}

/// The API's routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/sip/ip-access-list", get(list_access).post(add_access))
        .route("/v1/sip/ip-access-list/{entry_id}", delete(delete_access))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}
