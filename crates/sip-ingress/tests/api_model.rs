//! The control-plane API held to a model of what it stores: random runs of requests from two
//! tenants (valid and invalid bodies; ids of their own, of the other tenant's, made up; no
//! tenant at all) get the status the model predicts, listings always equal the model, every
//! refusal is an RFC 9457 document of its status, no answer carries a password, and a tenant
//! never sees or changes the other's resources.
//!
//! The API's router runs in-process over a real store. Changes are put in force by a stand-in
//! that accepts them all: putting them in force, and the 409 a clash there leads to, is tested
//! against the real binary in `api.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use proptest::prelude::*;
use serde_json::Value;
use sip_ingress::api::{Api, Apply, router};
use sip_ingress::register::status::Board;
use sip_ingress::store::Store;
use tokio::sync::mpsc;
use tower::ServiceExt;

const TENANTS: [&str; 2] = ["demo", "acme"];
const AGENTS: [&str; 3] = [
    "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "0b9d2c4e-1f3a-4c5b-8d7e-9f0a1b2c3d4e",
    "not-a-uuid",
];
const PASSWORD: &str = "s3cret-Pa55word";

/// Which resource a delete names.
#[derive(Debug, Clone)]
enum Target {
    /// The tenant's own, the `n`th it holds (made up when it holds none).
    Own(usize),
    /// The other tenant's `n`th.
    Other(usize),
    MadeUp,
}

#[derive(Debug, Clone)]
enum Op {
    ListAccess,
    AddAccess {
        body: usize,
    },
    DeleteAccess(Target),
    ListRoutes,
    AddRoute {
        body: usize,
    },
    DeleteRoute(Target),
    PutRegistration {
        agent: usize,
        body: usize,
    },
    GetRegistration {
        agent: usize,
    },
    RegistrationStatus {
        agent: usize,
    },
    DeleteRegistration {
        agent: usize,
    },
    /// One of [`STRAYS`].
    Stray(usize),
}

