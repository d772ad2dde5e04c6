//! The ingress's configuration: a TOML file (`sip-ingress --config FILE`), or the embedded demo
//! world (`src/demo.toml`) when none is given.
//!
//! Every value is checked with the same rules the edge applies to the control-plane API
//! (`policy`), and an error names the key it is about (`tenants[0].agents[1].number: ...`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use policy::Host;
use policy::admission::{Agent, DeniedSource, Tenant, World};
use serde::Deserialize;

use crate::admission::config::{AdmissionConfig, PolicyConfig, RawPolicy};
use crate::api::{ApiConfig, DEFAULT_GATEWAY};
use crate::proxy::{DEFAULT_TIMER_C, Timers};
use crate::register::RegistrationConfig;
use crate::transport::TransportConfig;

/// The demo world's configuration text.
pub const DEMO: &str = include_str!("demo.toml");

/// The longest Timer C that can be set, in seconds: an hour of ringing.
const MOST_TIMER_C_SECONDS: u64 = 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    sip: RawSip,
    #[serde(default)]
    admission: RawAdmission,
    #[serde(default)]
    flood: RawFlood,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    policy: RawPolicy,
    api: Option<RawApi>,
    #[serde(default)]
    registration: RawRegistration,
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

/// The registration client's settings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistration {
    #[serde(default = "default_expires")]
    expires: u32,
    #[serde(default = "default_max_per_second")]
    max_per_second: u32,
}

impl Default for RawRegistration {
    fn default() -> Self {
        Self {
            expires: default_expires(),
            max_per_second: default_max_per_second(),
        }
    }
}

fn default_expires() -> u32 {
    RegistrationConfig::default().expires
}

fn default_max_per_second() -> u32 {
    RegistrationConfig::default().max_per_second
}

/// The longest interval a REGISTER may ask for: a day.
const MOST_EXPIRES: u32 = 86_400;

/// The control-plane API and its database; no API when absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: SocketAddr,
    database: PathBuf,
    #[serde(default = "default_gateway")]
    agent_gateway: String,
}

fn default_gateway() -> String {
    DEFAULT_GATEWAY.to_owned()
}

/// Where Prometheus text is served (`GET /metrics`); nowhere when absent.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<SocketAddr>,
}

/// The per-source flood limit on requests outside the dialogs the ingress admitted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlood {
    /// Requests per second from one source address.
    rate: u32,
    /// Requests accepted at once from one source address.
    burst: u32,
}

