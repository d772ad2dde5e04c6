//! Forwarding by editing the received bytes (RFC 3261 section 16.6), the way Kamailio applies
//! lumps: the start line (with a new Request-URI for initial requests), then our Via, the
//! received Vias, then for initial requests our Record-Route and (for a proxy route) Route lines,
//! then every other received header line as it was except Max-Forwards (decremented), the Route element naming the ingress (when
//! consumed, RFC 3261 section 16.4) and any client-sent X-Dest-User (a routing identity only the
//! ingress may set), then X-Dest-User when the agent has one, then the empty line and the body,
//! byte for byte.

use std::net::SocketAddr;

use super::Transport;
use super::check::Request;
use super::head::split_list;

/// The Record-Route of the ingress at `local` on an initial INVITE received over `caller` and
/// forwarded over `agent`. When the two differ it is doubled (RFC 5658): the top entry is the
/// address the agent's in-dialog requests come to, the bottom one the address the caller's come
/// to, so neither side switches transport.
pub fn record_route(local: SocketAddr, caller: Transport, agent: Transport) -> String {
    let entry = |transport| match transport {
        Transport::Udp => format!("<sip:{local};lr>"),
        Transport::Tcp => format!("<sip:{local};transport=tcp;lr>"),
    };
    if caller == agent {
        entry(agent)
    } else {
        format!("{}, {}", entry(agent), entry(caller))
    }
}

/// Max-Forwards for requests that carry none (RFC 3261 section 8.1.1.6).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

/// What the ingress changes in a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edits {
    /// The new Request-URI (the agent URI); `None` keeps the received one.
    pub request_uri: Option<String>,
    /// Our Via value, e.g. `SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK...`.
    pub via: String,
    /// Our Record-Route value, e.g. `<sip:127.0.0.1:5060;lr>`, for initial requests.
    pub record_route: Option<String>,
    /// Header fields the admission policy adds, names canonical. A `Route` is pushed on top
    /// of the received ones (the agent's proxy); any other field replaces the received fields
    /// of its name. A received `X-Dest-User` never passes: only the policy sets it.
    pub headers: Vec<(String, String)>,
    /// How many leading Route elements to remove (the caller checked that they name the
    /// ingress: one, or two after a double Record-Route).
    pub consume_route: usize,
    /// Where the request came from: stamped on the sender's Via as `received` and `rport`
    /// (RFC 3261 section 18.2.1, RFC 3581, as Kamailio's `force_rport()`), so responses go back
    /// to the address, and over TCP the connection, the request came from.
    pub source: Option<SocketAddr>,
}

/// The sender's via-parm with `received` and `rport` set to `source`.
fn stamp(via: &str, source: SocketAddr) -> String {
    let mut parts = via.split(';');
    let mut out = parts.next().unwrap_or_default().trim_end().to_owned();
    for param in parts {
        let name = param.split('=').next().unwrap_or_default().trim();
        if !(name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport")) {
            out.push(';');
            out.push_str(param.trim());
        }
    }
    out.push_str(&format!(
        ";received={};rport={}",
        source.ip(),
        source.port()
    ));
    out
}