/// Requests no route takes, or with a body that is not JSON, and their status.
const STRAYS: [(&str, &str, Option<&str>, StatusCode); 4] = [
    (
        "PATCH",
        "/v1/sip/ip-access-list",
        None,
        StatusCode::METHOD_NOT_ALLOWED,
    ),
    (
        "DELETE",
        "/v1/sip/outbound-routes",
        None,
        StatusCode::METHOD_NOT_ALLOWED,
    ),
    ("GET", "/v1/sip/nothing-here", None, StatusCode::NOT_FOUND),
    (
        "POST",
        "/v1/sip/ip-access-list",
        Some("text/plain"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    ),
];

/// Access-list bodies: the valid ones first.
const ACCESS_BODIES: [(&str, bool); 6] = [
    (r#"{"address":"10.1.0.0/16","description":"office"}"#, true),
    (r#"{"address":"192.0.2.7"}"#, true),
    (r#"{"address":"2001:db8::/32","description":"v6"}"#, true),
    (r#"{"address":"10.0.0.1/24"}"#, false),
    (r#"{"address":"nowhere","description":7}"#, false),
    ("not json", false),
];

const ROUTE_BODIES: [(&str, bool); 3] = [
    (
        r#"{"route":"sip.example.com;transport=tcp","description":"trunk"}"#,
        true,
    ),
    (r#"{"route":"sip.example.com"}"#, true),
    (r#"{"route":"sip.example.com;transport=sctp"}"#, false),
];

/// A registration body for agent `agent`, valid or not; usernames differ by agent, so the
/// stand-in accepting every change never hides a clash.
fn registration_body(agent: usize, body: usize) -> (String, bool) {
    match body {
        0 => (
            format!(
                r#"{{"domain":"pbx.example.com","username":"agent{agent}","password":"{PASSWORD}"}}"#
            ),
            true,
        ),
        1 => (
            format!(
                r#"{{"domain":"pbx{agent}.example.com","username":"agent{agent}","password":"{PASSWORD}","xDestUser":"desk.{agent}"}}"#
            ),
            true,
        ),
        _ => (
            format!(
                r#"{{"domain":"pbx.example.com","username":"agent {agent}","password":"{PASSWORD}"}}"#
            ),
            false,
        ),
    }
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => (0usize..4).prop_map(Target::Own),
        1 => (0usize..4).prop_map(Target::Other),
        1 => Just(Target::MadeUp),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let agent = || 0..AGENTS.len();
    prop_oneof![
        Just(Op::ListAccess),
        (0..ACCESS_BODIES.len()).prop_map(|body| Op::AddAccess { body }),
        target().prop_map(Op::DeleteAccess),
        Just(Op::ListRoutes),
        (0..ROUTE_BODIES.len()).prop_map(|body| Op::AddRoute { body }),
        target().prop_map(Op::DeleteRoute),
        (agent(), 0usize..3).prop_map(|(agent, body)| Op::PutRegistration { agent, body }),
        agent().prop_map(|agent| Op::GetRegistration { agent }),
        agent().prop_map(|agent| Op::RegistrationStatus { agent }),
        agent().prop_map(|agent| Op::DeleteRegistration { agent }),
        (0..STRAYS.len()).prop_map(Op::Stray),
    ]
}

/// What each tenant holds, as the API answered when it was created.
#[derive(Default)]
struct Model {
    access: [Vec<Value>; 2],
    routes: [Vec<Value>; 2],
    registrations: [BTreeMap<usize, Value>; 2],
}

/// The id a delete names in `lists` (each tenant's resources), and whether it is one of the
/// tenant's own.
fn pick(lists: &[Vec<Value>; 2], tenant: usize, target: &Target) -> (String, bool) {
    let id = |list: &Vec<Value>, n: usize| {
        list.get(n % list.len().max(1))
            .and_then(|item| item["id"].as_str())
            .map(str::to_owned)
    };
    match target {
        Target::Own(n) => {
            id(&lists[tenant], *n).map_or(("x-0000".to_owned(), false), |id| (id, true))
        }
        Target::Other(n) => (
            id(&lists[1 - tenant], *n).unwrap_or_else(|| "x-0001".to_owned()),
            false,
        ),
        Target::MadeUp => ("acl-00000000deadbeef".to_owned(), false),
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: String,
}

async fn send(
    app: &axum::Router,
    tenant: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Answer {
    let content_type = body.map(|_| "application/json");
    send_typed(app, tenant, method, path, body, content_type).await
}

async fn send_typed(
    app: &axum::Router,
    tenant: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: Option<&str>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(tenant) = tenant {
        request = request.header("x-tenant-id", tenant);
    }
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let request = request
        .body(Body::from(body.unwrap_or_default().to_owned()))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let header_text = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, location) = (
        header_text(header::CONTENT_TYPE).unwrap_or_default(),
        header_text(header::LOCATION),
    );
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    Answer {
        status,
        content_type,
        location,
        body: String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
    }
}

/// Checks what every answer must be, and returns its JSON body (Null when empty).
fn checked(answer: &Answer, expected: StatusCode, what: &str) -> Result<Value, TestCaseError> {
    prop_assert_eq!(answer.status, expected, "{}: {}", what, answer.body);
    prop_assert!(
        !answer.body.contains(PASSWORD),
        "{} disclosed the password",
        what
    );
    if answer.body.is_empty() {
        return Ok(Value::Null);
    }
    let value: Value = serde_json::from_str(&answer.body).expect("JSON");
    if expected.is_client_error() {
        prop_assert_eq!(answer.content_type.as_str(), "application/problem+json");
        prop_assert_eq!(value["status"].as_u64(), Some(u64::from(expected.as_u16())));
    } else {
        prop_assert_eq!(answer.content_type.as_str(), "application/json");
    }
    Ok(value)
}

/// A new database file for one run.
fn database() -> std::path::PathBuf {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("trunkguard-api-model-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("store.db")
}

async fn run(steps: &[(usize, Op)]) -> Result<(), TestCaseError> {
    let path = database();
    let store = Arc::new(Store::open(&path).expect("store"));
    let (apply, mut applies) = mpsc::channel::<Apply>(4);
    tokio::spawn(async move {
        while let Some(done) = applies.recv().await {
            let _ = done.send(Ok(()));
        }
    });
    let app = router(Arc::new(Api::new(store, apply, Board::default())));
    let mut model = Model::default();

    let answer = send(&app, None, "GET", "/v1/sip/ip-access-list", None).await;
    checked(&answer, StatusCode::UNAUTHORIZED, "no tenant")?;

    for (tenant, op) in steps {
        let (tenant, name) = (*tenant, TENANTS[*tenant]);
        let who = Some(name);
        match op {
            Op::ListAccess | Op::ListRoutes => {
                let (path, expected) = match op {
                    Op::ListAccess => ("/v1/sip/ip-access-list", &model.access[tenant]),
                    _ => ("/v1/sip/outbound-routes", &model.routes[tenant]),
                };
                let value = checked(
                    &send(&app, who, "GET", path, None).await,
                    StatusCode::OK,
                    path,
                )?;
                prop_assert_eq!(value["items"].as_array(), Some(expected));
            }
            Op::AddAccess { body } | Op::AddRoute { body } => {
                let (path, (text, valid)) = match op {
                    Op::AddAccess { .. } => ("/v1/sip/ip-access-list", ACCESS_BODIES[*body]),
                    _ => ("/v1/sip/outbound-routes", ROUTE_BODIES[*body]),
                };
                let answer = send(&app, who, "POST", path, Some(text)).await;
                let status = if valid {
                    StatusCode::CREATED
                } else {
                    StatusCode::BAD_REQUEST
                };
                let value = checked(&answer, status, text)?;
                if valid {
                    let id = value["id"].as_str().expect("an id").to_owned();
                    prop_assert_eq!(answer.location, Some(format!("{path}/{id}")));
                    match op {
                        Op::AddAccess { .. } => model.access[tenant].push(value),
                        _ => model.routes[tenant].push(value),
                    }
                }
            }
            Op::DeleteAccess(target) | Op::DeleteRoute(target) => {
                let (path, lists) = match op {
                    Op::DeleteAccess(_) => ("/v1/sip/ip-access-list", &mut model.access),
                    _ => ("/v1/sip/outbound-routes", &mut model.routes),
                };
                let (id, own) = pick(lists, tenant, target);
                let answer = send(&app, who, "DELETE", &format!("{path}/{id}"), None).await;
                let status = if own {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::NOT_FOUND
                };
                checked(&answer, status, &format!("DELETE {path}/{id}"))?;
                if own {
                    lists[tenant].retain(|item| item["id"].as_str() != Some(id.as_str()));
                }
            }
            Op::PutRegistration { agent, body } => {
                let (text, valid) = registration_body(*agent, *body);
                let path = format!("/v1/agents/{}/sip-registration", AGENTS[*agent]);
                let answer = send(&app, who, "PUT", &path, Some(&text)).await;
                let uuid = *agent < 2;
                let status = match (uuid, valid, model.registrations[tenant].contains_key(agent)) {
                    (false, _, _) | (_, false, _) => StatusCode::BAD_REQUEST,
                    (true, true, true) => StatusCode::OK,
                    (true, true, false) => StatusCode::CREATED,
                };
                let value = checked(&answer, status, &text)?;
                if status.is_success() {
                    prop_assert_eq!(value["agentId"].as_str(), Some(AGENTS[*agent]));
                    let username = format!("agent{agent}");
                    prop_assert_eq!(value["username"].as_str(), Some(username.as_str()));
                    model.registrations[tenant].insert(*agent, value);
                }
            }
            Op::GetRegistration { agent } | Op::RegistrationStatus { agent } => {
                let mut path = format!("/v1/agents/{}/sip-registration", AGENTS[*agent]);
                if matches!(op, Op::RegistrationStatus { .. }) {
                    path.push_str("/status");
                }
                let held = model.registrations[tenant].get(agent);
                let status = match (*agent < 2, held) {
                    (false, _) => StatusCode::BAD_REQUEST,
                    (true, None) => StatusCode::NOT_FOUND,
                    (true, Some(_)) => StatusCode::OK,
                };
                let value = checked(&send(&app, who, "GET", &path, None).await, status, &path)?;
                match (op, held) {
                    (Op::GetRegistration { .. }, Some(held)) => prop_assert_eq!(&value, held),
                    (Op::RegistrationStatus { .. }, Some(_)) => {
                        prop_assert_eq!(value["lifecycleStatus"].as_str(), Some("Pending"));
                        prop_assert!(value["sipStatus"].is_null());
                    }
                    _ => {}
                }
            }
            Op::DeleteRegistration { agent } => {
                let path = format!("/v1/agents/{}/sip-registration", AGENTS[*agent]);
                let status = match (*agent < 2, model.registrations[tenant].remove(agent)) {
                    (false, _) => StatusCode::BAD_REQUEST,
                    (true, None) => StatusCode::NOT_FOUND,
                    (true, Some(_)) => StatusCode::NO_CONTENT,
                };
                checked(&send(&app, who, "DELETE", &path, None).await, status, &path)?;
            }
            Op::Stray(n) => {
                let (method, path, content_type, status) = STRAYS[*n];
                let body = content_type.map(|_| ACCESS_BODIES[0].0);
                let answer = send_typed(&app, who, method, path, body, content_type).await;
                checked(&answer, status, &format!("{method} {path}"))?;
            }
        }
    }
    for (tenant, name) in TENANTS.iter().enumerate() {
        for (path, expected) in [
            ("/v1/sip/ip-access-list", &model.access[tenant]),
            ("/v1/sip/outbound-routes", &model.routes[tenant]),
        ] {
            let answer = send(&app, Some(name), "GET", path, None).await;
            let value = checked(&answer, StatusCode::OK, path)?;
            prop_assert_eq!(
                value["items"].as_array(),
                Some(expected),
                "{} of {}",
                path,
                name
            );
        }
    }
    let _ = std::fs::remove_dir_all(path.parent().expect("run dir"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_api_answers_as_the_model_says(
        steps in prop::collection::vec((0..TENANTS.len(), op()), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(&steps))?;
    }
}
