//! Responses built by the ingress itself (RFC 3261 section 8.2.6): the status line, every Via of
//! the request in order, From, To (with a tag, except on 100), Call-ID, CSeq, the extra fields a
//! status needs, and an empty body.

use std::net::{IpAddr, SocketAddr};

use super::frame::frame_datagram;
use super::head::{self, Head, split_list};
use super::via::sent_by;

/// Where a response goes over a new connection when the connection its request came on has
/// closed (RFC 3261 section 18.2.2): for a response whose top Via names TCP, the address the
/// request came from (`received`) at the Via's sent-by port, 5060 without one. None for any
/// other message.
pub fn reconnect_target(message: &[u8], received: IpAddr) -> Option<SocketAddr> {
    // Every response to a UDP caller comes here: most are told apart without parsing.
    let names_tcp = message
        .windows(4)
        .any(|window| window.eq_ignore_ascii_case(b"/TCP"));
    if !message.starts_with(b"SIP/2.0 ") || !names_tcp {
        return None;
    }
    let frame = frame_datagram(message).ok()?;
    let head = head::parse(&message[..frame.head_len]).ok()?;
    let via = split_list(&head.first("Via")?.value).into_iter().next()?;
    let protocol = via.split_whitespace().next()?;
    if !protocol.eq_ignore_ascii_case("SIP/2.0/TCP") {
        return None;
    }
    Some(SocketAddr::new(received, sent_by(&via)?.port_or(5060)))
}

/// The first `frame_len` bytes of `response` without its top Via element: `first` is its first
/// Via field, whose elements are `elements` (RFC 3261 section 16.7 step 3).
pub fn without_top_via(
    response: &[u8],
    first: &head::Field,
    elements: &[String],
    frame_len: usize,
) -> Vec<u8> {
    let mut relayed = Vec::with_capacity(response.len());
    relayed.extend_from_slice(&response[..first.span.start]);
    if elements.len() > 1 {
        relayed.extend_from_slice(format!("Via: {}\r\n", elements[1..].join(", ")).as_bytes());
    }
    relayed.extend_from_slice(&response[first.span.end..frame_len]);
    relayed
}

/// The reason phrase of the statuses the ingress sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

/// `response` with its status line replaced by `code`'s: how a proxy turns the 503 it got into
/// the 500 it sends on (RFC 3261 section 16.7 step 6). The line ends where the head parser ends
/// it, at CRLF or a bare LF. A message without a line end comes back as it was.
pub fn with_status(response: &[u8], code: u16) -> Vec<u8> {
    let Some(lf) = response.iter().position(|&b| b == b'\n') else {
        return response.to_vec();
    };
    let line_end = match lf.checked_sub(1) {
        Some(cr) if response[cr] == b'\r' => cr,
        _ => lf,
    };
    let mut out = format!("SIP/2.0 {code} {}", reason_phrase(code)).into_bytes();
    out.extend_from_slice(&response[line_end..]);
    out
}