/// Builds the forwarded request from the received `message`.
pub fn forward(message: &[u8], request: &Request, edits: &Edits) -> Vec<u8> {
    let head = &request.head;
    let mut out = Vec::with_capacity(message.len() + 256);
    let request_uri = edits.request_uri.as_deref().unwrap_or(&request.uri);
    out.extend_from_slice(format!("{} {request_uri} SIP/2.0\r\n", request.method).as_bytes());
    out.extend_from_slice(format!("Via: {}\r\n", edits.via).as_bytes());
    // Record-Route and Route go after the received Vias, which stay together at the top.
    let mut routing = String::new();
    if let Some(record_route) = &edits.record_route {
        routing.push_str(&format!("Record-Route: {record_route}\r\n"));
    }
    for (name, value) in &edits.headers {
        if name == "Route" {
            routing.push_str(&format!("Route: {value}\r\n"));
        }
    }
    let replaced = |name: &str| {
        name == "X-Dest-User"
            || edits
                .headers
                .iter()
                .any(|(added, _)| added != "Route" && added == name)
    };
    let mut routing = Some(routing);
    let mut saw_max_forwards = false;
    let mut route_to_consume = edits.consume_route;
    let mut sender_via = edits.source;
    for field in &head.fields {
        if field.name != "Via"
            && let Some(routing) = routing.take()
        {
            out.extend_from_slice(routing.as_bytes());
        }
        if field.name == "Via"
            && let Some(source) = sender_via.take()
        {
            let mut vias = split_list(&field.value);
            if let Some(first) = vias.first_mut() {
                *first = stamp(first, source);
            }
            out.extend_from_slice(format!("Via: {}\r\n", vias.join(", ")).as_bytes());
        } else if field.name == "Route" && route_to_consume > 0 {
            let elements = split_list(&field.value);
            let consumed = route_to_consume.min(elements.len());
            route_to_consume -= consumed;
            if elements.len() > consumed {
                out.extend_from_slice(
                    format!("Route: {}\r\n", elements[consumed..].join(", ")).as_bytes(),
                );
            }
        } else if field.name == "Max-Forwards" {
            saw_max_forwards = true;
            let hops = field
                .value
                .parse::<u32>()
                .unwrap_or(DEFAULT_MAX_FORWARDS)
                .min(255);
            out.extend_from_slice(
                format!("Max-Forwards: {}\r\n", hops.saturating_sub(1)).as_bytes(),
            );
        } else if !replaced(&field.name) {
            out.extend_from_slice(&message[field.span.clone()]);
            if !message[..field.span.end].ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    if let Some(routing) = routing {
        out.extend_from_slice(routing.as_bytes());
    }
    if !saw_max_forwards {
        out.extend_from_slice(format!("Max-Forwards: {}\r\n", DEFAULT_MAX_FORWARDS - 1).as_bytes());
    }
    for (name, value) in edits.headers.iter().filter(|(name, _)| name != "Route") {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&message[request.frame.body_start..request.frame.len()]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::check::{Verdict, classify_datagram};
    use crate::sip::frame::frame_datagram;

    const INVITE: &[u8] = b"INVITE sip:sales@127.0.0.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:+15551230000@10.0.0.1>;tag=a\r\n\
        To: <sip:sales@127.0.0.1>\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 INVITE\r\n\
        X-Custom:   odd   spacing  \r\n\
        NewFangled: folded\r\n  continuation\r\n\
        X-Dest-User: forged\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 10\r\n\
        \r\n\
        v=0\r\n\x00\x01\xff\r\n";

    fn request() -> Request {
        match classify_datagram(INVITE) {
            Verdict::Request(request) => request,
            other => panic!("{other:?}"),
        }
    }

    fn edits() -> Edits {
        Edits {
            request_uri: Some("sip:sales@127.0.0.1:5090".into()),
            via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtg1".into(),
            record_route: Some("<sip:127.0.0.1:5060;transport=udp;lr>".into()),
            headers: vec![("X-Dest-User".into(), "sales.desk".into())],
            consume_route: 0,
            source: None,
        }
    }

    #[test]
    fn forwarded_requests_keep_unknown_fields_and_the_body_byte_identical() {
        let out = forward(INVITE, &request(), &edits());
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(
            "INVITE sip:sales@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtg1\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1\r\nRecord-Route: <sip:127.0.0.1:5060;transport=udp;lr>\r\nMax-Forwards: 69\r\n"
        ));
        assert!(text.contains("X-Custom:   odd   spacing  \r\n"));
        assert!(text.contains("NewFangled: folded\r\n  continuation\r\n"));
        assert!(text.contains("Max-Forwards: 69\r\n"));
        assert!(!text.contains("forged"), "client X-Dest-User removed");
        assert!(text.contains("X-Dest-User: sales.desk\r\n\r\n"));
        assert!(out.ends_with(b"\r\n\r\nv=0\r\n\x00\x01\xff\r\n"));
        let frame = frame_datagram(&out).expect("the result frames");
        assert_eq!(frame.body_len, 10);
    }

    #[test]
    fn the_senders_via_is_stamped_with_received_and_rport() {
        let edits = Edits {
            source: Some("192.0.2.7:40123".parse().expect("addr")),
            ..edits()
        };
        let text = String::from_utf8_lossy(&forward(INVITE, &request(), &edits)).into_owned();
        assert!(
            text.contains(
                "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;received=192.0.2.7;rport=40123\r\n"
            ),
            "{text}"
        );
        assert_eq!(
            stamp(
                "SIP/2.0/TCP h:5060;rport;branch=z9hG4bK1;received=1.1.1.1",
                "[::1]:5".parse().expect("addr")
            ),
            "SIP/2.0/TCP h:5060;branch=z9hG4bK1;received=::1;rport=5"
        );
    }

    #[test]
    fn in_dialog_requests_consume_the_route_naming_the_ingress() {
        let bye = b"BYE sip:agent@127.0.0.1:5090 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-2\r\n\
            Route: <sip:127.0.0.1:5060;lr>, <sip:next.example;lr>\r\n\
            From: <sip:+15551230000@10.0.0.1>;tag=a\r\n\
            To: <sip:sales@127.0.0.1>;tag=b\r\n\
            Call-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let Verdict::Request(request) = classify_datagram(bye) else {
            panic!("not a request")
        };
        let edits = Edits {
            request_uri: None,
            record_route: None,
            headers: Vec::new(),
            consume_route: 1,
            ..edits()
        };
        let text = String::from_utf8_lossy(&forward(bye, &request, &edits)).into_owned();
        assert!(text.starts_with(
            "BYE sip:agent@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060"
        ));
        assert!(text.contains("Route: <sip:next.example;lr>\r\n"));
        assert!(!text.contains("Record-Route"));
    }

    #[test]
    fn both_routes_of_a_double_record_route_are_consumed_across_fields() {
        for routes in [
            "Route: <sip:127.0.0.1:5060;transport=tcp;lr>, <sip:127.0.0.1:5060;lr>, <sip:next.example;lr>\r\n",
            "Route: <sip:127.0.0.1:5060;transport=tcp;lr>\r\nRoute: <sip:127.0.0.1:5060;lr>, <sip:next.example;lr>\r\n",
        ] {
            let bye = format!(
                "BYE sip:agent@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK-3\r\n\
                 {routes}From: <sip:+15551230000@10.0.0.1>;tag=a\r\nTo: <sip:sales@127.0.0.1>;tag=b\r\n\
                 Call-ID: c1\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
            );
            let Verdict::Request(request) = classify_datagram(bye.as_bytes()) else {
                panic!("not a request")
            };
            let edits = Edits {
                request_uri: None,
                record_route: None,
                headers: Vec::new(),
                consume_route: 2,
                ..edits()
            };
            let text =
                String::from_utf8_lossy(&forward(bye.as_bytes(), &request, &edits)).into_owned();
            let remaining: Vec<&str> = text.lines().filter(|l| l.starts_with("Route:")).collect();
            assert_eq!(remaining, ["Route: <sip:next.example;lr>"], "{text}");
        }
    }

    #[test]
    fn a_proxy_route_is_pushed_and_missing_max_forwards_is_added() {
        let without: Vec<u8> = String::from_utf8_lossy(INVITE)
            .replace("Max-Forwards: 70\r\n", "")
            .into_bytes();
        let Verdict::Request(request) = classify_datagram(&without) else {
            panic!("not a request")
        };
        let mut edits = edits();
        edits.headers = vec![("Route".into(), "<sip:127.0.0.1:5091;lr>".into())];
        let text = String::from_utf8_lossy(&forward(&without, &request, &edits)).into_owned();
        assert!(text.contains("Route: <sip:127.0.0.1:5091;lr>\r\n"));
        assert!(text.contains("Max-Forwards: 69\r\n"));
        assert!(
            !text.contains("X-Dest-User"),
            "a received one is removed even so"
        );
    }

    #[test]
    fn an_added_field_replaces_received_fields_of_its_name() {
        let mut edits = edits();
        edits
            .headers
            .push(("X-Custom".into(), "from the policy".into()));
        let text = String::from_utf8_lossy(&forward(INVITE, &request(), &edits)).into_owned();
        assert!(!text.contains("odd   spacing"), "{text}");
        assert!(text.contains("X-Custom: from the policy\r\n"), "{text}");
        assert!(text.contains("NewFangled: folded"), "{text}");
    }
}
