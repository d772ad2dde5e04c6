//! The edge filter's decisions on hostile requests, under the demo configuration that
//! `envoy/envoy.yaml` ships: whatever the method, path, headers and body, nothing panics (in
//! Envoy a panic takes the worker's VM down, and every later request on it gets 503), every
//! refusal is a well-formed problem document, nothing reaches the upstream without a valid API
//! key, a body is passed only if it is a JSON object, and no answer repeats a secret.
//!
//! Each case is a run of requests on one rate-limit store with the clock moving forward, so
//! rate limiting (429) is exercised among the rest.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

use edge_filter::config::Config;
use edge_filter::filter::{
    HeadersVerdict, Reply, RequestHeaders, check_buffered_size, on_body, on_headers,
};
use edge_filter::store::{SharedStore, StoreError};
use policy::problem::CONTENT_TYPE;
use proptest::prelude::*;

static DEMO: LazyLock<Config> = LazyLock::new(|| {
    Config::parse(trunkguard::demo_filter_configuration().as_bytes())
        .expect("the demo configuration is valid")
});

/// The demo keys and the tenants they map to.
const KEYS: [(&str, &str); 2] = [
    ("tg_demo_0123456789abcdef", "demo"),
    ("tg_acme_0123456789abcdef", "acme"),
];

/// The demo routes: method, path with `{}` for a parameter, and for the routes with a body
/// schema a valid body, in which `{secret}` stands for a password made up for the case.
const ROUTES: [(&str, &str, Option<&str>); 23] = [
    (
        "PUT",
        "/v1/agents/{}/sip-registration",
        Some(
            r#"{"domain":"sip.example.com","username":"1001","password":"{secret}","transport":"udp","port":5060,"did":"+15551234567"}"#,
        ),
    ),
    ("GET", "/v1/agents/{}/sip-registration", None),
    ("DELETE", "/v1/agents/{}/sip-registration", None),
    ("GET", "/v1/agents/{}/sip-registration/status", None),
    ("GET", "/v1/agents/{}/sip-registration/errors", None),
    ("GET", "/v1/sip/ip-access-list", None),
    (
        "POST",
        "/v1/sip/ip-access-list",
        Some(r#"{"address":"203.0.113.0/24","description":"office PBX"}"#),
    ),
    ("DELETE", "/v1/sip/ip-access-list/{}", None),
    ("GET", "/v1/sip/outbound-routes", None),
    (
        "POST",
        "/v1/sip/outbound-routes",
        Some(r#"{"route":"sip.example.com;transport=tcp"}"#),
    ),
    ("DELETE", "/v1/sip/outbound-routes/{}", None),
    (
        "POST",
        "/v1/agents",
        Some(
            r#"{"companionId":"comp_abc123","name":"Support Agent","voiceId":"alloy","functions":["fn_order_status"],"providerSettings":{"temperature":0.7}}"#,
        ),
    ),
    (
        "PUT",
        "/v1/agents/{}/channels/sip",
        Some(
            r#"{"humanHandoff":{"enabled":true,"transferExtension":"200","transferDescription":"when asked"}}"#,
        ),
    ),
    ("GET", "/v1/sip-connections", None),
    (
        "POST",
        "/v1/sip-connections",
        Some(
            r#"{"agentId":"agent_abc123","name":"Main","settings":{"server":"sip.example.com","port":5060,"domain":"example.com","username":"u","password":"{secret}","transport":"TCP"}}"#,
        ),
    ),
    (
        "PATCH",
        "/v1/sip-connections/{}",
        Some(r#"{"name":"Main line"}"#),
    ),
    ("DELETE", "/v1/sip-connections/{}", None),
    ("POST", "/v1/sip-connections/{}/status", None),
    ("GET", "/v1/sip-connections/{}/errors", None),
    (
        "POST",
        "/v1/custom-sip-accounts",
        Some(
            r#"{"name":"Trunk","sipServer":"sip.example.com","destinationCountry":"US","outboundUsername":"out","outboundPassword":"{secret}","inboundUsername":"in","inboundPassword":"{secret}"}"#,
        ),
    ),
    (
        "PATCH",
        "/v1/custom-sip-accounts/{}",
        Some(r#"{"outboundUsername":"out","outboundPassword":"{secret}"}"#),
    ),
    ("DELETE", "/v1/custom-sip-accounts/{}", None),
    (
        "POST",
        "/v1/agents/{}/phone-numbers",
        Some(
            r#"{"phone_number":"+15551234567","provider":"telnyx","auth_username":"trunk-user","auth_password":"{secret}"}"#,
        ),
    ),
];

/// A parameter every demo route accepts (a UUID is also an id).
const GOOD_PARAMETER: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";

/// Shared data as proxy-wasm keeps it: versions start at 1 and grow on every write.
#[derive(Default)]
struct Store(RefCell<HashMap<String, (Vec<u8>, u32)>>);

impl SharedStore for Store {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.0.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
        let mut entries = self.0.borrow_mut();
        let current = entries.get(key).map(|(_, v)| *v);
        if version.is_some_and(|expected| current.is_some_and(|c| c != expected)) {
            return Err(StoreError::Conflict);
        }
        entries.insert(key.to_owned(), (value.to_vec(), current.unwrap_or(0) + 1));
        Ok(())
    }
}

/// How the API key is presented.
#[derive(Debug, Clone)]
enum Credential {
    None,
    ApiKey(Vec<u8>),
    Bearer(Vec<u8>),
    Both(Vec<u8>, Vec<u8>),
}

/// What Content-Length says.
#[derive(Debug, Clone)]
enum Length {
    /// The body's length, as a client sends it.
    Right,
    Absent,
    Given(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: Vec<u8>,
    credential: Credential,
    content_type: Option<Vec<u8>>,
    content_length: Length,
    tenant_headers: usize,
    body: Option<Vec<u8>>,
    /// Nanoseconds since the previous request.
    after_ns: u64,
}

fn bytes_like(examples: Vec<&'static str>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(examples).prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
        "\\PC{0,40}".prop_map(String::into_bytes),
    ]
}

/// The case's demo key: one key per case, so its requests share rate limits.
fn valid_key(key: usize) -> impl Strategy<Value = Vec<u8>> {
    Just(KEYS[key].0.as_bytes().to_vec())
}

fn key(key: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => valid_key(key),
        1 => bytes_like(vec![
            "tg_demo_0123456789abcdeF",
            "tg_demo_0123456789abcdef ",
            " tg_demo_0123456789abcdef",
            "tg_demo_0123456789abcde",
            "",
        ]),
    ]
}

fn credential(key: usize) -> impl Strategy<Value = Credential> {
    prop_oneof![
        6 => valid_key(key).prop_map(Credential::ApiKey),
        2 => valid_key(key).prop_map(Credential::Bearer),
        1 => Just(Credential::None),
        1 => self::key(key).prop_map(Credential::ApiKey),
        1 => self::key(key).prop_map(Credential::Bearer),
        1 => (self::key(key), self::key(key)).prop_map(|(a, b)| Credential::Both(a, b)),
    ]
}

fn parameter() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(GOOD_PARAMETER.to_owned()),
        1 => "[a-zA-Z0-9_-]{0,40}",
        1 => "\\PC{0,12}",
        1 => "(%[0-9a-fA-F]{2}|%|/|\\.|;|\\?){1,6}",
    ]
}