impl Default for RawFlood {
    fn default() -> Self {
        Self {
            rate: 20,
            burst: 40,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    udp: Vec<SocketAddr>,
    #[serde(default)]
    tcp: Vec<SocketAddr>,
    #[serde(default = "default_idle_seconds")]
    tcp_idle_seconds: u64,
    #[serde(default = "default_connections_per_source")]
    tcp_connections_per_source: usize,
    #[serde(default = "default_t1_ms")]
    t1_ms: u64,
    #[serde(default = "default_timer_c_seconds")]
    timer_c_seconds: u64,
    #[serde(default)]
    hosts: BTreeMap<String, Vec<IpAddr>>,
}

fn default_t1_ms() -> u64 {
    500
}

fn default_timer_c_seconds() -> u64 {
    DEFAULT_TIMER_C.as_secs()
}

fn default_idle_seconds() -> u64 {
    60
}

fn default_connections_per_source() -> usize {
    16
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmission {
    #[serde(default)]
    denied_source: RawDenied,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawDenied {
    #[default]
    Drop,
    Forbid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: String,
    #[serde(default)]
    access: Vec<String>,
    #[serde(default)]
    agents: Vec<RawAgent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    username: Option<String>,
    number: Option<String>,
    uri: String,
    dest_user: Option<String>,
    route: Option<String>,
}

/// A checked configuration: each module's own settings, composed.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the ingress listens and how it reaches agents (`[sip]`).
    pub transport: TransportConfig,
    /// RFC 3261 T1 (a forwarded INVITE is sent again after T1, 2xT1, 4xT1... until the agent
    /// answers, and the caller gets 408 after 64xT1 of silence) and Timer C (how long an agent
    /// may ring before it is sent a CANCEL).
    pub timers: Timers,
    /// The tenants and the admission policy (`[admission]`, `[policy]`, `[[tenants]]`).
    pub admission: AdmissionConfig,
    /// The per-source flood limit.
    pub flood: governor::Quota,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The control-plane API, if served.
    pub api: Option<ApiConfig>,
    /// The registration client (`[registration]`).
    pub registration: RegistrationConfig,
}

/// Why a configuration is refused: every problem, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError(vec![e.to_string()]))?;
        let mut problems = Vec::new();
        if raw.sip.udp.is_empty() {
            problems.push("sip.udp: at least one address is required".to_owned());
        }
        for (i, addr) in raw.sip.tcp.iter().enumerate() {
            if !raw.sip.udp.contains(addr) {
                problems.push(format!(
                    "sip.tcp[{i}]: {addr} must also be in sip.udp (the TCP listener feeds the \
                     proxy of the UDP address)"
                ));
            }
        }
        if !(1..=60_000).contains(&raw.sip.t1_ms) {
            problems.push(format!(
                "sip.t1_ms: {} is not a round-trip time from 1 to 60000 ms",
                raw.sip.t1_ms
            ));
        }
        let mut hosts = BTreeMap::new();
        for (name, addresses) in &raw.sip.hosts {
            match name.parse::<Host>() {
                Ok(Host::Domain(_)) if addresses.is_empty() => {
                    problems.push(format!("sip.hosts.\"{name}\": needs at least one address"));
                }
                Ok(Host::Domain(_)) => {
                    if hosts
                        .insert(name.to_ascii_lowercase(), addresses.clone())
                        .is_some()
                    {
                        problems.push(format!(
                            "sip.hosts.\"{name}\": given twice (names are case-insensitive)"
                        ));
                    }
                }
                Ok(_) => problems.push(format!(
                    "sip.hosts.\"{name}\": an address is not a host name to look up"
                )),
                Err(e) => problems.push(format!("sip.hosts.\"{name}\": {e}")),
            }
        }
        if !(1..=MOST_TIMER_C_SECONDS).contains(&raw.sip.timer_c_seconds) {
            problems.push(format!(
                "sip.timer_c_seconds: {} is not from 1 to {MOST_TIMER_C_SECONDS} s",
                raw.sip.timer_c_seconds
            ));
        }
        if raw.sip.tcp_idle_seconds == 0 || raw.sip.tcp_connections_per_source == 0 {
            problems.push(
                "sip: tcp_idle_seconds and tcp_connections_per_source must be at least 1"
                    .to_owned(),
            );
        }
        let flood = match (
            NonZeroU32::new(raw.flood.rate),
            NonZeroU32::new(raw.flood.burst),
        ) {
            (Some(rate), Some(burst)) => Some(governor::Quota::per_second(rate).allow_burst(burst)),
            _ => {
                problems.push("flood: rate and burst must be at least 1".to_owned());
                None
            }
        };
        if !(60..=MOST_EXPIRES).contains(&raw.registration.expires) {
            problems.push(format!(
                "registration.expires: {} is not from 60 to {MOST_EXPIRES} s",
                raw.registration.expires
            ));
        }
        if !(1..=10_000).contains(&raw.registration.max_per_second) {
            problems.push(format!(
                "registration.max_per_second: {} is not from 1 to 10000",
                raw.registration.max_per_second
            ));
        }
        let policy = PolicyConfig::check(raw.policy, &mut problems);
        if let Some(api) = &raw.api
            && !(api.agent_gateway.starts_with("sip:{username}@")
                && crate::sip::uri::host_port(&api.agent_gateway).is_some())
        {
            problems.push(format!(
                "api.agent_gateway: {:?} must be sip:{{username}}@host[:port]",
                api.agent_gateway
            ));
        }
        if let Some(api) = &raw.api
            && !api.listen.ip().is_loopback()
        {
            problems.push(format!(
                "api.listen: {} is not a loopback address (the API trusts x-tenant-id, which only \
                 the edge may set)",
                api.listen
            ));
        }
        let mut tenants = Vec::new();
        for (t, tenant) in raw.tenants.iter().enumerate() {
            let at = format!("tenants[{t}]");
            let mut access = Vec::new();
            for (i, entry) in tenant.access.iter().enumerate() {
                match entry.parse() {
                    Ok(entry) => access.push(entry),
                    Err(e) => problems.push(format!("{at}.access[{i}]: {e}")),
                }
            }
            let mut agents = Vec::new();
            for (a, agent) in tenant.agents.iter().enumerate() {
                match check_agent(agent) {
                    Ok(agent) => agents.push(agent),
                    Err((key, e)) => problems.push(format!("{at}.agents[{a}].{key}: {e}")),
                }
            }
            tenants.push(Tenant {
                id: tenant.id.clone(),
                access,
                agents,
            });
        }
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        let denied = match raw.admission.denied_source {
            RawDenied::Drop => DeniedSource::Drop,
            RawDenied::Forbid => DeniedSource::Forbid,
        };
        // The policy decides, but no policy can serve two agents under one name.
        World::new(tenants.clone(), denied)
            .map_err(|e| ConfigError(vec![format!("tenants: {e}")]))?;
        Ok(Config {
            transport: TransportConfig {
                udp: raw.sip.udp,
                tcp: raw.sip.tcp,
                tcp_idle: Duration::from_secs(raw.sip.tcp_idle_seconds),
                tcp_connections_per_source: raw.sip.tcp_connections_per_source,
                hosts,
            },
            timers: Timers {
                t1: Duration::from_millis(raw.sip.t1_ms),
                timer_c: Duration::from_secs(raw.sip.timer_c_seconds),
            },
            admission: AdmissionConfig {
                tenants,
                denied,
                policy,
            },
            flood: flood.ok_or_else(|| ConfigError(vec!["flood: invalid".to_owned()]))?,
            metrics: raw.metrics.listen,
            api: raw.api.map(|api| ApiConfig {
                listen: api.listen,
                database: api.database,
                agent_gateway: api.agent_gateway,
            }),
            registration: RegistrationConfig {
                expires: raw.registration.expires,
                max_per_second: raw.registration.max_per_second,
            },
        })
    }
}

impl Config {
    /// Reads and checks a configuration file; relative paths in `[policy]` are relative to the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
        let mut config = Self::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let policy = &mut config.admission.policy;
        policy.module = base.join(&policy.module);
        policy.cache_dir = policy.cache_dir.take().map(|dir| base.join(dir));
        if let Some(api) = &mut config.api {
            api.database = base.join(&api.database);
        }
        Ok(config)
    }
}

