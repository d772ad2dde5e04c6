//! The plugin configuration: the JSON in the filter's `configuration` field.
//!
//! ```json
//! {
//!   "routes": [{"method": "PUT", "path": "/v1/agents/{agentId:uuid}/sip-registration",
//!               "schema": "sip-registration", "class": "write"}],
//!   "api_keys": [{"name": "demo", "sha256": "<64 hex digits>", "tenant": "demo"}],
//!   "rate_limits": {"write": {"rate": 10, "period_seconds": 1, "burst": 20}},
//!   "max_body_bytes": 65536,
//!   "unknown_route": "reject"
//! }
//! ```
//!
//! Keys are stored as SHA-256 digests, never in clear. Every route names a class and every class
//! has a limit, applied per (API key, class). A configuration with any problem is refused whole,
//! with every problem listed, so Envoy does not start with it.

use std::collections::BTreeMap;

use policy::{BodySchema, Gcra};
use serde::Deserialize;

use crate::template::PathTemplate;

/// The default largest request body, in bytes (64 KiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;
/// The largest `max_body_bytes` accepted: the filter buffers bodies in the wasm VM's memory.
pub const MAX_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    routes: Vec<RawRoute>,
    api_keys: Vec<RawKey>,
    rate_limits: BTreeMap<String, RawLimit>,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: u64,
    #[serde(default)]
    unknown_route: UnknownRoute,
}

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: String,
    path: String,
    #[serde(default)]
    schema: Option<BodySchema>,
    class: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    sha256: String,
    tenant: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    rate: u32,
    #[serde(default = "one_second")]
    period_seconds: u32,
    burst: u32,
}

fn one_second() -> u32 {
    1
}

/// What to do with a request that matches no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownRoute {
    /// Answer 404 (the default: the upstream only sees routes the filter knows).
    #[default]
    Reject,
    /// Forward it untouched (apart from removing a client-sent `x-tenant-id`).
    Pass,
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method, upper case.
    pub method: String,
    /// The path template.
    pub template: PathTemplate,
    /// The schema the body must satisfy; `None` for routes without a body.
    pub schema: Option<BodySchema>,
    /// Index into [`Config::classes`].
    pub class: usize,
}

/// One API key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The operator's name for it; used in rate-limit state keys, never the key itself.
    pub name: String,
    /// SHA-256 of the key.
    pub digest: [u8; 32],
    /// The tenant it authenticates.
    pub tenant: String,
}

/// A route class and its limit.
#[derive(Debug, Clone)]
pub struct RouteClass {
    /// The class name (metric label, RateLimit policy name).
    pub name: String,
    /// The limit per API key.
    pub limit: Gcra,
    /// Seconds for a drained burst to refill (the RateLimit-Policy window).
    pub window_seconds: u64,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Routes, in configuration order.
    pub routes: Vec<Route>,
    /// API keys.
    pub keys: Vec<ApiKey>,
    /// Route classes.
    pub classes: Vec<RouteClass>,
    /// The largest body accepted.
    pub max_body_bytes: u64,
    /// What happens to unknown routes.
    pub unknown_route: UnknownRoute,
    /// The shared-data key of each (API key, class) pair's rate-limit state, at
    /// `key * classes.len() + class`: written once here rather than on every request.
    rate_state_keys: Vec<String>,
}

/// Why a configuration was refused: every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid trunkguard configuration: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigError {}

fn is_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

impl Config {
    /// The shared-data key of the rate-limit state of API key `key` in class `class` (indices
    /// into `keys` and `classes`), `None` when either is out of range.
    pub fn rate_state_key(&self, key: usize, class: usize) -> Option<&str> {
        if class >= self.classes.len() {
            return None;
        }
        self.rate_state_keys
            .get(key * self.classes.len() + class)
            .map(String::as_str)
    }

