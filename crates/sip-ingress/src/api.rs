//! The control-plane API (HTTP, axum) on loopback, behind the edge: the resources the ingress
//! enforces, scoped to the tenant named by `x-tenant-id` (which the edge sets from the API key;
//! a request without it is refused, 401).
//!
//! ```text
//! GET    /v1/sip/ip-access-list                       200 {"items": [{"id", "address", "description"}]}
//! POST   /v1/sip/ip-access-list                       201 the entry, Location: .../{id}
//! DELETE /v1/sip/ip-access-list/{entryId}             204, or 404 (also for another tenant's entry)
//! GET    /v1/sip/outbound-routes                      200 {"items": [{"id", "route", "description"}]}
//! POST   /v1/sip/outbound-routes                      201 the route (seed 001 grammar, normalised)
//! DELETE /v1/sip/outbound-routes/{routeId}            204, or 404
//! PUT    /v1/agents/{agentId}/sip-registration        201 created / 200 replaced: the registration
//!                                                     (no password) with extension and
//!                                                     registrationEnabled; 409 if its username or
//!                                                     DID already names another agent
//! GET    /v1/agents/{agentId}/sip-registration        200 the same, or 404
//! DELETE /v1/agents/{agentId}/sip-registration        204, or 404
//! GET    /v1/agents/{agentId}/sip-registration/status 200 {"agentId", "registrationEnabled",
//!                                                     "lifecycleStatus", "sipStatus", "message",
//!                                                     "lastRefreshed"} (seed 002's words)
//! GET    /v1/agents/{agentId}/sip-registration/errors 200 [{"timestamp", "message", "code"}],
//!                                                     newest first
//! ```
//!
//! and seed 002's SIP connections (`/v1/sip-connections`, see `connections`).
//!
//! A registration makes its agent addressable by username and DID at the ingress's agent gateway
//! (`[api] agent_gateway`), with its X-Dest-User, and the registration client registers it to
//! its PBX. Its status and errors are what the client reported ([`Board`]): `Pending` until the
//! client takes it up, `online` only after the registrar's 2xx, `calling` while a call through
//! it is up (counted by the proxy cores).
//!
//! Bodies are validated with the same `policy` rules as the edge and refused with the same
//! RFC 9457 documents, so the API is safe when called without the edge too. A write returns once
//! it is durable and in force: the next INVITE is decided with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use policy::body::{IpAccessEntryBody, OutboundRouteBody, SipRegistration, SipRegistrationView};
use policy::problem::CONTENT_TYPE as PROBLEM;
use policy::{Problem, ProblemKind, parse_body};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

mod connections;

use crate::register::status::{BindingKey, Board, Report};
use crate::store::{AccessRecord, RouteRecord, Store};

/// Where agents registered through the API are reached, unless `[api] agent_gateway` says.
pub const DEFAULT_GATEWAY: &str = "sip:{username}@127.0.0.1:5090";

/// The control-plane API (`[api]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Where it listens: loopback only, behind the edge.
    pub listen: SocketAddr,
    /// The SQLite database.
    pub database: PathBuf,
    /// The agent URI of agents registered through the API, `{username}` standing for theirs.
    pub agent_gateway: String,
}

/// The header naming the tenant, set by the edge.
const TENANT: &str = "x-tenant-id";

/// A request to put the store's current content in force; answered when it is.
pub type Apply = oneshot::Sender<Result<(), String>>;

/// What the handlers share.
pub struct Api {
    store: Arc<Store>,
    apply: mpsc::Sender<Apply>,
    board: Board,
}

impl Api {
    /// An API over `store`, asking for every change to be put in force through `apply`, with
    /// the registration client's reports on `board`.
    pub fn new(store: Arc<Store>, apply: mpsc::Sender<Apply>, board: Board) -> Self {
        Self {
            store,
            apply,
            board,
        }
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

/// The tenant a request acts for: the `x-tenant-id` the edge set. A request without a valid one
/// is answered 401 before anything else about it is looked at.
struct Tenant(String);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        tenant(&parts.headers)
            .map(Tenant)
            .ok_or_else(unauthenticated)
    }
}

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

/// `{"items": [...]}` of a listing.
fn items<T>(
    records: Result<Vec<T>, crate::store::StoreError>,
    to_json: fn(&T) -> serde_json::Value,
) -> Response {
    match records {
        Ok(records) => json(
            StatusCode::OK,
            &json!({ "items": records.iter().map(to_json).collect::<Vec<_>>() }),
        ),
        Err(e) => internal(e),
    }
}

