//! The stateless checks a proxy makes before routing (RFC 3261 sections 8.2, 16.3 and 18.3).
//!
//! [`classify`] turns received bytes into a [`Verdict`]: a request that may be routed, a
//! response for the transaction layer, a status to answer with, or a silent drop. Choices where
//! RFC 4475 leaves room, made in the strict direction because this is an ingress facing the
//! internet:
//!
//! * Request-URIs in `<>`, with embedded or extra white space, or with escaped headers: 400.
//! * A top Via whose branch is only the `z9hG4bK` cookie (`badbranch`): 400. A missing branch
//!   or one without the cookie is an RFC 2543 client (`inv2543`, `longreq`, `wsinv`, which
//!   RFC 4475 counts as valid): accepted, and its transactions are matched the RFC 2543 way
//!   (RFC 3261 section 17.2.3).
//! * From/To with an unbalanced quote, a non-token unquoted display name or spaces inside
//!   `<>`: 400 rather than guessing.
//! * A Contact addr-spec carrying `?headers` outside `<>`: 400.
//! * An unknown method is not refused here; routing decides (404 for unknown URIs).
//! * Responses with an impossible status code or CSeq, without a field every message needs,
//!   with a malformed From or To, or whose next Via is a broadcast address, are dropped: the
//!   proxy repeats a response's To in the ACK it sends for a failure, and relays nothing it
//!   could not itself send.

use std::net::IpAddr;

use policy::HostPort;

use super::frame::{Frame, FrameError, frame_datagram};
use super::head::{self, Head, split_list};
use super::via::sent_by;

/// The header fields that may appear at most once.
const SINGLE_VALUED: [&str; 6] = [
    "Call-ID",
    "From",
    "To",
    "CSeq",
    "Max-Forwards",
    "Content-Type",
];
/// The header fields every request must have (RFC 3261 section 8.1.1).
const REQUIRED: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];
/// The magic cookie that starts RFC 3261 branch parameters.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// A status to answer a request with, without routing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status code.
    pub code: u16,
    /// What is wrong, for logs and the reason phrase's companion Warning.
    pub detail: String,
    /// Header fields the answer must carry (e.g. `Unsupported` with a 420).
    pub headers: Vec<(String, String)>,
    /// The request's header section, when it could be read (an answer needs its Vias).
    pub head: Option<Head>,
}

impl Rejection {
    fn new(code: u16, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            headers: Vec::new(),
            head: None,
        }
    }
}

/// A request that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method as received (unknown methods included).
    pub method: String,
    /// The Request-URI as received.
    pub uri: String,
    /// The header section.
    pub head: Head,
    /// Where the message is in the received bytes.
    pub frame: Frame,
}

/// A response that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, 100 to 699.
    pub code: u16,
    /// The header section.
    pub head: Head,
    /// Where the message is in the received bytes.
    pub frame: Frame,
}

/// What to do with received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Route it.
    Request(Request),
    /// Hand it to the transaction layer.
    Response(Response),
    /// Answer with this status (a request whose Via allows an answer).
    Reject(Rejection),
    /// Discard silently.
    Drop(String),
}

/// Classifies one UDP datagram.
pub fn classify_datagram(datagram: &[u8]) -> Verdict {
    match frame_datagram(datagram) {
        Ok(frame) => classify(&datagram[..frame.len()], frame),
        Err(error) => framing_error(datagram, &error),
    }
}

/// The verdict for bytes that could not be framed: a request is answered 400 when it is
/// recognisable as one, anything else is dropped.
pub fn framing_error(bytes: &[u8], error: &FrameError) -> Verdict {
    if bytes.starts_with(b"SIP/") || !bytes.contains(&b'\n') {
        Verdict::Drop(error.to_string())
    } else {
        Verdict::Reject(Rejection::new(400, error.to_string()))
    }
}

/// Classifies one framed message.
pub fn classify(message: &[u8], frame: Frame) -> Verdict {
    let head = match head::parse(&message[..frame.head_len]) {
        Ok(head) => head,
        Err(e) if message.starts_with(b"SIP/") => return Verdict::Drop(e.to_string()),
        Err(e) => return Verdict::Reject(Rejection::new(400, e.to_string())),
    };
    if head.start_line.starts_with("SIP/") {
        return classify_response(head, frame);
    }
    match check_request(&head) {
        Ok((method, uri)) => Verdict::Request(Request {
            method,
            uri,
            head,
            frame,
        }),
        Err(rejection) => Verdict::Reject(Rejection {
            head: Some(head),
            ..rejection
        }),
    }
}

