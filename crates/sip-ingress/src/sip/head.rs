//! The header section, normalised: one [`Field`] per header field, its continuation lines
//! unfolded (RFC 3261 section 7.3.1), compact names expanded (section 7.3.3, and the compact
//! forms registered since), white space around the colon removed, and the byte range it
//! occupies in the received message kept so forwarding can edit the received bytes.

use std::ops::Range;

/// Compact header names and their full forms (IANA SIP parameters registry).
const COMPACT: [(&str, &str); 20] = [
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("n", "Identity-Info"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// Full names whose canonical spelling is not simple capitalisation.
const SPELLINGS: [&str; 6] = [
    "Call-ID",
    "CSeq",
    "WWW-Authenticate",
    "MIME-Version",
    "RAck",
    "RSeq",
];

/// One header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The canonical name (`Via`, `Call-ID`, `X-Custom-Thing`).
    pub name: String,
    /// The value: continuation lines joined with one space, trimmed.
    pub value: String,
    /// The bytes of the field in the received message, continuation lines and line ends
    /// included.
    pub span: Range<usize>,
}

/// The parsed header section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The start line, without its line end.
    pub start_line: String,
    /// The header fields in order.
    pub fields: Vec<Field>,
    /// Where the first header field starts (right after the start line).
    pub fields_start: usize,
}

/// Why a header section cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The start line is missing or begins with white space.
    NoStartLine,
    /// A line is not `name: value` (the line, lossily decoded, is given).
    BadField(String),
    /// A header field name has characters outside `token`.
    BadName(String),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::NoStartLine => f.write_str("no start line"),
            HeadError::BadField(line) => write!(f, "not a header field: {line:?}"),
            HeadError::BadName(name) => write!(f, "bad header field name {name:?}"),
        }
    }
}

impl std::error::Error for HeadError {}

impl Head {
    /// Every field named `name` (canonical, case-insensitive).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Field> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
    }

    /// The first field named `name`.
    pub fn first(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The value of the first field named `name`; empty when there is none.
    pub fn value(&self, name: &str) -> &str {
        self.first(name)
            .map(|f| f.value.as_str())
            .unwrap_or_default()
    }

    /// The first element of the first Via (the sender's via-parm); empty when there is none.
    pub fn top_via(&self) -> String {
        self.first("Via")
            .and_then(|f| split_list(&f.value).into_iter().next())
            .unwrap_or_default()
    }

    /// The method of the CSeq (`1 INVITE` -> `INVITE`); empty when there is none.
    pub fn cseq_method(&self) -> &str {
        self.value("CSeq")
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
    }

    /// The sequence number of the CSeq, as written (`1 INVITE` -> `1`).
    pub fn cseq_number(&self) -> &str {
        self.value("CSeq")
            .split_whitespace()
            .next()
            .unwrap_or_default()
    }
}

/// Splits a comma-separated header value, outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<String> {
    let (mut items, mut current) = (Vec::new(), String::new());
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                items.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current.trim().to_owned());
    items
}

/// RFC 3261 `token` characters.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// The canonical form of a field name.
pub fn canonical_name(name: &str) -> String {
    if let Some((_, full)) = COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
        return (*full).to_owned();
    }
    if let Some(spelling) = SPELLINGS.iter().find(|s| s.eq_ignore_ascii_case(name)) {
        return (*spelling).to_owned();
    }
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Reads the header section `head` (up to, not including, the empty line).
pub fn parse(head: &[u8]) -> Result<Head, HeadError> {
    // Lines with their byte ranges, line ends included in the range.
    let mut lines: Vec<(Range<usize>, &[u8])> = Vec::new();
    let mut start = 0;
    for (i, b) in head.iter().enumerate() {
        if *b == b'\n' {
            let mut content = &head[start..i];
            if let Some(stripped) = content.strip_suffix(b"\r") {
                content = stripped;
            }
            lines.push((start..i + 1, content));
            start = i + 1;
        }
    }
    if start < head.len() {
        lines.push((start..head.len(), &head[start..]));
    }
    let mut lines = lines.into_iter();
    let (start_range, start_line) = lines.next().ok_or(HeadError::NoStartLine)?;
    if start_line.is_empty() || start_line[0] == b' ' || start_line[0] == b'\t' {
        return Err(HeadError::NoStartLine);
    }
    let mut fields: Vec<Field> = Vec::new();
    for (range, line) in lines {
        let text = String::from_utf8_lossy(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            let Some(last) = fields.last_mut() else {
                return Err(HeadError::BadField(text.into_owned()));
            };
            let more = text.trim();
            if !more.is_empty() {
                if !last.value.is_empty() {
                    last.value.push(' ');
                }
                last.value.push_str(more);
            }
            last.span.end = range.end;
            continue;
        }
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| HeadError::BadField(text.to_string()))?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(HeadError::BadName(name.to_owned()));
        }
        fields.push(Field {
            name: canonical_name(name),
            value: value.trim().to_owned(),
            span: range,
        });
    }
    Ok(Head {
        start_line: String::from_utf8_lossy(start_line).into_owned(),
        fields,
        fields_start: start_range.end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_compact_names_and_colon_spacing() {
        let raw = b"INVITE sip:a@b SIP/2.0\r\nTO :\r\n sip:a@b ;   tag = 1\r\nv: SIP/2.0/UDP h\r\nMaX-fOrWaRdS: 0068\r\ni: x\r\n";
        let head = parse(raw).expect("parses");
        let names: Vec<&str> = head.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["To", "Via", "Max-Forwards", "Call-ID"]);
        assert_eq!(head.fields[0].value, "sip:a@b ;   tag = 1");
        assert_eq!(
            &raw[head.fields[0].span.clone()],
            b"TO :\r\n sip:a@b ;   tag = 1\r\n"
        );
        assert_eq!(head.fields_start, 24);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(matches!(
            parse(b"X sip:a SIP/2.0\r\nno colon here\r\n"),
            Err(HeadError::BadField(_))
        ));
        assert!(matches!(
            parse(b"X sip:a SIP/2.0\r\nBad Name: v\r\n"),
            Err(HeadError::BadName(_))
        ));
        assert_eq!(parse(b" X sip:a SIP/2.0\r\n"), Err(HeadError::NoStartLine));
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_name("call-id"), "Call-ID");
        assert_eq!(canonical_name("CSEQ"), "CSeq");
        assert_eq!(canonical_name("x-dest-user"), "X-Dest-User");
        assert_eq!(canonical_name("M"), "Contact");
    }
}