/// 201 with the new resource and its Location.
fn created(value: &serde_json::Value, location: &str) -> Response {
    let mut response = json(StatusCode::CREATED, value);
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A JSON body checked by the `policy` rules, or the problem to answer.
fn checked_body<T: policy::FromJson>(headers: &HeaderMap, body: &[u8]) -> Result<T, Problem> {
    if !is_json(headers) {
        return Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            "the body must be application/json",
        ));
    }
    parse_body(body).map_err(|errors| Problem::invalid_body(&errors))
}

async fn list_access(State(api): State<Arc<Api>>, Tenant(tenant): Tenant) -> Response {
    items(api.store.access_entries(&tenant), entry_json)
}

async fn add_access(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let entry: IpAccessEntryBody = match checked_body(&headers, &body) {
        Ok(entry) => entry,
        Err(refused) => return problem(&refused),
    };
    let record = match api.store.add_access(&tenant, &entry) {
        Ok(record) => record,
        Err(e) => return internal(e),
    };
    if let Err(e) = api.apply().await {
        return internal(format!("entry {} stored but not in force: {e}", record.id));
    }
    tracing::info!(tenant, id = record.id, address = %record.entry, "access entry added");
    created(
        &entry_json(&record),
        &format!("/v1/sip/ip-access-list/{}", record.id),
    )
}