    /// Parses and validates a configuration.
    pub fn parse(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            serde_json::from_slice(json).map_err(|e| ConfigError(vec![e.to_string()]))?;
        let mut problems = Vec::new();

        let mut classes = Vec::new();
        for (name, limit) in &raw.rate_limits {
            if !is_label(name, 32) {
                problems.push(format!(
                    "rate_limits: class name {name:?} must be 1 to 32 of A-Z a-z 0-9 _ - ."
                ));
            }
            let period_ns = u64::from(limit.period_seconds) * 1_000_000_000;
            match Gcra::new(limit.rate, period_ns, limit.burst) {
                Ok(gcra) => classes.push(RouteClass {
                    name: name.clone(),
                    window_seconds: (gcra.interval_ns().saturating_mul(u64::from(limit.burst)))
                        .div_ceil(1_000_000_000)
                        .max(1),
                    limit: gcra,
                }),
                Err(e) => problems.push(format!("rate_limits.{name}: {e}")),
            }
        }

        let mut routes: Vec<Route> = Vec::new();
        for (i, raw_route) in raw.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            let method = raw_route.method.clone();
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                problems.push(format!(
                    "{at}.method: {method:?} must be an upper-case HTTP method"
                ));
            }
            if raw_route.schema.is_some() && matches!(method.as_str(), "GET" | "HEAD" | "DELETE") {
                problems.push(format!(
                    "{at}.schema: {method} requests carry no body to validate"
                ));
            }
            let class = classes.iter().position(|c| c.name == raw_route.class);
            if class.is_none() {
                problems.push(format!(
                    "{at}.class: {:?} has no entry in rate_limits",
                    raw_route.class
                ));
            }
            match PathTemplate::parse(&raw_route.path) {
                Ok(template) => {
                    if let Some(other) = routes
                        .iter()
                        .find(|r| r.method == method && r.template.same_shape(&template))
                    {
                        problems.push(format!(
                            "{at}: {method} {} is ambiguous with {method} {}",
                            raw_route.path, other.template
                        ));
                    }
                    routes.push(Route {
                        method,
                        template,
                        schema: raw_route.schema,
                        class: class.unwrap_or(0),
                    });
                }
                Err(e) => problems.push(format!("{at}.path: {e}")),
            }
        }
        if raw.routes.is_empty() {
            problems.push("routes: at least one route is required".to_owned());
        }

        let mut keys: Vec<ApiKey> = Vec::new();
        for (i, raw_key) in raw.api_keys.iter().enumerate() {
            let at = format!("api_keys[{i}]");
            if !is_label(&raw_key.name, 64) {
                problems.push(format!("{at}.name: must be 1 to 64 of A-Z a-z 0-9 _ - ."));
            }
            if !is_label(&raw_key.tenant, 64) {
                problems.push(format!("{at}.tenant: must be 1 to 64 of A-Z a-z 0-9 _ - ."));
            }
            let Some(digest) = parse_digest(&raw_key.sha256) else {
                problems.push(format!(
                    "{at}.sha256: must be the 64 hexadecimal digits of the key's SHA-256"
                ));
                continue;
            };
            if keys.iter().any(|k| k.name == raw_key.name) {
                problems.push(format!("{at}.name: {:?} is used twice", raw_key.name));
            }
            if keys.iter().any(|k| k.digest == digest) {
                problems.push(format!("{at}.sha256: the same key is configured twice"));
            }
            keys.push(ApiKey {
                name: raw_key.name.clone(),
                digest,
                tenant: raw_key.tenant.clone(),
            });
        }
        if raw.api_keys.is_empty() {
            problems.push("api_keys: at least one key is required".to_owned());
        }

        if raw.max_body_bytes == 0 || raw.max_body_bytes > MAX_MAX_BODY_BYTES {
            problems.push(format!(
                "max_body_bytes: must be from 1 to {MAX_MAX_BODY_BYTES}"
            ));
        }

        if problems.is_empty() {
            let rate_state_keys = keys
                .iter()
                .flat_map(|key| {
                    classes
                        .iter()
                        .map(|class| state_key(&key.name, &class.name))
                })
                .collect();
            Ok(Config {
                rate_state_keys,
                routes,
                keys,
                classes,
                max_body_bytes: raw.max_body_bytes,
                unknown_route: raw.unknown_route,
            })
        } else {
            Err(ConfigError(problems))
        }
    }
}