fn classify_response(head: Head, frame: Frame) -> Verdict {
    let mut parts = head.start_line.splitn(3, ' ');
    let (version, code) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if version != "SIP/2.0" {
        return Verdict::Drop(format!("unsupported version {version}"));
    }
    let code = match code.parse::<u16>() {
        Ok(code) if code.to_string().len() == 3 && (100..=699).contains(&code) => code,
        _ => return Verdict::Drop(format!("bad status code {code:?}")),
    };
    if let Some(name) = REQUIRED.iter().find(|name| head.first(name).is_none()) {
        return Verdict::Drop(format!("a response without {name}"));
    }
    if let Err(e) = check_cseq(&head, None) {
        return Verdict::Drop(e.detail);
    }
    for name in ["From", "To"] {
        if let Some(Err(e)) = head.first(name).map(|f| check_name_addr(&f.value)) {
            return Verdict::Drop(format!("{name}: {e}"));
        }
    }
    let vias: Vec<String> = head.all("Via").flat_map(|f| split_list(&f.value)).collect();
    if vias.is_empty() {
        return Verdict::Drop("a response without Via".to_owned());
    }
    if let Some(next) = vias.get(1)
        && sent_by(next).is_some_and(|hp| is_broadcast(&hp))
    {
        return Verdict::Drop(BROADCAST_NEXT_VIA.to_owned());
    }
    Verdict::Response(Response { code, head, frame })
}

/// Why a response whose next Via is a broadcast address is dropped (RFC 4475 `bcast`).
pub const BROADCAST_NEXT_VIA: &str = "the next Via is a broadcast address";

fn is_broadcast(hp: &HostPort) -> bool {
    match &hp.host {
        policy::Host::Ipv4(a) => a.is_broadcast() || a.is_multicast() || a.is_unspecified(),
        policy::Host::Ipv6(a) => IpAddr::V6(*a).is_multicast() || a.is_unspecified(),
        policy::Host::Domain(_) => false,
    }
}

fn check_request(head: &Head) -> Result<(String, String), Rejection> {
    let bad = |detail: String| Rejection::new(400, detail);
    // Request-Line: Method SP Request-URI SP SIP-Version, single spaces (RFC 3261 section 7.1).
    let parts: Vec<&str> = head.start_line.split(' ').collect();
    if let [_, _, version] = parts.as_slice()
        && version.starts_with("SIP/")
        && *version != "SIP/2.0"
    {
        return Err(Rejection::new(505, format!("{version} is not supported")));
    }
    let [method, uri, version] = parts.as_slice() else {
        return Err(bad(
            "the Request-Line must be Method SP Request-URI SP SIP/2.0".to_owned(),
        ));
    };
    if *version != "SIP/2.0" || method.is_empty() || !method.bytes().all(head::is_token_char) {
        return Err(bad(
            "the Request-Line must be Method SP Request-URI SP SIP/2.0".to_owned(),
        ));
    }
    check_request_uri(uri)?;
    for name in REQUIRED {
        if head.first(name).is_none() {
            return Err(bad(format!("the {name} header field is missing")));
        }
    }
    for name in SINGLE_VALUED {
        if head.all(name).count() > 1 {
            return Err(bad(format!("{name} appears more than once")));
        }
    }
    check_cseq(head, Some(method))?;
    check_vias(head)?;
    for name in ["From", "To"] {
        if let Some(field) = head.first(name) {
            check_name_addr(&field.value).map_err(|e| bad(format!("{name}: {e}")))?;
        }
    }
    for field in head.all("Contact") {
        check_contact(&field.value).map_err(|e| bad(format!("Contact: {e}")))?;
    }
    if let Some(field) = head.first("Max-Forwards") {
        let value = field.value.trim();
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("Max-Forwards {value:?} is not a number")));
        }
        if value.bytes().all(|b| b == b'0') {
            return Err(Rejection::new(483, "Max-Forwards is 0"));
        }
    }
    let unsupported: Vec<String> = head
        .all("Proxy-Require")
        .flat_map(|f| split_list(&f.value))
        .collect();
    if !unsupported.is_empty() {
        let mut rejection = Rejection::new(
            420,
            "Proxy-Require names extensions this proxy does not support",
        );
        rejection
            .headers
            .push(("Unsupported".to_owned(), unsupported.join(", ")));
        return Err(rejection);
    }
    Ok(((*method).to_owned(), (*uri).to_owned()))
}

