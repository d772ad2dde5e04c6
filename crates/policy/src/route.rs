//! The SIP route grammar of seed 001, used for outbound routes and for agents' proxy routes:
//!
//! ```text
//! {host}[:{port}][;transport={udp|tcp}][;proxyAddress={host}[:{port}]]
//! ```
//!
//! * `host` (required): SIP domain or IP "used in the Request URI and To header host portions";
//!   IPv6 literals in brackets.
//! * `port`: defaults to 5060. `transport`: `udp` or `tcp`, defaults to `udp`.
//! * `proxyAddress`: when set, "requests are routed through this address"; its port defaults to
//!   5060.
//!
//! Parameter names and transport values are matched case-insensitively (SIP parameters are, per
//! RFC 3261 section 7.3.1) and printed in the seed's spelling; each parameter may appear once, in
//! either order. A route prints back as it was written modulo that case, so parse and print
//! round-trip.

use std::fmt;
use std::str::FromStr;

use crate::host::{HostPort, HostPortError};
use crate::json::FromJsonText;

/// The default SIP port (RFC 3261 section 19.1.2), for both the target and the proxy.
pub const DEFAULT_PORT: u16 = 5060;

/// The transports a route may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// UDP, the default.
    #[default]
    Udp,
    /// TCP.
    Tcp,
}

impl Transport {
    /// The lower-case name used in the grammar and in SIP `transport=` parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed route. Optional parts stay optional so printing reproduces the input; the accessors
/// apply the seed's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// Where calls are sent: the Request-URI and To host, with an optional port.
    pub target: HostPort,
    /// The transport, when written.
    pub transport: Option<Transport>,
    /// The proxy that packets are sent to, when written.
    pub proxy: Option<HostPort>,
}

impl Route {
    /// The port of the Request-URI (5060 unless written).
    pub fn target_port(&self) -> u16 {
        self.target.port_or(DEFAULT_PORT)
    }

    /// The transport to use (udp unless written).
    pub fn transport(&self) -> Transport {
        self.transport.unwrap_or_default()
    }

    /// Where packets go: the proxy when there is one, else the target; port defaulted.
    pub fn next_hop(&self) -> (&crate::host::Host, u16) {
        match &self.proxy {
            Some(proxy) => (&proxy.host, proxy.port_or(DEFAULT_PORT)),
            None => (&self.target.host, self.target_port()),
        }
    }
}

/// The part of a route that an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutePart {
    /// The whole route.
    Route,
    /// The target host.
    Host,
    /// The target port.
    Port,
    /// A `;name=value` parameter that is not one of the grammar's.
    Parameter,
    /// The `transport` parameter.
    Transport,
    /// The `proxyAddress` parameter.
    ProxyAddress,
}

impl fmt::Display for RoutePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoutePart::Route => "route",
            RoutePart::Host => "host",
            RoutePart::Port => "port",
            RoutePart::Parameter => "parameter",
            RoutePart::Transport => "transport",
            RoutePart::ProxyAddress => "proxyAddress",
        })
    }
}

/// Why a route does not parse, naming the bad part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// The part at fault.
    pub part: RoutePart,
    /// What is wrong with it.
    pub message: String,
}

impl RouteError {
    fn new(part: RoutePart, message: impl Into<String>) -> Self {
        Self {
            part,
            message: message.into(),
        }
    }

    fn from_host_port(error: HostPortError, host: RoutePart, port: RoutePart) -> Self {
        match error {
            HostPortError::Host(e) => Self::new(host, e.to_string()),
            e @ HostPortError::Port(_) => Self::new(port, e.to_string()),
        }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.part, self.message)
    }
}

impl std::error::Error for RouteError {}

impl FromStr for Route {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(RouteError::new(RoutePart::Route, "is empty"));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(RouteError::new(
                RoutePart::Route,
                format!("must not contain white space or control characters (found {c:?})"),
            ));
        }
        let mut parts = s.split(';');
        let target = parts.next().unwrap_or_default();
        let target = target
            .parse::<HostPort>()
            .map_err(|e| RouteError::from_host_port(e, RoutePart::Host, RoutePart::Port))?;
        let mut route = Route {
            target,
            transport: None,
            proxy: None,
        };
        for param in parts {
            let (name, value) = param.split_once('=').ok_or_else(|| {
                RouteError::new(
                    RoutePart::Parameter,
                    format!("{param:?} must be written name=value"),
                )
            })?;
            if name.eq_ignore_ascii_case("transport") {
                if route.transport.is_some() {
                    return Err(RouteError::new(RoutePart::Transport, "is given twice"));
                }
                route.transport = Some(match value.to_ascii_lowercase().as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    _ => {
                        return Err(RouteError::new(
                            RoutePart::Transport,
                            format!("{value:?} is not supported; use udp or tcp"),
                        ));
                    }
                });
            } else if name.eq_ignore_ascii_case("proxyAddress") {
                if route.proxy.is_some() {
                    return Err(RouteError::new(RoutePart::ProxyAddress, "is given twice"));
                }
                route.proxy = Some(value.parse().map_err(|e| {
                    RouteError::from_host_port(e, RoutePart::ProxyAddress, RoutePart::ProxyAddress)
                })?);
            } else {
                return Err(RouteError::new(
                    RoutePart::Parameter,
                    format!(
                        "unknown parameter {name:?}; only transport and proxyAddress are allowed"
                    ),
                ));
            }
        }
        Ok(route)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.target)?;
        if let Some(transport) = self.transport {
            write!(f, ";transport={transport}")?;
        }
        if let Some(proxy) = &self.proxy {
            write!(f, ";proxyAddress={proxy}")?;
        }
        Ok(())
    }
}

