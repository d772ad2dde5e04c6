//! Forwarding by editing the received bytes (RFC 3261 section 16.6), the way Kamailio applies
//! lumps: the new start line, then our Via, Record-Route and (for a proxy route) Route lines, then
//! every received header line as it was except Max-Forwards (decremented) and any client-sent
//! X-Dest-User (a routing identity only the ingress may set), then X-Dest-User when the agent
//! has one, then the empty line and the body, byte for byte.

use super::check::Request;

/// Max-Forwards for requests that carry none (RFC 3261 section 8.1.1.6).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

/// What the ingress changes in a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edits {
    /// The new Request-URI (the agent URI).
    pub request_uri: String,
    /// Our Via value, e.g. `SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK...`.
    pub via: String,
    /// Our Record-Route value, e.g. `<sip:127.0.0.1:5060;transport=udp;lr>`.
    pub record_route: String,
    /// A Route value to push when the agent is reached through a proxy.
    pub route: Option<String>,
    /// The X-Dest-User value, when the agent has one.
    pub dest_user: Option<String>,
}

/// Builds the forwarded request from the received `message`.
pub fn forward(message: &[u8], request: &Request, edits: &Edits) -> Vec<u8> {
    let head = &request.head;
    let mut out = Vec::with_capacity(message.len() + 256);
    out.extend_from_slice(
        format!("{} {} SIP/2.0\r\n", request.method, edits.request_uri).as_bytes(),
    );
    out.extend_from_slice(format!("Via: {}\r\n", edits.via).as_bytes());
    out.extend_from_slice(format!("Record-Route: {}\r\n", edits.record_route).as_bytes());
    if let Some(route) = &edits.route {
        out.extend_from_slice(format!("Route: {route}\r\n").as_bytes());
    }
    let mut saw_max_forwards = false;
    for field in &head.fields {
        if field.name == "Max-Forwards" {
            saw_max_forwards = true;
            let hops = field
                .value
                .parse::<u32>()
                .unwrap_or(DEFAULT_MAX_FORWARDS)
                .min(255);
            out.extend_from_slice(
                format!("Max-Forwards: {}\r\n", hops.saturating_sub(1)).as_bytes(),
            );
        } else if field.name != "X-Dest-User" {
            out.extend_from_slice(&message[field.span.clone()]);
            if !message[..field.span.end].ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    if !saw_max_forwards {
        out.extend_from_slice(format!("Max-Forwards: {}\r\n", DEFAULT_MAX_FORWARDS - 1).as_bytes());
    }
    if let Some(user) = &edits.dest_user {
        out.extend_from_slice(format!("X-Dest-User: {user}\r\n").as_bytes());
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
            request_uri: "sip:sales@127.0.0.1:5090".into(),
            via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtg1".into(),
            record_route: "<sip:127.0.0.1:5060;transport=udp;lr>".into(),
            route: None,
            dest_user: Some("sales.desk".into()),
        }
    }

    #[test]
    fn forwarded_requests_keep_unknown_fields_and_the_body_byte_identical() {
        let out = forward(INVITE, &request(), &edits());
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(
            "INVITE sip:sales@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtg1\r\nRecord-Route: <sip:127.0.0.1:5060;transport=udp;lr>\r\nVia: SIP/2.0/UDP 10.0.0.1:5070"
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
    fn a_proxy_route_is_pushed_and_missing_max_forwards_is_added() {
        let without: Vec<u8> = String::from_utf8_lossy(INVITE)
            .replace("Max-Forwards: 70\r\n", "")
            .into_bytes();
        let Verdict::Request(request) = classify_datagram(&without) else {
            panic!("not a request")
        };
        let mut edits = edits();
        edits.route = Some("<sip:127.0.0.1:5091;lr>".into());
        edits.dest_user = None;
        let text = String::from_utf8_lossy(&forward(&without, &request, &edits)).into_owned();
        assert!(text.contains("Route: <sip:127.0.0.1:5091;lr>\r\n"));
        assert!(text.contains("Max-Forwards: 69\r\n"));
        assert!(!text.contains("X-Dest-User"));
    }
}