/// A To tag that is the same for every retransmission of one request, so stateless answers to
/// retransmissions agree (FNV-1a over Call-ID, From and CSeq).
pub fn to_tag(head: &Head) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for name in ["Call-ID", "From", "CSeq"] {
        let value = head
            .first(name)
            .map(|f| f.value.as_bytes())
            .unwrap_or_default();
        for b in value.iter().chain(b"\n") {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("tg{hash:016x}")
}

fn has_tag(to: &str) -> bool {
    let params = match to.rfind('>') {
        Some(end) => &to[end + 1..],
        None => to.split_once(';').map_or("", |(_, p)| p),
    };
    params
        .split(';')
        .filter_map(|p| p.split_once('=').map(|(n, _)| n.trim()))
        .any(|n| n.eq_ignore_ascii_case("tag"))
}

/// The response `code` to the request whose header section is `head`, with `extra` fields.
pub fn build(head: &Head, code: u16, extra: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {code} {}\r\n", reason_phrase(code));
    for via in head.all("Via") {
        out.push_str(&format!("Via: {}\r\n", via.value));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let Some(field) = head.first(name) else {
            continue;
        };
        if name == "To" && code > 100 && !has_tag(&field.value) {
            out.push_str(&format!("To: {};tag={}\r\n", field.value, to_tag(head)));
        } else {
            out.push_str(&format!("{name}: {}\r\n", field.value));
        }
    }
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Server: trunkguard\r\nContent-Length: 0\r\n\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::head;

    const REQUEST: &[u8] = b"INVITE sip:sales@127.0.0.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
        Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n\
        f: <sip:+15551230000@pbx>;tag=abc\r\n\
        t: <sip:sales@127.0.0.1>\r\n\
        i: call-1\r\n\
        CSeq: 1 INVITE\r\n";

    fn parsed() -> Head {
        head::parse(REQUEST).expect("parses")
    }

    #[test]
    fn a_new_status_replaces_the_status_line_and_keeps_the_rest() {
        let agent = b"SIP/2.0 503 Busy Here Today\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n\
            Retry-After: 30\r\nContent-Length: 0\r\n\r\n";
        let sent = with_status(agent, 500);
        assert_eq!(
            sent,
            b"SIP/2.0 500 Server Internal Error\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n\
            Retry-After: 30\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(with_status(b"SIP/2.0 503", 500), b"SIP/2.0 503");
    }

    #[test]
    fn a_status_line_ended_by_a_bare_lf_is_replaced_alone() {
        let agent = b"SIP/2.0 503 Reply\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n\r\n";
        assert_eq!(
            with_status(agent, 500),
            b"SIP/2.0 500 Server Internal Error\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n\r\n"
        );
    }

    #[test]
    fn responses_copy_the_dialog_fields_and_every_via_in_order() {
        let text = String::from_utf8(build(&parsed(), 404, &[])).expect("utf8");
        assert!(text.starts_with("SIP/2.0 404 Not Found\r\n"));
        let via1 = text.find("Via: SIP/2.0/UDP 10.0.0.1").expect("first via");
        let via2 = text.find("Via: SIP/2.0/UDP 10.0.0.2").expect("second via");
        assert!(via1 < via2);
        assert!(text.contains("From: <sip:+15551230000@pbx>;tag=abc\r\n"));
        assert!(text.contains(&format!(
            "To: <sip:sales@127.0.0.1>;tag={}\r\n",
            to_tag(&parsed())
        )));
        assert!(text.contains("Call-ID: call-1\r\nCSeq: 1 INVITE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn trying_has_no_to_tag_and_existing_tags_are_kept() {
        let text = String::from_utf8(build(&parsed(), 100, &[])).expect("utf8");
        assert!(text.contains("To: <sip:sales@127.0.0.1>\r\n"));
        let tagged =
            head::parse(b"BYE sip:a@b SIP/2.0\r\nTo: <sip:a@b>;tag=x\r\n").expect("parses");
        let text = String::from_utf8(build(&tagged, 481, &[])).expect("utf8");
        assert!(text.contains("To: <sip:a@b>;tag=x\r\n"));
    }

    #[test]
    fn tags_are_stable_across_retransmissions() {
        assert_eq!(to_tag(&parsed()), to_tag(&parsed()));
        let other = head::parse(
            &REQUEST
                .to_vec()
                .iter()
                .map(|b| if *b == b'1' { b'2' } else { *b })
                .collect::<Vec<u8>>(),
        )
        .expect("parses");
        assert_ne!(to_tag(&parsed()), to_tag(&other));
    }

    #[test]
    fn a_response_over_tcp_reconnects_to_the_received_address_at_the_sent_by_port() {
        let received: IpAddr = "192.0.2.9".parse().expect("ip");
        let response = |via: &str| {
            format!("SIP/2.0 200 OK\r\nVia: {via}\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n")
        };
        let target = |via: &str| reconnect_target(response(via).as_bytes(), received);
        assert_eq!(
            target(
                "SIP/2.0/TCP pbx.example.com:5070;branch=z9hG4bK1;received=192.0.2.9;rport=40001"
            ),
            Some("192.0.2.9:5070".parse().expect("addr"))
        );
        assert_eq!(
            target("SIP/2.0/tcp pbx.example.com;branch=z9hG4bK1, SIP/2.0/UDP a:1;branch=z9hG4bK2"),
            Some("192.0.2.9:5060".parse().expect("addr"))
        );
        assert_eq!(
            target("SIP/2.0/UDP pbx.example.com:5070;branch=z9hG4bK1"),
            None
        );
        let request = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h:5070;branch=z9hG4bK1\r\n\r\n";
        assert_eq!(reconnect_target(request, received), None);
    }

    #[test]
    fn extra_fields_are_included() {
        let extra = [("Retry-After".to_owned(), "5".to_owned())];
        let text = String::from_utf8(build(&parsed(), 503, &extra)).expect("utf8");
        assert!(text.contains("Retry-After: 5\r\n"));
    }
}