fn path(route: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => (parameter(), "(\\?[a-z=&%]{0,12})?").prop_map(move |(param, query)| {
            format!("{}{query}", ROUTES[route].1.replace("{}", &param)).into_bytes()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..60),
    ]
}

/// Bytes that matter to a JSON reader more often than chance would pick them.
const JSON_BITS: [&[u8]; 17] = [
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
    b"-0",
    b"\xff",
    b"\xe9",
    b"\"x\":1,",
    b"\x01",
];

/// `template` with `secret` in it, edited in up to three places.
fn edited(template: &'static str, secret: String) -> impl Strategy<Value = Vec<u8>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| (at, 1, vec![byte])),
        (
            any::<usize>(),
            0usize..8,
            prop::sample::select(JSON_BITS.to_vec())
        )
            .prop_map(|(at, len, bytes)| (at, len, bytes.to_vec())),
    ];
    let edits = prop_oneof![Just(Vec::new()), prop::collection::vec(edit, 1..4)];
    edits.prop_map(move |edits| {
        let mut body = template.replace("{secret}", &secret).into_bytes();
        for (at, len, bytes) in edits {
            let at = at % (body.len() + 1);
            let end = (at + len).min(body.len());
            body.splice(at..end, bytes);
        }
        body
    })
}

fn body(route: usize, secret: String) -> BoxedStrategy<Option<Vec<u8>>> {
    let anything = prop::collection::vec(any::<u8>(), 0..200);
    match ROUTES[route].2 {
        Some(template) => prop_oneof![
            8 => edited(template, secret.clone()).prop_map(Some),
            // Valid JSON, but over the demo's 64 KiB limit.
            1 => Just(Some(format!("{}{}", template.replace("{secret}", &secret), " ".repeat(65_536)).into_bytes())),
            1 => anything.prop_map(Some),
            1 => Just(None),
        ]
        .boxed(),
        None => prop::option::weighted(0.2, anything).boxed(),
    }
}

/// Methods a client may try on any route.
const METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS", "FOO",
];

