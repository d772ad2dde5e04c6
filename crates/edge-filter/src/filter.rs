//! The request path, independent of the proxy-wasm host: what to do with a request's headers,
//! then with its body.
//!
//! Order of checks: route (404/405) -> API key (401) -> rate limit (429, so garbage still costs
//! quota) -> path parameters (400) -> size from Content-Length (413) -> content type (415) ->
//! body (413 while buffering, then 400 with every invalid field). A request is forwarded only
//! after the last check, and headers are held until then, so the upstream never sees any part of
//! a rejected request.

use policy::problem::{CONTENT_TYPE, Problem, ProblemKind};
use policy::{BodySchema, Decision};
use sha2::{Digest, Sha256};

use crate::config::{Config, UnknownRoute};
use crate::limiter;
use crate::store::{SharedStore, StoreError};
use crate::template::Match;

/// The header the filter sets from the API key (and removes when a client sends it).
pub const TENANT_HEADER: &str = "x-tenant-id";

/// The outcome of one request, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Forwarded after every check passed.
    Allowed,
    /// Matched no route and forwarded (`unknown_route: pass`).
    Passed,
    /// 404: no route.
    UnknownRoute,
    /// 405.
    MethodNotAllowed,
    /// 401.
    Unauthenticated,
    /// 429.
    RateLimited,
    /// 400: a path parameter.
    BadParameter,
    /// 400: malformed framing headers.
    BadRequest,
    /// 413.
    TooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 400: the body.
    InvalidBody,
    /// 500: the filter could not decide (rate-limit state unavailable).
    Internal,
}

impl Outcome {
    /// Every outcome, in metric order.
    pub const ALL: [Outcome; 12] = [
        Outcome::Allowed,
        Outcome::Passed,
        Outcome::UnknownRoute,
        Outcome::MethodNotAllowed,
        Outcome::Unauthenticated,
        Outcome::RateLimited,
        Outcome::BadParameter,
        Outcome::BadRequest,
        Outcome::TooLarge,
        Outcome::UnsupportedMediaType,
        Outcome::InvalidBody,
        Outcome::Internal,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Passed => "passed",
            Outcome::UnknownRoute => "unknown_route",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::RateLimited => "rate_limited",
            Outcome::BadParameter => "bad_parameter",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::InvalidBody => "invalid_body",
            Outcome::Internal => "internal",
        }
    }
}

/// A local reply that ends the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// Response headers (content-type included).
    pub headers: Vec<(String, String)>,
    /// The problem document.
    pub body: Vec<u8>,
    /// What is counted.
    pub outcome: Outcome,
}

impl Reply {
    fn problem(problem: &Problem, outcome: Outcome) -> Self {
        Self {
            status: problem.status,
            headers: vec![("content-type".to_owned(), CONTENT_TYPE.to_owned())],
            body: problem.to_json(),
            outcome,
        }
    }

    fn with_header(mut self, name: &str, value: String) -> Self {
        self.headers.push((name.to_owned(), value));
        self
    }
}

/// What to do after the request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadersVerdict {
    /// Answer locally; nothing is forwarded.
    Reject {
        /// The reply.
        reply: Reply,
        /// The route class, when a route matched.
        class: Option<usize>,
    },
    /// Remove any client `x-tenant-id`, set it to `tenant`, and forward now.
    Forward {
        /// The authenticated tenant.
        tenant: String,
        /// The route class.
        class: usize,
    },
    /// As `Forward`, but hold everything until the body has been validated with `schema`.
    AwaitBody {
        /// The authenticated tenant.
        tenant: String,
        /// The route class.
        class: usize,
        /// The body schema.
        schema: BodySchema,
    },
    /// Unknown route with `unknown_route: pass`: remove any client `x-tenant-id` and forward.
    Pass,
}

/// A request's headers as the host gives them (lower-case names, pseudo-headers included).
///
/// Values are bytes: HTTP allows any octet from 0x80 up in a field value (RFC 9110 section 5.5,
/// obs-text) and Envoy passes such values on, so a value need not be UTF-8. Names are tokens,
/// which Envoy's codecs enforce before any filter runs.
pub struct RequestHeaders<'a>(pub &'a [(String, Vec<u8>)]);

