//! The few parts of SIP URIs and Via values the proxy reads.

use policy::HostPort;

/// The URI of a name-addr or addr-spec header value (`"A" <sip:a@b>;tag=1` -> `sip:a@b`).
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value.split(';').next().unwrap_or_default().trim(),
    }
}

/// The user part of a `sip:`, `sips:` or `tel:` URI (the whole number for `tel:`).
pub fn user(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once(':')?;
    if scheme.eq_ignore_ascii_case("tel") {
        return rest.split(';').next();
    }
    rest.split_once('@').map(|(user, _)| user)
}

/// The host and port of a `sip:` or `sips:` URI.
pub fn host_port(uri: &str) -> Option<HostPort> {
    let (_, rest) = uri.split_once(':')?;
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    host.split([';', '?']).next()?.parse().ok()
}

/// The value of parameter `name` in a header value's parameters (after the URI).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let params = match value.rfind('>') {
        Some(end) => &value[end + 1..],
        None => value.split_once(';').map_or("", |(_, p)| p),
    };
    params.split(';').find_map(|p| {
        let (key, val) = p.split_once('=').unwrap_or((p, ""));
        key.trim().eq_ignore_ascii_case(name).then(|| val.trim())
    })
}

/// The display name of a name-addr (`"A. Caller" <sip:a@b>` -> `A. Caller`), unquoted.
pub fn display_name(value: &str) -> Option<&str> {
    let open = value.find('<')?;
    let name = value[..open].trim();
    let name = name
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(name);
    (!name.is_empty()).then_some(name)
}

/// The user part and display name of a From or To value.
pub fn party(value: &str) -> (&str, Option<&str>) {
    (user(uri_of(value)).unwrap_or_default(), display_name(value))
}

/// The `tag` parameter of a From or To value.
pub fn tag(value: &str) -> Option<&str> {
    param(value, "tag").filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_uris_and_header_values() {
        let from = "\"Caller\" <sip:+15551230000@pbx.example.com:5070;user=phone>;tag=abc";
        assert_eq!(
            uri_of(from),
            "sip:+15551230000@pbx.example.com:5070;user=phone"
        );
        assert_eq!(user(uri_of(from)), Some("+15551230000"));
        assert_eq!(tag(from), Some("abc"));
        assert_eq!(display_name(from), Some("Caller"));
        assert_eq!(display_name("Bob Smith <sip:b@h>"), Some("Bob Smith"));
        assert_eq!(display_name("<sip:b@h>"), None);
        assert_eq!(display_name("sip:b@h;tag=1"), None);
        assert_eq!(
            user("tel:+15551230000;phone-context=x"),
            Some("+15551230000")
        );
        assert_eq!(user("sip:example.com"), None);
        let hp = host_port("sip:sales@[::1]:5090;transport=udp").expect("host");
        assert_eq!(hp.to_string(), "[::1]:5090");
        assert_eq!(tag("<sip:a@b>"), None);
        assert_eq!(
            param("SIP/2.0/UDP h;branch=z9hG4bK1;rport", "branch"),
            Some("z9hG4bK1")
        );
    }
}