prop_compose! {
    /// A request for demo route `route`, with (usually) one thing wrong with it, presenting
    /// (usually) the demo key `key`, at most `pace_ns` after the previous one.
    fn route_request(route: usize, secret: String, key: usize, pace_ns: u64)(
        method in prop_oneof![
            12 => Just(ROUTES[route].0),
            1 => prop::sample::select(METHODS.to_vec()),
        ],
        path in path(route),
        credential in credential(key),
        content_type in prop_oneof![
            12 => Just(Some(b"application/json".to_vec())),
            1 => Just(None),
            1 => bytes_like(vec![
                "application/json; charset=utf-8",
                "Application/JSON",
                "application/problem+json",
                "text/plain",
            ])
            .prop_map(Some),
        ],
        content_length in prop_oneof![
            12 => Just(Length::Right),
            1 => Just(Length::Absent),
            1 => bytes_like(vec!["0", "12", "65536", "65537", "99999999999999999999", "-1", " 7 "])
                .prop_map(Length::Given),
        ],
        tenant_headers in 0usize..3,
        body in body(route, secret),
        after_ns in 0..pace_ns,
    ) -> Request {
        let method = method.to_owned();
        Request { method, path, credential, content_type, content_length, tenant_headers, body, after_ns }
    }
}

/// A request for any demo route, as [`route_request`] makes them.
fn request(secret: String, key: usize, pace_ns: u64) -> impl Strategy<Value = Request> {
    (0..ROUTES.len()).prop_flat_map(move |route| route_request(route, secret.clone(), key, pace_ns))
}

impl Request {
    fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut headers = vec![
            (":method".to_owned(), self.method.as_bytes().to_vec()),
            (":path".to_owned(), self.path.clone()),
        ];
        let bearer = |key: &[u8]| [&b"Bearer "[..], key].concat();
        match &self.credential {
            Credential::None => {}
            Credential::ApiKey(key) => headers.push(("x-api-key".to_owned(), key.clone())),
            Credential::Bearer(key) => headers.push(("authorization".to_owned(), bearer(key))),
            Credential::Both(a, b) => {
                headers.push(("x-api-key".to_owned(), a.clone()));
                headers.push(("authorization".to_owned(), bearer(b)));
            }
        }
        if let Some(content_type) = &self.content_type {
            headers.push(("content-type".to_owned(), content_type.clone()));
        }
        let length = match (&self.content_length, &self.body) {
            (Length::Right, Some(body)) => Some(body.len().to_string().into_bytes()),
            (Length::Given(length), _) => Some(length.clone()),
            (Length::Right | Length::Absent, _) => None,
        };
        if let Some(length) = length {
            headers.push(("content-length".to_owned(), length));
        }
        for _ in 0..self.tenant_headers {
            headers.push(("x-tenant-id".to_owned(), b"someone-else".to_vec()));
        }
        headers
    }

    /// The key the filter must judge: X-Api-Key's when sent (an Authorization header may be
    /// meant for the backend), else the Bearer token; surrounding white space is not part of a
    /// field value (RFC 9110 section 5.5).
    fn judged(&self) -> Option<&[u8]> {
        match &self.credential {
            Credential::None => None,
            Credential::ApiKey(key) | Credential::Both(key, _) | Credential::Bearer(key) => {
                Some(key.trim_ascii())
            }
        }
    }

    /// The keys presented, valid or not.
    fn presented(&self) -> Vec<&[u8]> {
        match &self.credential {
            Credential::None => Vec::new(),
            Credential::ApiKey(key) | Credential::Bearer(key) => vec![key],
            Credential::Both(a, b) => vec![a, b],
        }
    }
}