impl<'a> RequestHeaders<'a> {
    /// The first value of header `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name` if it is UTF-8 text; `None` when absent or not text.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// How many times header `name` (lower case) occurs.
    pub fn count(&self, name: &str) -> usize {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

/// The API key a request presents: `x-api-key`, else `Authorization: Bearer`. Keys are
/// compared as bytes (by digest), so a key that is not UTF-8 is simply not a valid one.
fn presented_key<'a>(headers: &RequestHeaders<'a>) -> Option<&'a [u8]> {
    if let Some(key) = headers.get("x-api-key") {
        return Some(key.trim_ascii());
    }
    let authorization = headers.get("authorization")?.trim_ascii();
    let space = authorization.iter().position(|b| *b == b' ')?;
    let (scheme, token) = authorization.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// Compares two digests in time independent of where they differ.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured key whose digest matches, checking every key so the time taken does not
/// depend on which one (if any) matched.
fn authenticate(config: &Config, key: &[u8]) -> Option<usize> {
    let digest: [u8; 32] = Sha256::digest(key).into();
    config.keys.iter().enumerate().fold(None, |found, (i, k)| {
        if digests_equal(&k.digest, &digest) {
            Some(i)
        } else {
            found
        }
    })
}

/// Whether `content_type` is JSON: `application/json` or `application/*+json`, with no charset
/// other than UTF-8 (RFC 8259 section 8.1).
fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let json_type = media == "application/json"
        || media
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"));
    json_type
        && parts.all(|param| match param.split_once('=') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
                value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            _ => true,
        })
}

fn rate_limited(config: &Config, class: usize, retry_after_ns: u64, reset_ns: u64) -> Reply {
    let class = &config.classes[class];
    let retry_after = retry_after_ns.div_ceil(1_000_000_000).max(1);
    let reset = reset_ns.div_ceil(1_000_000_000);
    let problem = Problem::new(
        ProblemKind::RateLimited,
        format!(
            "the {} limit of this API key is exhausted; retry in {retry_after} s",
            class.name
        ),
    );
    Reply::problem(&problem, Outcome::RateLimited)
        .with_header("retry-after", retry_after.to_string())
        .with_header(
            "ratelimit-policy",
            format!(
                "\"{}\";q={};w={}",
                class.name,
                class.limit.burst(),
                class.window_seconds
            ),
        )
        .with_header("ratelimit", format!("\"{}\";r=0;t={reset}", class.name))
}