/// The scheme and host of a Request-URI (RFC 3261 section 19.1): only `sip` and `sips` are
/// served (416 for others); escaped headers are refused.
fn check_request_uri(uri: &str) -> Result<(), Rejection> {
    let bad = |detail: &str| Rejection::new(400, format!("Request-URI: {detail}"));
    if uri.starts_with('<') {
        return Err(bad("must not be enclosed in <>"));
    }
    let (scheme, rest) = uri.split_once(':').ok_or_else(|| bad("has no scheme"))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(bad("has a malformed scheme"));
    }
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return Err(Rejection::new(
            416,
            format!("the URI scheme {scheme:?} is not supported"),
        ));
    }
    let host_part = rest.split_once('@').map_or(rest, |(_, host)| host);
    if host_part.contains('?') {
        return Err(bad("escaped headers are not allowed in a Request-URI"));
    }
    let host_port = host_part.split(';').next().unwrap_or_default();
    host_port
        .parse::<HostPort>()
        .map_err(|e| bad(&format!("host {host_port:?}: {e}")))?;
    Ok(())
}

/// CSeq is `number method` with number below 2^32 and, for requests, the request's method.
fn check_cseq(head: &Head, method: Option<&str>) -> Result<(), Rejection> {
    let bad = |detail: String| Rejection::new(400, format!("CSeq: {detail}"));
    let Some(field) = head.first("CSeq") else {
        return Err(bad("missing".to_owned()));
    };
    let mut parts = field.value.split_whitespace();
    let (number, cseq_method) = (parts.next().unwrap_or_default(), parts.next());
    if number.is_empty()
        || !number.bytes().all(|b| b.is_ascii_digit())
        || number.parse::<u32>().is_err()
    {
        return Err(bad(format!("{number:?} is not a number below 2^32")));
    }
    match (method, cseq_method) {
        (_, None) => Err(bad("has no method".to_owned())),
        (Some(method), Some(cseq_method)) if method != cseq_method => Err(bad(format!(
            "method {cseq_method} does not match the request's {method}"
        ))),
        _ if parts.next().is_some() => Err(bad("has extra text".to_owned())),
        _ => Ok(()),
    }
}

/// Every Via element is well formed (no empty elements or parameters), and the top one has an
/// RFC 3261 branch.
fn check_vias(head: &Head) -> Result<(), Rejection> {
    let bad = |detail: String| Rejection::new(400, format!("Via: {detail}"));
    let vias: Vec<String> = head.all("Via").flat_map(|f| split_list(&f.value)).collect();
    for via in &vias {
        if via.is_empty() {
            return Err(bad("an empty element".to_owned()));
        }
        let mut params = via.split(';');
        let protocol = params.next().unwrap_or_default();
        let compact: String = protocol.split_whitespace().collect::<Vec<_>>().join(" ");
        let pieces: Vec<&str> = compact.split('/').map(str::trim).collect();
        let well_formed = pieces.len() == 3
            && pieces[0].eq_ignore_ascii_case("SIP")
            && pieces[1] == "2.0"
            && pieces[2].split_whitespace().count() == 2;
        if !well_formed || sent_by(via).is_none() {
            return Err(bad(format!("{via:?} is not SIP/2.0/transport host[:port]")));
        }
        if params.any(|p| p.trim().is_empty()) {
            return Err(bad(format!("{via:?} has an empty parameter")));
        }
    }
    let top = vias.first().ok_or_else(|| bad("missing".to_owned()))?;
    let branch = top
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("branch"))
        .map(|(_, value)| value.trim());
    match branch {
        Some(b) if b.is_empty() || b == BRANCH_COOKIE => Err(bad(format!(
            "the top Via's branch must carry a transaction id after {BRANCH_COOKIE}"
        ))),
        _ => Ok(()),
    }
}