/// A refusal is an RFC 9457 problem document whose status is the reply's.
fn check_problem(reply: &Reply, secrets: &[&[u8]]) -> Result<(), TestCaseError> {
    prop_assert!(
        [400, 401, 404, 405, 413, 415, 429].contains(&reply.status),
        "unexpected status {}",
        reply.status
    );
    prop_assert!(
        reply
            .headers
            .iter()
            .any(|(name, value)| name == "content-type" && value == CONTENT_TYPE)
    );
    let problem: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
    prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(reply.status)));
    prop_assert!(problem["type"].is_string() && problem["title"].is_string());
    // `errors` is always there, so clients read one shape; it lists something whenever the
    // problem is about the body or a path parameter.
    let errors = problem["errors"]
        .as_array()
        .ok_or_else(|| TestCaseError::fail("errors is not an array"))?;
    let itemised = problem["type"]
        .as_str()
        .is_some_and(|t| t.ends_with(":invalid-body") || t.ends_with(":invalid-parameter"));
    prop_assert_eq!(itemised, !errors.is_empty(), "{}", problem);
    for error in errors {
        prop_assert!(error["detail"].is_string(), "{error}");
        let pointer = error["pointer"].as_str();
        prop_assert!(
            pointer.is_some_and(|p| p.is_empty() || p.starts_with('/'))
                || error["parameter"].is_string(),
            "{error}"
        );
    }
    let answer: Vec<u8> = reply
        .headers
        .iter()
        .flat_map(|(name, value)| [name.as_bytes(), value.as_bytes()].concat())
        .chain(reply.body.iter().copied())
        .collect();
    // Eight bytes of a secret in a row count as repeating it: an edited password still has an
    // untouched run that long, and a problem's text never has one by chance.
    for piece in secrets.iter().flat_map(|secret| secret.windows(8)) {
        prop_assert!(
            !answer.windows(8).any(|w| w == piece),
            "the answer repeats a secret: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    Ok(())
}

/// The fuzz starts from requests the filter passes; if a template drifted out of its schema,
/// the fuzz would go on testing refusals only.
#[test]
fn every_route_passes_its_template_request() {
    let store = Store::default();
    for (n, (method, path, body)) in ROUTES.iter().enumerate() {
        let request = Request {
            method: (*method).to_owned(),
            path: path.replace("{}", GOOD_PARAMETER).into_bytes(),
            credential: Credential::ApiKey(KEYS[0].0.as_bytes().to_vec()),
            content_type: Some(b"application/json".to_vec()),
            content_length: Length::Right,
            tenant_headers: 0,
            body: body.map(|b| b.replace("{secret}", "pw-0123456789abcdef").into_bytes()),
            after_ns: 0,
        };
        let now = 1_000_000_000 + n as u64;
        let verdict = on_headers(
            &DEMO,
            &RequestHeaders(&request.headers()),
            body.is_none(),
            now,
            &store,
        );
        match (verdict, &request.body) {
            (HeadersVerdict::Forward { .. }, None) => {}
            (HeadersVerdict::AwaitBody { schema, .. }, Some(body)) => {
                if let Err(reply) = on_body(schema, body) {
                    panic!("{method} {path}: {}", String::from_utf8_lossy(&reply.body));
                }
            }
            (other, _) => panic!("{method} {path}: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hostile_requests_get_precise_answers_and_nothing_unauthenticated_passes(
        (secret, requests) in (
            "[A-Za-z0-9]{16}",
            0..KEYS.len(),
            // Bursts as well as a steady pace, so some cases go over the rate limit.
            prop_oneof![Just(1_000_000u64), Just(300_000_000)],
        )
            .prop_flat_map(|(tail, key, pace_ns)| {
                let secret = format!("pw-{tail}");
                (Just(secret.clone()), prop::collection::vec(request(secret, key, pace_ns), 1..48))
            })
    ) {
        let store = Store::default();
        let mut now = 1_000_000_000u64;
        for request in &requests {
            now += request.after_ns;
            let headers = request.headers();
            let mut secrets = request.presented();
            secrets.push(secret.as_bytes());
            let end_of_stream = request.body.is_none();
            let verdict = on_headers(&DEMO, &RequestHeaders(&headers), end_of_stream, now, &store);
            let (tenant, schema) = match verdict {
                HeadersVerdict::Reject { reply, .. } => {
                    check_problem(&reply, &secrets)?;
                    continue;
                }
                HeadersVerdict::Pass => {
                    return Err(TestCaseError::fail("the demo configuration refuses unknown routes"));
                }
                HeadersVerdict::Forward { tenant, .. } => (tenant, None),
                HeadersVerdict::AwaitBody { tenant, schema, .. } => (tenant, Some(schema)),
            };
            // Only a demo key opens the door, and to its own tenant.
            let judged = request.judged();
            let key = KEYS.iter().find(|(key, _)| judged == Some(key.as_bytes()));
            prop_assert!(key.is_some(), "passed without a valid key: {request:?}");
            prop_assert_eq!(Some(tenant.as_str()), key.map(|(_, tenant)| *tenant));

            let (Some(schema), Some(body)) = (schema, &request.body) else {
                continue;
            };
            if let Err(reply) = check_buffered_size(&DEMO, body.len()) {
                prop_assert_eq!(reply.status, 413);
                check_problem(&reply, &secrets)?;
                continue;
            }
            match on_body(schema, body) {
                Ok(()) => {
                    let parsed = serde_json::from_slice::<serde_json::Value>(body);
                    prop_assert!(
                        parsed.as_ref().is_ok_and(serde_json::Value::is_object),
                        "{schema} passed a body that is not a JSON object: {}",
                        String::from_utf8_lossy(body)
                    );
                }
                Err(reply) => {
                    prop_assert_eq!(reply.status, 400);
                    check_problem(&reply, &secrets)?;
                }
            }
        }
    }
}