/// Decides on the request headers. `end_of_stream` is true when the request has no body.
pub fn on_headers(
    config: &Config,
    headers: &RequestHeaders<'_>,
    end_of_stream: bool,
    now_ns: u64,
    store: &dyn SharedStore,
) -> HeadersVerdict {
    let reject = |reply: Reply, class: Option<usize>| HeadersVerdict::Reject { reply, class };
    let method = headers.text(":method").unwrap_or_default();
    let full_path = headers.text(":path").unwrap_or_default();
    let path = full_path.split(['?', '#']).next().unwrap_or_default();

    // 1. Route. HEAD is GET without the content (RFC 9110 section 9.3.2): a GET route serves
    // it, unless a HEAD route of its own matches.
    let mut allowed_methods: Vec<&str> = Vec::new();
    let mut found = None;
    let mut get_for_head = None;
    for route in &config.routes {
        let matched = route.template.matches(path);
        if matched == Match::No {
            continue;
        }
        if route.method == method {
            found = Some((route, matched));
            break;
        }
        let also_head = (route.method == "GET").then_some("HEAD");
        for allowed in std::iter::once(route.method.as_str()).chain(also_head) {
            if !allowed_methods.contains(&allowed) {
                allowed_methods.push(allowed);
            }
        }
        if method == "HEAD" && route.method == "GET" && get_for_head.is_none() {
            get_for_head = Some((route, matched));
        }
    }
    let Some((route, matched)) = found.or(get_for_head) else {
        if !allowed_methods.is_empty() {
            let problem = Problem::new(
                ProblemKind::MethodNotAllowed,
                format!(
                    "{method} is not allowed here; use {}",
                    allowed_methods.join(", ")
                ),
            );
            return reject(
                Reply::problem(&problem, Outcome::MethodNotAllowed)
                    .with_header("allow", allowed_methods.join(", ")),
                None,
            );
        }
        return match config.unknown_route {
            UnknownRoute::Pass => HeadersVerdict::Pass,
            UnknownRoute::Reject => {
                let problem = Problem::new(ProblemKind::NotFound, "no API route matches this path");
                reject(Reply::problem(&problem, Outcome::UnknownRoute), None)
            }
        };
    };
    let class = Some(route.class);

    // 2. API key.
    let unauthenticated = |detail: &str| {
        let problem = Problem::new(ProblemKind::Unauthenticated, detail);
        reject(
            Reply::problem(&problem, Outcome::Unauthenticated)
                .with_header("www-authenticate", "Bearer realm=\"trunkguard\"".to_owned()),
            class,
        )
    };
    let Some(presented) = presented_key(headers) else {
        return unauthenticated("send your API key in X-Api-Key or Authorization: Bearer");
    };
    let Some(key_index) = authenticate(config, presented) else {
        return unauthenticated("the API key is not valid");
    };
    let key = &config.keys[key_index];

    // 3. Rate limit, per (key, class).
    let class_config = &config.classes[route.class];
    let decision = match config.rate_state_key(key_index, route.class) {
        Some(state) => limiter::check(store, state, &class_config.limit, now_ns),
        None => Err(StoreError::Host),
    };
    match decision {
        Ok(Decision::Allow { .. }) => {}
        Ok(Decision::Deny {
            retry_after_ns,
            reset_ns,
        }) => {
            return reject(
                rate_limited(config, route.class, retry_after_ns, reset_ns),
                class,
            );
        }
        Err(_) => {
            let problem = Problem::new(
                ProblemKind::Internal,
                "the rate limit state is unavailable; the request was not forwarded",
            );
            return reject(Reply::problem(&problem, Outcome::Internal), class);
        }
    }

    // 4. Path parameters.
    if let Match::BadParam { name, expected } = matched {
        let problem = Problem::invalid_parameter(&name, expected);
        return reject(Reply::problem(&problem, Outcome::BadParameter), class);
    }

    let tenant = key.tenant.clone();
    let Some(schema) = route.schema else {
        return HeadersVerdict::Forward {
            tenant,
            class: route.class,
        };
    };

    // 5. Size, before buffering anything.
    if let Some(length) = headers.get("content-length") {
        match std::str::from_utf8(length).map(|l| l.trim().parse::<u64>()) {
            Ok(Ok(n)) if n > config.max_body_bytes => return reject(too_large(config), class),
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => {
                let problem = Problem::new(
                    ProblemKind::BadRequest,
                    "Content-Length must be a single decimal number",
                );
                return reject(Reply::problem(&problem, Outcome::BadRequest), class);
            }
        }
    }

    // 6. A body route needs a JSON body.
    if end_of_stream {
        let mut errors = policy::FieldErrors::default();
        errors.push(&policy::Pointer::root(), "a JSON body is required");
        return reject(
            Reply::problem(&Problem::invalid_body(&errors), Outcome::InvalidBody),
            class,
        );
    }
    if !headers.text("content-type").is_some_and(is_json) {
        let problem = Problem::new(
            ProblemKind::UnsupportedMediaType,
            "send the body as Content-Type: application/json (UTF-8)",
        );
        return reject(
            Reply::problem(&problem, Outcome::UnsupportedMediaType)
                .with_header("accept", "application/json".to_owned()),
            class,
        );
    }
    HeadersVerdict::AwaitBody {
        tenant,
        class: route.class,
        schema,
    }
}

fn too_large(config: &Config) -> Reply {
    let problem = Problem::new(
        ProblemKind::PayloadTooLarge,
        format!("the body must be at most {} bytes", config.max_body_bytes),
    );
    Reply::problem(&problem, Outcome::TooLarge)
}

