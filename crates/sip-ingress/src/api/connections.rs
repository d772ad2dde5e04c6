//! Seed 002's SIP connections: an agent's account at a SIP provider, which the registration
//! client registers (like a seed 000 registration) and whose calls go to the agent gateway
//! for its `agentId`.
//!
//! ```text
//! POST   /v1/sip-connections               201 {"id", "agentId", "name", "settings" (no password),
//!                                              "status", "created"}, Location: .../{id}
//! GET    /v1/sip-connections               200 {"items": [...]}
//! PATCH  /v1/sip-connections/{id}          200 the connection; changed settings re-register
//! DELETE /v1/sip-connections/{id}          204 (the binding is unregistered), or 404
//! POST   /v1/sip-connections/{id}/status   200 {"status": {...}, "created"}
//! GET    /v1/sip-connections/{id}/errors   200 [{"timestamp", "message", "code"}], newest first
//! ```
//!
//! Another tenant's connection is 404, as if it did not exist.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use policy::body::{SipConnectionCreate, SipConnectionPatch};
use policy::{Problem, ProblemKind};

use super::{
    Api, Tenant, checked_body, created, errors_json, internal, json, problem, status_json,
};
use crate::clock::unix_now;
use crate::register::status::{BindingKey, Report};
use crate::store::ConnectionRecord;

fn report(api: &Api, record: &ConnectionRecord) -> Option<Report> {
    api.board.get(&BindingKey::Connection {
        tenant: record.tenant.clone(),
        id: record.id.clone(),
    })
}

/// The connection as the seed shows it: its settings without the password, and its status.
fn connection_json(api: &Api, record: &ConnectionRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(&record.connection).unwrap_or_else(|_| json!({}));
    if let Some(object) = value.as_object_mut() {
        object.insert("id".into(), json!(record.id));
        object.insert("status".into(), status_json(report(api, record)));
        object.insert("created".into(), json!(record.created));
    }
    value
}

fn no_connection(id: &str) -> Response {
    problem(&Problem::new(
        ProblemKind::NotFound,
        format!("no SIP connection {id}"),
    ))
}

/// Answers with `found` applied to the tenant's connection `id`, or why not.
fn with_connection(
    api: &Api,
    tenant: &str,
    id: &str,
    found: impl FnOnce(ConnectionRecord) -> Response,
) -> Response {
    match api.store.connection_record(tenant, id) {
        Ok(Some(record)) => found(record),
        Ok(None) => no_connection(id),
        Err(e) => internal(e),
    }
}

pub(super) async fn add(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let connection: SipConnectionCreate = match checked_body(&headers, &body) {
        Ok(connection) => connection,
        Err(refused) => return problem(&refused),
    };
    let record = match api.store.add_connection(&tenant, &connection, unix_now()) {
        Ok(record) => record,
        Err(e) => return internal(e),
    };
    if let Err(e) = api.apply().await {
        let _ = api.store.delete_connection(&tenant, &record.id);
        return internal(format!("the SIP connection could not be put in force: {e}"));
    }
    tracing::info!(tenant, id = record.id, "sip connection created");
    created(
        &connection_json(&api, &record),
        &format!("/v1/sip-connections/{}", record.id),
    )
}

pub(super) async fn list(State(api): State<Arc<Api>>, Tenant(tenant): Tenant) -> Response {
    match api.store.connections(&tenant) {
        Ok(records) => {
            let items: Vec<_> = records.iter().map(|r| connection_json(&api, r)).collect();
            json(StatusCode::OK, &json!({ "items": items }))
        }
        Err(e) => internal(e),
    }
}

pub(super) async fn update(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let patch: SipConnectionPatch = match checked_body(&headers, &body) {
        Ok(patch) => patch,
        Err(refused) => return problem(&refused),
    };
    let (previous, record) = match api.store.update_connection(&tenant, &id, &patch) {
        Ok(Some(change)) => change,
        Ok(None) => return no_connection(&id),
        Err(e) => return internal(e),
    };
    if let Err(e) = api.apply().await {
        if let Err(restore) = api.store.put_connection(&previous) {
            return internal(restore);
        }
        let _ = api.apply().await;
        return internal(format!("the change could not be put in force: {e}"));
    }
    tracing::info!(tenant, id, "sip connection changed");
    json(StatusCode::OK, &connection_json(&api, &record))
}

pub(super) async fn delete(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Response {
    match api.store.delete_connection(&tenant, &id) {
        Ok(true) => {}
        Ok(false) => return no_connection(&id),
        Err(e) => return internal(e),
    }
    if let Err(e) = api.apply().await {
        return internal(format!(
            "SIP connection {id} deleted but still in force: {e}"
        ));
    }
    tracing::info!(tenant, id, "sip connection deleted");
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn status(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Response {
    with_connection(&api, &tenant, &id, |record| {
        json(
            StatusCode::OK,
            &json!({
                "status": status_json(report(&api, &record)),
                "created": record.created,
            }),
        )
    })
}

pub(super) async fn errors(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Response {
    with_connection(&api, &tenant, &id, |record| {
        json(StatusCode::OK, &errors_json(report(&api, &record)))
    })
}