/// `[display-name] <addr-spec> *(;param)` or `addr-spec *(;param)` (RFC 3261 section 20.10).
fn check_name_addr(value: &str) -> Result<(), String> {
    let value = value.trim();
    let Some(open) = find_unquoted(value, '<')? else {
        if value.contains('"') {
            return Err("a quoted display name needs a <URI>".to_owned());
        }
        return Ok(());
    };
    let display = value[..open].trim();
    if let Some(quoted) = display.strip_prefix('"') {
        let end = closing_quote(quoted).ok_or("the display name's quote is not closed")?;
        if !quoted[end + 1..].trim().is_empty() {
            return Err("text after the quoted display name".to_owned());
        }
    } else if display
        .split_whitespace()
        .any(|word| !word.bytes().all(head::is_token_char))
    {
        return Err("an unquoted display name may only contain tokens".to_owned());
    }
    let inner = &value[open + 1..];
    let close = inner.find('>').ok_or("'<' is not closed")?;
    let addr_spec = &inner[..close];
    if addr_spec.is_empty() || addr_spec.chars().any(char::is_whitespace) {
        return Err("white space inside <>".to_owned());
    }
    Ok(())
}

fn check_contact(value: &str) -> Result<(), String> {
    if value.trim() == "*" {
        return Ok(());
    }
    for item in split_list(value) {
        if item.is_empty() {
            return Err("an empty element".to_owned());
        }
        check_name_addr(&item)?;
        if find_unquoted(&item, '<')?.is_none() {
            let uri = item.split(';').next().unwrap_or_default();
            if uri.contains('?') {
                return Err("a URI with headers must be enclosed in <>".to_owned());
            }
        }
        let params = match item.rfind('>') {
            Some(end) => &item[end + 1..],
            None => item.find(';').map_or("", |at| &item[at..]),
        }
        .trim();
        if !params.is_empty() {
            let rest = params
                .strip_prefix(';')
                .ok_or("text after the URI must be ;parameters")?;
            if rest.split(';').any(|p| p.trim().is_empty()) {
                return Err("an empty parameter".to_owned());
            }
        }
    }
    Ok(())
}

/// The first `target` outside a quoted string; an unclosed quote is an error.
fn find_unquoted(value: &str, target: char) -> Result<Option<usize>, String> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == target && !quoted => return Ok(Some(i)),
            _ => {}
        }
    }
    if quoted {
        Err("a quoted string is not closed".to_owned())
    } else {
        Ok(None)
    }
}

/// The index of the closing quote of a quoted string whose opening quote was just consumed.
fn closing_quote(rest: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const RINGING: &str = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc\r\nFrom: <sip:+15551230000@pbx>;tag=1\r\nTo: <sip:sales@127.0.0.1>;tag=a\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    /// [`RINGING`] with `field` replaced by `replacement`.
    fn with(field: &str, replacement: &str) -> Vec<u8> {
        RINGING.replace(field, replacement).into_bytes()
    }

    #[test]
    fn a_well_formed_response_is_handed_on() {
        assert!(matches!(
            classify_datagram(RINGING.as_bytes()),
            Verdict::Response(Response { code: 180, .. })
        ));
    }

    #[test]
    fn responses_without_a_field_every_message_needs_are_dropped() {
        for field in [
            "From: <sip:+15551230000@pbx>;tag=1\r\n",
            "To: <sip:sales@127.0.0.1>;tag=a\r\n",
            "Call-ID: c1\r\n",
            "CSeq: 1 INVITE\r\n",
        ] {
            assert!(
                matches!(classify_datagram(&with(field, "")), Verdict::Drop(_)),
                "kept without {field:?}"
            );
        }
    }

    #[test]
    fn responses_with_a_malformed_from_or_to_are_dropped() {
        for (field, malformed) in [
            ("To: <sip:sales@127.0.0.1>", "To: <sip:sal"),
            (
                "To: <sip:sales@127.0.0.1>",
                "To: \"Sales <sip:sales@127.0.0.1>",
            ),
            (
                "From: <sip:+15551230000@pbx>",
                "From: \" <sip:+15551230000@pbx>",
            ),
        ] {
            let verdict = classify_datagram(&with(field, malformed));
            assert!(
                matches!(verdict, Verdict::Drop(_)),
                "{malformed:?}: {verdict:?}"
            );
        }
    }
}