impl FromJsonText for Route {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e: RouteError| e.to_string())
    }
}

impl serde::Serialize for Route {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn route(s: &str) -> Route {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn domain(s: &str) -> Host {
        Host::Domain(s.to_owned())
    }

    // seed 001, example 1: "Sending to a SIP domain with default settings: sip.example.com"
    #[test]
    fn seed_001_example_1_defaults() {
        let r = route("sip.example.com");
        assert_eq!(r.target.host, domain("sip.example.com"));
        assert_eq!(r.target_port(), 5060);
        assert_eq!(r.transport(), Transport::Udp);
        assert_eq!(r.next_hop(), (&domain("sip.example.com"), 5060));
    }

    // seed 001, example 2: "using TCP on port 6000: sip.example.com:6000;transport=tcp"
    #[test]
    fn seed_001_example_2_port_and_transport() {
        let r = route("sip.example.com:6000;transport=tcp");
        assert_eq!(r.target_port(), 6000);
        assert_eq!(r.transport(), Transport::Tcp);
        assert_eq!(r.proxy, None);
    }

    // seed 001, example 3: "through a SIP proxy using UDP on port 5060:
    // sip.example.com;proxyAddress=proxy.example.com"
    #[test]
    fn seed_001_example_3_proxy_with_default_port() {
        let r = route("sip.example.com;proxyAddress=proxy.example.com");
        assert_eq!(r.transport(), Transport::Udp);
        assert_eq!(r.next_hop(), (&domain("proxy.example.com"), 5060));
        assert_eq!(
            r.target.host,
            domain("sip.example.com"),
            "R-URI host stays the target"
        );
    }

    // seed 001, example 4: "through a SIP proxy using TCP on port 6000:
    // sip.example.com;transport=tcp;proxyAddress=proxy.example.com:6000"
    #[test]
    fn seed_001_example_4_proxy_port_and_tcp() {
        let r = route("sip.example.com;transport=tcp;proxyAddress=proxy.example.com:6000");
        assert_eq!(r.transport(), Transport::Tcp);
        assert_eq!(r.target_port(), 5060);
        assert_eq!(r.next_hop(), (&domain("proxy.example.com"), 6000));
    }

    #[test]
    fn ip_literals_including_bracketed_ipv6() {
        let r = route("[2001:db8::1]:5070;proxyAddress=[::1]:5091");
        assert_eq!(
            r.target.host,
            Host::Ipv6("2001:db8::1".parse::<Ipv6Addr>().expect("v6"))
        );
        assert_eq!(r.next_hop(), (&Host::Ipv6(Ipv6Addr::LOCALHOST), 5091));
        let r = route("127.0.0.1:5090;transport=udp;proxyAddress=127.0.0.1:5091");
        assert_eq!(r.target.host, Host::Ipv4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn parameters_in_either_order_and_any_case() {
        let r = route("h.example;ProxyAddress=p.example;TRANSPORT=TCP");
        assert_eq!(r.transport(), Transport::Tcp);
        assert_eq!(
            r.to_string(),
            "h.example;transport=tcp;proxyAddress=p.example"
        );
    }

    #[test]
    fn errors_name_the_bad_part() {
        for (text, part) in [
            ("", RoutePart::Route),
            ("sip.example.com ;transport=tcp", RoutePart::Route),
            ("-bad-.com", RoutePart::Host),
            ("2001:db8::1", RoutePart::Host),
            ("sip.example.com:0", RoutePart::Port),
            ("sip.example.com:99999", RoutePart::Port),
            ("sip.example.com;transport=tls", RoutePart::Transport),
            (
                "sip.example.com;transport=udp;transport=tcp",
                RoutePart::Transport,
            ),
            ("sip.example.com;proxyAddress=", RoutePart::ProxyAddress),
            (
                "sip.example.com;proxyAddress=p.example:0",
                RoutePart::ProxyAddress,
            ),
            (
                "sip.example.com;proxyAddress=a;proxyAddress=b",
                RoutePart::ProxyAddress,
            ),
            ("sip.example.com;lr", RoutePart::Parameter),
            ("sip.example.com;", RoutePart::Parameter),
            ("sip.example.com;maddr=1.2.3.4", RoutePart::Parameter),
        ] {
            let err = text.parse::<Route>().expect_err(text);
            assert_eq!(err.part, part, "{text}: {err}");
        }
    }

    fn host_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}",
            any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
            any::<u128>().prop_map(|a| format!("[{}]", Ipv6Addr::from(a))),
        ]
    }

    fn host_port_strategy() -> impl Strategy<Value = String> {
        (host_strategy(), proptest::option::of(1u16..)).prop_map(|(h, p)| match p {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    }

    fn route_strategy() -> impl Strategy<Value = String> {
        (
            host_port_strategy(),
            proptest::option::of(prop_oneof![Just("udp"), Just("tcp")]),
            proptest::option::of(host_port_strategy()),
        )
            .prop_map(|(target, transport, proxy)| {
                let mut s = target;
                if let Some(t) = transport {
                    s.push_str(";transport=");
                    s.push_str(t);
                }
                if let Some(p) = proxy {
                    s.push_str(";proxyAddress=");
                    s.push_str(&p);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn canonical_routes_print_back_identically(text in route_strategy()) {
            let parsed: Route = text.parse().map_err(|e: RouteError| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(parsed.to_string(), text);
        }

        #[test]
        fn print_then_parse_is_identity(text in route_strategy()) {
            let parsed: Route = text.parse().map_err(|e: RouteError| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.to_string().parse::<Route>(), Ok(parsed));
        }

        #[test]
        fn arbitrary_input_never_panics(text in "\\PC{0,60}") {
            let _ = text.parse::<Route>();
        }
    }
}