/// Checks the size of the body buffered so far.
pub fn check_buffered_size(config: &Config, buffered: usize) -> Result<(), Reply> {
    if u64::try_from(buffered).unwrap_or(u64::MAX) > config.max_body_bytes {
        Err(too_large(config))
    } else {
        Ok(())
    }
}

/// Decides on the complete body.
pub fn on_body(schema: BodySchema, body: &[u8]) -> Result<(), Reply> {
    schema
        .validate(body)
        .map_err(|errors| Reply::problem(&Problem::invalid_body(&errors), Outcome::InvalidBody))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{OTHER_KEY, TEST_KEY, test_config_json};
    use crate::store::memory::MemoryStore;

    const SECOND: u64 = 1_000_000_000;
    const AGENT: &str = "/v1/agents/3fa85f64-5717-4562-b3fc-2c963f66afa6/sip-registration";

    fn config() -> Config {
        Config::parse(test_config_json().as_bytes()).expect("valid")
    }

    fn headers(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        [(":method", method), (":path", path)]
            .iter()
            .chain(extra)
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn class(name: &str) -> usize {
        config()
            .classes
            .iter()
            .position(|c| c.name == name)
            .expect("class")
    }

    fn decide(h: &[(String, Vec<u8>)], end_of_stream: bool) -> HeadersVerdict {
        on_headers(
            &config(),
            &RequestHeaders(h),
            end_of_stream,
            SECOND,
            &MemoryStore::default(),
        )
    }

    fn rejected(verdict: HeadersVerdict) -> Reply {
        match verdict {
            HeadersVerdict::Reject { reply, .. } => reply,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn problem(reply: &Reply) -> serde_json::Value {
        assert!(
            reply
                .headers
                .contains(&("content-type".into(), CONTENT_TYPE.into()))
        );
        serde_json::from_slice(&reply.body).expect("problem json")
    }

    #[test]
    fn valid_get_is_forwarded_with_the_tenant() {
        let h = headers("GET", AGENT, &[("x-api-key", TEST_KEY)]);
        assert_eq!(
            decide(&h, true),
            HeadersVerdict::Forward {
                tenant: "demo".into(),
                class: class("read")
            }
        );
        let h = headers(
            "GET",
            "/v1/sip/ip-access-list?limit=5",
            &[("authorization", &format!("Bearer {OTHER_KEY}"))],
        );
        assert!(
            matches!(decide(&h, true), HeadersVerdict::Forward { tenant, .. } if tenant == "acme")
        );
    }

    #[test]
    fn body_routes_wait_for_the_body() {
        let h = headers(
            "PUT",
            AGENT,
            &[
                ("x-api-key", TEST_KEY),
                ("content-type", "application/json; charset=utf-8"),
                ("content-length", "10"),
            ],
        );
        assert_eq!(
            decide(&h, false),
            HeadersVerdict::AwaitBody {
                tenant: "demo".into(),
                class: class("write"),
                schema: BodySchema::SipRegistration
            }
        );
    }

    #[test]
    fn missing_and_unknown_keys_are_401() {
        for extra in [
            vec![],
            vec![("x-api-key", "wrong")],
            vec![("authorization", "Basic abc")],
        ] {
            let reply = rejected(decide(&headers("GET", AGENT, &extra), true));
            assert_eq!(reply.status, 401);
            assert_eq!(reply.outcome, Outcome::Unauthenticated);
            assert!(reply.headers.iter().any(|(n, _)| n == "www-authenticate"));
            assert_eq!(
                problem(&reply)["type"],
                "urn:trunkguard:problem:unauthenticated"
            );
        }
    }

    #[test]
    fn unknown_route_is_404_and_wrong_method_is_405_with_allow() {
        let reply = rejected(decide(
            &headers("GET", "/v1/nothing", &[("x-api-key", TEST_KEY)]),
            true,
        ));
        assert_eq!((reply.status, reply.outcome), (404, Outcome::UnknownRoute));
        let reply = rejected(decide(
            &headers(
                "PATCH",
                "/v1/sip/ip-access-list",
                &[("x-api-key", TEST_KEY)],
            ),
            true,
        ));
        assert_eq!(reply.status, 405);
        assert!(
            reply
                .headers
                .contains(&("allow".into(), "POST, GET, HEAD".into()))
        );
    }

    #[test]
    fn head_is_served_by_the_get_route_and_counted_with_it() {
        let head = headers("HEAD", AGENT, &[("x-api-key", TEST_KEY)]);
        let store = MemoryStore::default();
        let config = config();
        let read = class("read");
        for n in 0..100 {
            let verdict = on_headers(&config, &RequestHeaders(&head), true, SECOND + n, &store);
            assert_eq!(
                verdict,
                HeadersVerdict::Forward {
                    tenant: "demo".into(),
                    class: read,
                }
            );
        }
        let get = headers("GET", AGENT, &[("x-api-key", TEST_KEY)]);
        let reply = rejected(on_headers(
            &config,
            &RequestHeaders(&get),
            true,
            SECOND + 100,
            &store,
        ));
        assert_eq!(
            reply.status, 429,
            "HEAD spent the read class's burst of 100"
        );

        let bad = headers(
            "HEAD",
            "/v1/agents/nope/sip-registration",
            &[("x-api-key", TEST_KEY)],
        );
        assert_eq!(rejected(decide(&bad, true)).status, 400);
        let reply = rejected(decide(
            &headers(
                "HEAD",
                "/v1/sip/ip-access-list/x1",
                &[("x-api-key", TEST_KEY)],
            ),
            true,
        ));
        assert_eq!(reply.status, 405);
        assert!(reply.headers.contains(&("allow".into(), "DELETE".into())));
    }

    #[test]
    fn unknown_routes_pass_when_configured() {
        let mut config = config();
        config.unknown_route = UnknownRoute::Pass;
        let h = headers("GET", "/healthz", &[]);
        let verdict = on_headers(
            &config,
            &RequestHeaders(&h),
            true,
            SECOND,
            &MemoryStore::default(),
        );
        assert_eq!(verdict, HeadersVerdict::Pass);
    }

    #[test]
    fn bad_path_parameter_is_named() {
        let h = headers(
            "GET",
            "/v1/agents/agent_abc/sip-registration",
            &[("x-api-key", TEST_KEY)],
        );
        let reply = rejected(decide(&h, true));
        assert_eq!(reply.status, 400);
        assert_eq!(problem(&reply)["errors"][0]["parameter"], "agentId");
    }

    #[test]
    fn oversized_content_length_is_413_before_buffering() {
        let h = headers(
            "PUT",
            AGENT,
            &[
                ("x-api-key", TEST_KEY),
                ("content-type", "application/json"),
                ("content-length", "1025"),
            ],
        );
        assert_eq!(rejected(decide(&h, false)).status, 413);
        let h = headers(
            "PUT",
            AGENT,
            &[
                ("x-api-key", TEST_KEY),
                ("content-type", "application/json"),
                ("content-length", "-1"),
            ],
        );
        assert_eq!(rejected(decide(&h, false)).status, 400);
        assert!(check_buffered_size(&config(), 1024).is_ok());
        assert_eq!(
            check_buffered_size(&config(), 1025).map_err(|r| r.status),
            Err(413)
        );
    }

    #[test]
    fn non_json_bodies_are_415_and_missing_bodies_400() {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/json; charset=latin1"),
            Some("application/jsonp"),
        ] {
            let mut extra = vec![("x-api-key", TEST_KEY)];
            extra.extend(content_type.map(|c| ("content-type", c)));
            let reply = rejected(decide(&headers("PUT", AGENT, &extra), false));
            assert_eq!(reply.status, 415, "{content_type:?}");
        }
        assert!(is_json("application/problem+json"));
        let h = headers(
            "PUT",
            AGENT,
            &[
                ("x-api-key", TEST_KEY),
                ("content-type", "application/json"),
            ],
        );
        let reply = rejected(decide(&h, true));
        assert_eq!((reply.status, reply.outcome), (400, Outcome::InvalidBody));
    }

    #[test]
    fn invalid_bodies_list_every_field() {
        let reply = on_body(
            BodySchema::SipRegistration,
            br#"{"domain":"x y","did":"123"}"#,
        )
        .expect_err("invalid");
        let json = problem(&reply);
        assert_eq!(json["status"], 400);
        let pointers: Vec<&str> = json["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["pointer"].as_str())
            .collect();
        for pointer in ["/domain", "/did", "/username", "/password"] {
            assert!(pointers.contains(&pointer), "{pointer} in {pointers:?}");
        }
        assert!(on_body(BodySchema::IpAccessEntry, br#"{"address":"10.0.0.0/8"}"#).is_ok());
    }

    #[test]
    fn the_limit_applies_per_key_and_class_with_ietf_headers() {
        let config = config();
        let store = MemoryStore::default();
        let put = headers(
            "PUT",
            AGENT,
            &[
                ("x-api-key", TEST_KEY),
                ("content-type", "application/json"),
            ],
        );
        let decide = |h: &[(String, Vec<u8>)]| {
            on_headers(&config, &RequestHeaders(h), false, SECOND, &store)
        };
        for _ in 0..20 {
            assert!(matches!(decide(&put), HeadersVerdict::AwaitBody { .. }));
        }
        let reply = rejected(decide(&put));
        assert_eq!((reply.status, reply.outcome), (429, Outcome::RateLimited));
        let header = |name: &str| {
            reply
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("retry-after").as_deref(), Some("1"));
        assert_eq!(
            header("ratelimit-policy").as_deref(),
            Some("\"write\";q=20;w=2")
        );
        assert_eq!(header("ratelimit").as_deref(), Some("\"write\";r=0;t=2"));
        // Another class of the same key, and the same class of another key, are unaffected.
        let get = headers("GET", AGENT, &[("x-api-key", TEST_KEY)]);
        assert!(matches!(decide(&get), HeadersVerdict::Forward { .. }));
        let other = headers(
            "PUT",
            AGENT,
            &[
                ("x-api-key", OTHER_KEY),
                ("content-type", "application/json"),
            ],
        );
        assert!(matches!(decide(&other), HeadersVerdict::AwaitBody { .. }));
    }

    #[test]
    fn unauthenticated_requests_create_no_rate_limit_state() {
        let store = MemoryStore::default();
        let h = headers("GET", AGENT, &[("x-api-key", "guess")]);
        let _ = on_headers(&config(), &RequestHeaders(&h), true, SECOND, &store);
        assert!(store.entries.borrow().is_empty());
    }

    /// A valid PUT's headers with `name: value` added, `value` not being UTF-8.
    fn put_with(name: &str, value: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut h = headers(
            "PUT",
            AGENT,
            &[
                ("x-api-key", TEST_KEY),
                ("content-type", "application/json"),
            ],
        );
        h.retain(|(n, _)| n != name);
        h.push((name.to_owned(), value.to_vec()));
        h
    }

    #[test]
    fn a_header_value_that_is_not_utf8_is_passed_on_untouched() {
        // RFC 9110 obs-text: octets from 0x80 up are allowed in field values.
        let verdict = decide(&put_with("x-note", b"caf\xe9"), false);
        assert!(
            matches!(verdict, HeadersVerdict::AwaitBody { .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn an_api_key_that_is_not_utf8_is_not_a_valid_key() {
        let key = [TEST_KEY.as_bytes(), b"\xff"].concat();
        let bearer = [b"Bearer ".as_slice(), &key].concat();
        for h in [put_with("x-api-key", &key), {
            let mut h = put_with("authorization", &bearer);
            h.retain(|(n, _)| n != "x-api-key");
            h
        }] {
            let reply = rejected(decide(&h, false));
            assert_eq!(
                (reply.status, reply.outcome),
                (401, Outcome::Unauthenticated)
            );
            assert_eq!(problem(&reply)["detail"], "the API key is not valid");
        }
    }

    #[test]
    fn framing_headers_that_are_not_utf8_are_refused_precisely() {
        let reply = rejected(decide(
            &put_with("content-type", b"application/json\xff"),
            false,
        ));
        assert_eq!(reply.status, 415);
        let reply = rejected(decide(&put_with("content-length", b"1\xff"), false));
        assert_eq!((reply.status, reply.outcome), (400, Outcome::BadRequest));
    }
}