fn check_agent(raw: &RawAgent) -> Result<Agent, (&'static str, String)> {
    let number = raw
        .number
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: policy::E164Error| ("number", e.to_string()))?;
    if let Some(username) = &raw.username
        && (username.is_empty() || !username.chars().all(policy::body::text::is_sip_user_char))
    {
        return Err(("username", format!("{username:?} is not a SIP user name")));
    }
    if raw.username.is_none() && number.is_none() {
        return Err((
            "username",
            "an agent needs a username, a number, or both".to_owned(),
        ));
    }
    crate::sip::uri::host_port(&raw.uri)
        .filter(|_| raw.uri.starts_with("sip:"))
        .ok_or_else(|| {
            (
                "uri",
                format!("{:?} is not a sip: URI with a host", raw.uri),
            )
        })?;
    let dest_user = match raw.dest_user.as_deref() {
        Some(value) => policy::DestUser::parse(value).map_err(|e| ("dest_user", e.to_string()))?,
        None => None,
    };
    let route = raw
        .route
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: policy::RouteError| ("route", e.to_string()))?;
    Ok(Agent {
        id: raw.id.clone(),
        username: raw.username.clone(),
        number,
        uri: raw.uri.clone(),
        dest_user,
        route,
        contacts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_world_loads() {
        let config = Config::parse(DEMO).expect("demo is valid");
        assert_eq!(
            config.transport.udp,
            ["127.0.0.1:5060".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(config.admission.tenants.len(), 2);
        assert_eq!(config.admission.tenants[0].agents.len(), 2);
        assert_eq!(config.admission.policy.failure_status, 503);
        assert_eq!(
            config.admission.policy.limits,
            crate::admission::wasm::Limits::default()
        );
    }

    #[test]
    fn errors_name_the_key() {
        let text = DEMO
            .replace("\"::1/128\"", "\"::1/129\"")
            .replace("+15550100003", "15550100003")
            .replace("routing", "r");
        let err = Config::parse(&text).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("tenants[0].access[1]: prefix length"),
            "{text}"
        );
        assert!(
            text.contains("tenants[1].agents[0].number: must be an E.164"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_refused() {
        let err =
            Config::parse("[sip]\nudp = [\"127.0.0.1:5060\"]\nextra = 1\n").expect_err("unknown");
        assert!(err.to_string().contains("extra"), "{err}");
        let err = Config::parse("[sip]\nudp = [\"localhost\"]\n").expect_err("bad address");
        assert!(err.to_string().contains("udp"), "{err}");
    }

    #[test]
    fn t1_defaults_to_rfc_3261s_and_must_be_a_plausible_round_trip() {
        let config = Config::parse("[sip]\nudp = [\"127.0.0.1:5060\"]\n").expect("valid");
        assert_eq!(config.timers.t1, Duration::from_millis(500));
        for bad in ["0", "60001"] {
            let text = format!("[sip]\nudp = [\"127.0.0.1:5060\"]\nt1_ms = {bad}\n");
            let err = Config::parse(&text).expect_err("refused");
            assert!(err.to_string().contains("sip.t1_ms"), "{err}");
        }
    }

    #[test]
    fn host_names_can_be_given_their_addresses_and_bad_entries_are_named() {
        let text = "[sip]\nudp = [\"127.0.0.1:5060\"]\n[sip.hosts]\n\
                    \"Agents.Example\" = [\"192.0.2.7\", \"2001:db8::7\"]\n";
        let config = Config::parse(text).expect("valid");
        let expected: Vec<IpAddr> = vec![
            "192.0.2.7".parse().expect("ip"),
            "2001:db8::7".parse().expect("ip"),
        ];
        assert_eq!(
            config.transport.hosts.get("agents.example"),
            Some(&expected)
        );
        for (entry, named) in [
            ("\"agents.example\" = []", "needs at least one address"),
            (
                "\"192.0.2.1\" = [\"192.0.2.7\"]",
                "an address is not a host name",
            ),
            ("\"bad_name\" = [\"192.0.2.7\"]", "sip.hosts.\"bad_name\""),
            (
                "\"a.example\" = [\"192.0.2.7\"]\n\"A.example\" = [\"192.0.2.8\"]",
                "given twice",
            ),
        ] {
            let text = format!("[sip]\nudp = [\"127.0.0.1:5060\"]\n[sip.hosts]\n{entry}\n");
            let err = Config::parse(&text).expect_err("refused");
            assert!(err.to_string().contains(named), "{entry}: {err}");
        }
        let text =
            "[sip]\nudp = [\"127.0.0.1:5060\"]\n[sip.hosts]\n\"a.example\" = [\"nowhere\"]\n";
        let err = Config::parse(text).expect_err("not an address").to_string();
        assert!(
            err.contains("a.example") && err.contains("invalid IP address"),
            "{err}"
        );
    }

    #[test]
    fn timer_c_defaults_to_more_than_three_minutes_and_can_be_set() {
        let config = Config::parse("[sip]\nudp = [\"127.0.0.1:5060\"]\n").expect("valid");
        assert_eq!(config.timers.timer_c, Duration::from_secs(181));
        let text = "[sip]\nudp = [\"127.0.0.1:5060\"]\ntimer_c_seconds = 120\n";
        let config = Config::parse(text).expect("valid");
        assert_eq!(config.timers.timer_c, Duration::from_secs(120));
        for bad in ["0", "3601"] {
            let text = format!("[sip]\nudp = [\"127.0.0.1:5060\"]\ntimer_c_seconds = {bad}\n");
            let err = Config::parse(&text).expect_err("refused");
            assert!(err.to_string().contains("sip.timer_c_seconds"), "{err}");
        }
    }
}
