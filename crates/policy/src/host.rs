//! Hosts and `host[:port]` pairs as they appear in SIP routes, proxies and servers: a domain name,
//! an IPv4 address or a bracketed IPv6 reference (RFC 3261 section 25.1 `host` / `hostport`).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::json::FromJsonText;

/// The longest domain name (RFC 1035 section 2.3.4, without the root label's dot).
const MAX_DOMAIN_LEN: usize = 253;
/// The longest domain label (RFC 1035 section 2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A SIP host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, resolved by SIP SRV or A records (seed 001); kept as written.
    Domain(String),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address, written in brackets.
    Ipv6(Ipv6Addr),
}

/// Why a host is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// Nothing was given.
    Empty,
    /// An IPv6 address was written without brackets, which makes `:port` ambiguous.
    UnbracketedIpv6,
    /// Text inside `[...]` is not an IPv6 address.
    BadIpv6,
    /// The text is neither an address nor a well-formed domain name; the string says why.
    BadDomain(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Empty => f.write_str("host is empty"),
            HostError::UnbracketedIpv6 => {
                f.write_str("an IPv6 address must be enclosed in brackets, e.g. [2001:db8::1]")
            }
            HostError::BadIpv6 => f.write_str("the text in brackets is not an IPv6 address"),
            HostError::BadDomain(why) => write!(f, "not a valid domain name or IP address: {why}"),
        }
    }
}

impl std::error::Error for HostError {}

impl FromStr for Host {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(HostError::BadIpv6)?;
            return inner
                .parse::<Ipv6Addr>()
                .map(Host::Ipv6)
                .map_err(|_| HostError::BadIpv6);
        }
        if s.contains(':') {
            return Err(if s.parse::<Ipv6Addr>().is_ok() {
                HostError::UnbracketedIpv6
            } else {
                HostError::BadDomain("':' is not allowed in a host name".to_owned())
            });
        }
        if let Ok(v4) = s.parse::<Ipv4Addr>() {
            return Ok(Host::Ipv4(v4));
        }
        check_domain(s).map_err(HostError::BadDomain)?;
        Ok(Host::Domain(s.to_owned()))
    }
}

fn check_domain(name: &str) -> Result<(), String> {
    if name.len() > MAX_DOMAIN_LEN {
        return Err(format!("longer than {MAX_DOMAIN_LEN} characters"));
    }
    let mut labels = name.split('.').peekable();
    while let Some(label) = labels.next() {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading or trailing dot)".to_owned());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!("label longer than {MAX_LABEL_LEN} characters"));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("character {bad:?} is not allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label must not start or end with '-'".to_owned());
        }
        // RFC 1123 2.1 / RFC 3696 2: a top-level label is never all digits, so "1.2.3.999" is a
        // mistyped address, not a name.
        if labels.peek().is_none() && label.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the last label is all digits (a mistyped IPv4 address?)".to_owned());
        }
    }
    Ok(())
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(name) => f.write_str(name),
            Host::Ipv4(addr) => write!(f, "{addr}"),
            Host::Ipv6(addr) => write!(f, "[{addr}]"),
        }
    }
}

impl FromJsonText for Host {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e: HostError| e.to_string())
    }
}

impl serde::Serialize for Host {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A host with an optional port. The port is kept optional (rather than defaulted) so that
/// printing gives back what was written; [`HostPort::port_or`] applies a default.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host.
    pub host: Host,
    /// The port, when one was written.
    pub port: Option<u16>,
}

/// Why a `host[:port]` is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPortError {
    /// The host part is wrong.
    Host(HostError),
    /// The port part is not a number from 1 to 65535.
    Port(String),
}

impl fmt::Display for HostPortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPortError::Host(e) => e.fmt(f),
            HostPortError::Port(text) => {
                write!(f, "port {text:?} is not a number from 1 to 65535")
            }
        }
    }
}

impl std::error::Error for HostPortError {}

impl HostPort {
    /// The port, or `default` when none was written.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = if s.starts_with('[') {
            match s.find(']') {
                Some(end) => {
                    let (host, rest) = s.split_at(end + 1);
                    match rest.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None if rest.is_empty() => (host, None),
                        None => return Err(HostPortError::Host(HostError::BadIpv6)),
                    }
                }
                None => return Err(HostPortError::Host(HostError::BadIpv6)),
            }
        } else if s.matches(':').count() > 1 {
            // More than one colon outside brackets can only be a bare IPv6 address.
            return Err(HostPortError::Host(HostError::UnbracketedIpv6));
        } else {
            match s.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        let host = host.parse().map_err(HostPortError::Host)?;
        let port = port.map(parse_port).transpose()?;
        Ok(HostPort { host, port })
    }
}

fn parse_port(text: &str) -> Result<u16, HostPortError> {
    let valid = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(port) if valid && port != 0 => Ok(port),
        _ => Err(HostPortError::Port(text.to_owned())),
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

impl FromJsonText for HostPort {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e: HostPortError| e.to_string())
    }
}

impl serde::Serialize for HostPort {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_addresses_parse() {
        assert_eq!(
            "sip.example.com".parse(),
            Ok(Host::Domain("sip.example.com".into()))
        );
        assert_eq!(
            "10.0.0.1".parse(),
            Ok(Host::Ipv4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!("[::1]".parse(), Ok(Host::Ipv6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn bad_hosts_say_why() {
        assert_eq!("".parse::<Host>(), Err(HostError::Empty));
        assert_eq!("::1".parse::<Host>(), Err(HostError::UnbracketedIpv6));
        assert_eq!("[zz]".parse::<Host>(), Err(HostError::BadIpv6));
        assert!(matches!(
            "a..b".parse::<Host>(),
            Err(HostError::BadDomain(_))
        ));
        assert!(matches!(
            "-a.com".parse::<Host>(),
            Err(HostError::BadDomain(_))
        ));
        assert!(matches!(
            "a_b.com".parse::<Host>(),
            Err(HostError::BadDomain(_))
        ));
        assert!(matches!(
            "1.2.3.999".parse::<Host>(),
            Err(HostError::BadDomain(_))
        ));
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(matches!(
            long_label.parse::<Host>(),
            Err(HostError::BadDomain(_))
        ));
    }

    #[test]
    fn host_port_keeps_what_was_written() {
        for text in [
            "example.com",
            "example.com:6000",
            "[2001:db8::1]:5062",
            "[::1]",
            "1.2.3.4:1",
        ] {
            let hp: HostPort = text.parse().expect(text);
            assert_eq!(hp.to_string(), text);
        }
        let hp: HostPort = "example.com".parse().expect("valid");
        assert_eq!(hp.port_or(5060), 5060);
    }

    #[test]
    fn bad_ports_are_named() {
        for text in ["h:0", "h:65536", "h:", "h:+5", "h:5060x", "h:000005060"] {
            assert!(
                matches!(text.parse::<HostPort>(), Err(HostPortError::Port(_))),
                "{text}"
            );
        }
        assert!(matches!(
            "2001:db8::1:5060".parse::<HostPort>(),
            Err(HostPortError::Host(HostError::UnbracketedIpv6))
        ));
    }
}
