//! Via header fields (RFC 3261 sections 8.1.1.7, 18.2.2, 20.42; RFC 3581): the sent-by of a
//! via-parm, where a response goes, and the Via the ingress puts on what it sends.

use std::net::{IpAddr, SocketAddr};

use policy::{Host, HostPort};

use super::{Transport, uri};

/// The sent-by of one via-parm (`SIP / 2.0 / UDP host:port;params`).
pub fn sent_by(via: &str) -> Option<HostPort> {
    let protocol_end = via.rfind('/')?;
    let after = via[protocol_end + 1..].trim_start();
    let transport_end = after.find(char::is_whitespace)?;
    let sent_by = after[transport_end..].trim_start();
    let sent_by = sent_by.split(';').next()?.trim();
    sent_by.parse().ok()
}

/// The socket address of `hp` when its host is an IP address, at `default_port` without a
/// port; None for a host name.
pub fn socket_of(hp: &HostPort, default_port: u16) -> Option<SocketAddr> {
    let ip = match &hp.host {
        Host::Ipv4(a) => IpAddr::V4(*a),
        Host::Ipv6(a) => IpAddr::V6(*a),
        Host::Domain(_) => return None,
    };
    Some(SocketAddr::new(ip, hp.port_or(default_port)))
}

/// The address a response goes to, from a via-parm: `received`/`rport` when present
/// (RFC 3261 section 18.2.2, RFC 3581), else the sent-by.
pub fn response_target(via: &str) -> Option<SocketAddr> {
    let sent_by = sent_by(via)?;
    let host = uri::param(via, "received")
        .and_then(|r| r.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .map(|ip| match ip {
            IpAddr::V4(a) => Host::Ipv4(a),
            IpAddr::V6(a) => Host::Ipv6(a),
        })
        .unwrap_or(sent_by.host);
    let port = uri::param(via, "rport")
        .and_then(|p| p.parse().ok())
        .or(sent_by.port);
    socket_of(&HostPort { host, port }, 5060)
}

/// The Via of the ingress at `local` on a request it sends over `transport`.
pub fn ours(local: SocketAddr, transport: Transport, branch: &str) -> String {
    let protocol = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    format!("SIP/2.0/{protocol} {local};branch={branch}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_goes_to_received_and_rport_when_the_via_has_them() {
        let via = "SIP/2.0/UDP pbx.example:5070;branch=z9hG4bK1;received=192.0.2.1;rport=40000";
        assert_eq!(response_target(via), "192.0.2.1:40000".parse().ok());
        let via = "SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1";
        assert_eq!(response_target(via), "[2001:db8::1]:5060".parse().ok());
        assert_eq!(
            response_target("SIP/2.0/UDP pbx.example;branch=z9hG4bK1"),
            None
        );
    }

    #[test]
    fn our_via_names_the_transport_it_leaves_on() {
        let local = "127.0.0.1:5060".parse().expect("addr");
        assert_eq!(
            ours(local, Transport::Tcp, "z9hG4bKx"),
            "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx"
        );
    }
}
