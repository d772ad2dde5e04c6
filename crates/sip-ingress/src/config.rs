//! The ingress's configuration: a TOML file (`sip-ingress --config FILE`), or the embedded demo
//! world (`src/demo.toml`) when none is given.
//!
//! Every value is checked with the same rules the edge applies to the control-plane API
//! (`policy`), and an error names the key it is about (`tenants[0].agents[1].number: ...`).

use std::net::SocketAddr;
use std::num::NonZeroU32;

use policy::admission::{Agent, DeniedSource, Tenant, World};
use serde::Deserialize;

/// The demo world's configuration text.
pub const DEMO: &str = include_str!("demo.toml");

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
    tenants: Vec<RawTenant>,
}

/// Where Prometheus text is served (`GET /metrics`); nowhere when absent.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<SocketAddr>,
}

/// The per-source flood limit on out-of-dialog requests.
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

/// A checked configuration.
#[derive(Debug)]
pub struct Config {
    /// UDP addresses to listen on.
    pub udp: Vec<SocketAddr>,
    /// TCP addresses to listen on; each is also a UDP address, whose proxy it shares.
    pub tcp: Vec<SocketAddr>,
    /// How long a TCP connection may stay silent before it is closed.
    pub tcp_idle: std::time::Duration,
    /// The most TCP connections one source address may hold.
    pub tcp_connections_per_source: usize,
    /// Tenants, agents and access lists, indexed.
    pub world: World,
    /// The per-source flood limit.
    pub flood: governor::Quota,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<SocketAddr>,
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
                    "sip.tcp[{i}]: {addr} must also be in sip.udp (the two share one proxy and \
                     agents are reached over UDP)"
                ));
            }
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
        let world =
            World::new(tenants, denied).map_err(|e| ConfigError(vec![format!("tenants: {e}")]))?;
        Ok(Config {
            udp: raw.sip.udp,
            tcp: raw.sip.tcp,
            tcp_idle: std::time::Duration::from_secs(raw.sip.tcp_idle_seconds),
            tcp_connections_per_source: raw.sip.tcp_connections_per_source,
            world,
            flood: flood.ok_or_else(|| ConfigError(vec!["flood: invalid".to_owned()]))?,
            metrics: raw.metrics.listen,
        })
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_world_loads() {
        let config = Config::parse(DEMO).expect("demo is valid");
        assert_eq!(
            config.udp,
            ["127.0.0.1:5060".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(config.world.tenants().len(), 2);
        assert_eq!(config.world.tenants()[0].agents.len(), 2);
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
}