async fn delete_access(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Response {
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

fn route_json(record: &RouteRecord) -> serde_json::Value {
    json!({
        "id": record.id,
        "route": record.route.to_string(),
        "description": record.description,
    })
}

/// Outbound routes are stored and served; calls out are not placed by the ingress, so nothing
/// is put in force.
async fn list_routes(State(api): State<Arc<Api>>, Tenant(tenant): Tenant) -> Response {
    items(api.store.routes(&tenant), route_json)
}

async fn add_route(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route: OutboundRouteBody = match checked_body(&headers, &body) {
        Ok(route) => route,
        Err(refused) => return problem(&refused),
    };
    match api.store.add_route(&tenant, &route) {
        Ok(record) => {
            tracing::info!(tenant, id = record.id, route = %record.route, "outbound route added");
            created(
                &route_json(&record),
                &format!("/v1/sip/outbound-routes/{}", record.id),
            )
        }
        Err(e) => internal(e),
    }
}

async fn delete_route(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Response {
    match api.store.delete_route(&tenant, &id) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(&Problem::new(
            ProblemKind::NotFound,
            format!("no outbound route {id}"),
        )),
        Err(e) => internal(e),
    }
}

/// Whether `id` is a UUID in its canonical text form (seed 000: "UUID format").
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn bad_agent_id() -> Response {
    problem(&Problem::invalid_parameter(
        "agentId",
        "must be a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6",
    ))
}

fn no_registration(agent_id: &str) -> Response {
    problem(&Problem::new(
        ProblemKind::NotFound,
        format!("agent {agent_id} has no SIP registration"),
    ))
}

fn registration_json(agent_id: &str, registration: SipRegistration) -> serde_json::Value {
    let mut value =
        serde_json::to_value(SipRegistrationView::from(registration)).unwrap_or_else(|_| json!({}));
    if let Some(object) = value.as_object_mut() {
        object.insert("agentId".into(), json!(agent_id));
    }
    value
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn put_registration(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
    body: Bytes,
) -> Response {
    if !is_uuid(&agent_id) {
        return bad_agent_id();
    }
    let registration: SipRegistration = match checked_body(&headers, &body) {
        Ok(registration) => registration,
        Err(refused) => return problem(&refused),
    };
    let previous = match api
        .store
        .put_registration(&tenant, &agent_id, &registration)
    {
        Ok(previous) => previous,
        Err(e) => return internal(e),
    };
    if let Err(e) = api.apply().await {
        // Most likely the username or DID names another agent (perhaps another tenant's, which
        // must not be disclosed): put back what was there.
        tracing::warn!(tenant, agent_id, "registration refused: {e}");
        let restored = match &previous {
            Some(previous) => api
                .store
                .put_registration(&tenant, &agent_id, previous)
                .map(|_| ()),
            None => api
                .store
                .delete_registration(&tenant, &agent_id)
                .map(|_| ()),
        };
        if let Err(e) = restored {
            return internal(e);
        }
        if let Err(e) = api.apply().await {
            return internal(e);
        }
        return problem(&Problem::new(
            ProblemKind::Conflict,
            "the username or DID already names another agent",
        ));
    }
    tracing::info!(tenant, agent_id, "sip registration saved");
    let status = if previous.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    json(status, &registration_json(&agent_id, registration))
}

/// Answers with `found` applied to the tenant's registration for `agent_id`, or why not.
fn with_registration(
    api: &Api,
    tenant: &str,
    agent_id: &str,
    found: impl FnOnce(SipRegistration) -> Response,
) -> Response {
    if !is_uuid(agent_id) {
        return bad_agent_id();
    }
    match api.store.registration(tenant, agent_id) {
        Ok(Some(registration)) => found(registration),
        Ok(None) => no_registration(agent_id),
        Err(e) => internal(e),
    }
}

async fn get_registration(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(agent_id): Path<String>,
) -> Response {
    with_registration(&api, &tenant, &agent_id, |registration| {
        json(StatusCode::OK, &registration_json(&agent_id, registration))
    })
}

/// What the registration client reported of `tenant`'s registration for `agent_id`; None
/// until it has taken it up.
fn registration_report(api: &Api, tenant: &str, agent_id: &str) -> Option<Report> {
    api.board.get(&BindingKey::Registration {
        tenant: tenant.to_owned(),
        agent_id: agent_id.to_owned(),
    })
}

/// Seed 002's status object of `report`: Pending, with nothing more to say, until the
/// registration client has taken the binding up.
fn status_json(report: Option<Report>) -> serde_json::Value {
    match report {
        None => json!({
            "lifecycleStatus": "Pending",
            "sipStatus": null,
            "message": null,
            "lastRefreshed": null,
        }),
        Some(report) => json!({
            "lifecycleStatus": report.lifecycle.as_str(),
            "sipStatus": report.sip_word(),
            "message": report.message,
            "lastRefreshed": report.last_refreshed,
        }),
    }
}

/// Seed 002's errors list of `report`, newest first.
fn errors_json(report: Option<Report>) -> serde_json::Value {
    let errors = report.map(|report| report.errors).unwrap_or_default();
    serde_json::Value::Array(
        errors
            .iter()
            .map(|error| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(error.unix);
                json!({
                    "timestamp": humantime::format_rfc3339_seconds(at).to_string(),
                    "message": error.message,
                    "code": error.code,
                })
            })
            .collect(),
    )
}

async fn registration_status(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(agent_id): Path<String>,
) -> Response {
    with_registration(&api, &tenant, &agent_id, |_| {
        let mut status = status_json(registration_report(&api, &tenant, &agent_id));
        if let Some(object) = status.as_object_mut() {
            object.insert("agentId".into(), json!(agent_id));
            object.insert("registrationEnabled".into(), json!(true));
        }
        json(StatusCode::OK, &status)
    })
}

async fn registration_errors(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(agent_id): Path<String>,
) -> Response {
    with_registration(&api, &tenant, &agent_id, |_| {
        json(
            StatusCode::OK,
            &errors_json(registration_report(&api, &tenant, &agent_id)),
        )
    })
}

async fn delete_registration(
    State(api): State<Arc<Api>>,
    Tenant(tenant): Tenant,
    Path(agent_id): Path<String>,
) -> Response {
    if !is_uuid(&agent_id) {
        return bad_agent_id();
    }
    match api.store.delete_registration(&tenant, &agent_id) {
        Ok(true) => {}
        Ok(false) => return no_registration(&agent_id),
        Err(e) => return internal(e),
    }
    if let Err(e) = api.apply().await {
        return internal(format!(
            "registration of {agent_id} deleted but still in force: {e}"
        ));
    }
    tracing::info!(tenant, agent_id, "sip registration deleted");
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
        .route("/v1/sip/outbound-routes", get(list_routes).post(add_route))
        .route("/v1/sip/outbound-routes/{route_id}", delete(delete_route))
        .route(
            "/v1/agents/{agent_id}/sip-registration",
            get(get_registration)
                .put(put_registration)
                .delete(delete_registration),
        )
        .route(
            "/v1/agents/{agent_id}/sip-registration/status",
            get(registration_status),
        )
        .route(
            "/v1/agents/{agent_id}/sip-registration/errors",
            get(registration_errors),
        )
        .route(
            "/v1/sip-connections",
            get(connections::list).post(connections::add),
        )
        .route(
            "/v1/sip-connections/{id}",
            patch(connections::update).delete(connections::delete),
        )
        .route("/v1/sip-connections/{id}/status", post(connections::status))
        .route("/v1/sip-connections/{id}/errors", get(connections::errors))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}