/// The store key of one (API key, class) pair: operator-chosen names only, never key material.
pub(crate) fn state_key(key_name: &str, class_name: &str) -> String {
    format!("trunkguard/ratelimit/{key_name}/{class_name}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SHA-256 of `tg_test_key` and `tg_other_key`.
    pub const TEST_KEY: &str = "tg_test_key";
    pub const OTHER_KEY: &str = "tg_other_key";

    pub fn digest_hex(key: &str) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn test_config_json() -> String {
        serde_json::json!({
            "routes": [
                {"method": "PUT", "path": "/v1/agents/{agentId:uuid}/sip-registration",
                 "schema": "sip-registration", "class": "write"},
                {"method": "GET", "path": "/v1/agents/{agentId:uuid}/sip-registration", "class": "read"},
                {"method": "POST", "path": "/v1/sip/ip-access-list", "schema": "ip-access-entry", "class": "write"},
                {"method": "GET", "path": "/v1/sip/ip-access-list", "class": "read"},
                {"method": "DELETE", "path": "/v1/sip/ip-access-list/{entryId}", "class": "write"}
            ],
            "api_keys": [
                {"name": "test", "sha256": digest_hex(TEST_KEY), "tenant": "demo"},
                {"name": "other", "sha256": digest_hex(OTHER_KEY), "tenant": "acme"}
            ],
            "rate_limits": {
                "write": {"rate": 10, "burst": 20},
                "read": {"rate": 100, "period_seconds": 1, "burst": 100}
            },
            "max_body_bytes": 1024
        })
        .to_string()
    }

    #[test]
    fn a_valid_configuration_loads() {
        let config = Config::parse(test_config_json().as_bytes()).expect("valid");
        assert_eq!(config.routes.len(), 5);
        assert_eq!(config.keys[1].tenant, "acme");
        assert_eq!(config.unknown_route, UnknownRoute::Reject);
        let write = &config.classes[config.routes[0].class];
        assert_eq!((write.name.as_str(), write.window_seconds), ("write", 2));
    }

    #[test]
    fn each_key_and_class_pair_has_its_own_rate_state_key() {
        let config = Config::parse(test_config_json().as_bytes()).expect("valid");
        let mut seen = std::collections::BTreeSet::new();
        for (k, key) in config.keys.iter().enumerate() {
            for (c, class) in config.classes.iter().enumerate() {
                let state = config.rate_state_key(k, c).expect("in range");
                assert_eq!(state, state_key(&key.name, &class.name));
                assert!(seen.insert(state.to_owned()));
            }
        }
        assert_eq!(config.rate_state_key(0, config.classes.len()), None);
        assert_eq!(config.rate_state_key(config.keys.len(), 0), None);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let json = serde_json::json!({
            "routes": [
                {"method": "get", "path": "v1/x", "class": "nope"},
                {"method": "GET", "path": "/v1/{a:uuid}", "schema": "agent", "class": "read"},
                {"method": "GET", "path": "/v1/{b}", "class": "read"}
            ],
            "api_keys": [{"name": "k", "sha256": "abc", "tenant": "t t"}],
            "rate_limits": {"read": {"rate": 0, "burst": 1}},
            "max_body_bytes": 0
        });
        let err = Config::parse(json.to_string().as_bytes()).expect_err("invalid");
        let text = err.to_string();
        for fragment in [
            "routes[0].method",
            "routes[0].class",
            "routes[0].path",
            "routes[1].schema",
            "routes[2]: GET /v1/{b} is ambiguous",
            "api_keys[0].tenant",
            "api_keys[0].sha256",
            "rate_limits.read",
            "max_body_bytes",
        ] {
            assert!(text.contains(fragment), "{fragment} missing from {text}");
        }
    }

    #[test]
    fn unknown_fields_and_schemas_are_refused() {
        let err =
            Config::parse(br#"{"routes": [], "api_keys": [], "rate_limits": {}, "extra": 1}"#)
                .expect_err("unknown field");
        assert!(err.to_string().contains("extra"));
        let err = Config::parse(
            br#"{"routes": [{"method": "POST", "path": "/x", "schema": "nope", "class": "c"}],
                "api_keys": [], "rate_limits": {}}"#,
        )
        .expect_err("unknown schema");
        assert!(err.to_string().contains("unknown body schema"), "{err}");
    }
}
