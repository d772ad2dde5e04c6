//! Path templates with typed parameters: `/v1/agents/{agentId:uuid}/sip-registration`.
//!
//! A template is a sequence of `/`-separated segments, each a literal or a `{name:type}`
//! parameter that matches exactly one non-empty segment. Matching is done on the path without its
//! query string; the path is compared as received, so Envoy should normalise it first
//! (`normalize_path`, `merge_slashes` in the connection manager).

use std::fmt;

/// The types a path parameter may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// A UUID in the 8-4-4-4-12 hexadecimal form.
    Uuid,
    /// An identifier: 1 to 128 of `A-Z a-z 0-9 . _ : -`.
    Id,
    /// A decimal integer of up to 18 digits.
    Int,
    /// An E.164 number such as `+15551234567` (`%2B` for the `+` is accepted).
    E164,
}

impl ParamType {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "uuid" => Some(ParamType::Uuid),
            "id" => Some(ParamType::Id),
            "int" => Some(ParamType::Int),
            "e164" => Some(ParamType::E164),
            _ => None,
        }
    }

    /// Checks a segment, explaining what was expected when it does not fit.
    pub fn check(self, value: &str) -> Result<(), &'static str> {
        let ok = match self {
            ParamType::Uuid => is_uuid(value),
            ParamType::Id => {
                !value.is_empty()
                    && value.len() <= 128
                    && value.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                    })
            }
            ParamType::Int => {
                !value.is_empty() && value.len() <= 18 && value.bytes().all(|b| b.is_ascii_digit())
            }
            ParamType::E164 => {
                let plain = value
                    .strip_prefix("%2B")
                    .or_else(|| value.strip_prefix("%2b"));
                let number = plain.map_or_else(|| value.to_owned(), |rest| format!("+{rest}"));
                number.parse::<policy::E164>().is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(match self {
                ParamType::Uuid => "must be a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6",
                ParamType::Id => "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
                ParamType::Int => "must be a decimal integer",
                ParamType::E164 => "must be an E.164 number such as +15551234567",
            })
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param { name: String, kind: ParamType },
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    text: String,
}

/// How a path relates to a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The path has another shape.
    No,
    /// Same shape and every parameter has its type.
    Yes,
    /// Same shape, but a parameter has the wrong form.
    BadParam {
        /// The parameter's name.
        name: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl PathTemplate {
    /// Parses a template, explaining what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or("a path template must start with '/'")?;
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for segment in rest.split('/') {
            if segment.is_empty() {
                return Err("empty segment (double or trailing '/')".to_owned());
            }
            if let Some(inner) = segment.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| format!("parameter {segment:?} is not closed with '}}'"))?;
                let (name, kind) = inner.split_once(':').unwrap_or((inner, "id"));
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "parameter name {name:?} must be letters, digits or _"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("parameter {name:?} appears twice"));
                }
                names.push(name);
                let kind = ParamType::parse(kind).ok_or_else(|| {
                    format!("parameter type {kind:?} is unknown; use uuid, id, int or e164")
                })?;
                segments.push(Segment::Param {
                    name: name.to_owned(),
                    kind,
                });
            } else {
                if segment.contains(['{', '}', '?', '#', '%']) {
                    return Err(format!("segment {segment:?} has a reserved character"));
                }
                segments.push(Segment::Literal(segment.to_owned()));
            }
        }
        Ok(Self {
            segments,
            text: text.to_owned(),
        })
    }

    /// Matches a request path (without query string).
    pub fn matches(&self, path: &str) -> Match {
        let Some(rest) = path.strip_prefix('/') else {
            return Match::No;
        };
        let mut parts = rest.split('/');
        let mut bad = None;
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return Match::No;
            };
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return Match::No,
                Segment::Param { .. } if part.is_empty() => return Match::No,
                Segment::Param { name, kind } => {
                    if let (Err(expected), None) = (kind.check(part), &bad) {
                        bad = Some(Match::BadParam {
                            name: name.clone(),
                            expected,
                        });
                    }
                }
            }
        }
        if parts.next().is_some() {
            return Match::No;
        }
        bad.unwrap_or(Match::Yes)
    }

    /// Whether two templates match exactly the same paths' shapes (same literals, parameters in
    /// the same places), which makes two routes with the same method ambiguous.
    pub fn same_shape(&self, other: &Self) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Segment::Literal(x), Segment::Literal(y)) => x == y,
                    (Segment::Param { .. }, Segment::Param { .. }) => true,
                    _ => false,
                })
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";

    fn template(s: &str) -> PathTemplate {
        PathTemplate::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn literal_and_typed_segments_match() {
        let t = template("/v1/agents/{agentId:uuid}/sip-registration");
        assert_eq!(
            t.matches(&format!("/v1/agents/{UUID}/sip-registration")),
            Match::Yes
        );
        assert_eq!(t.matches("/v1/agents/x/sip-registration/extra"), Match::No);
        assert_eq!(t.matches("/v1/agents//sip-registration"), Match::No);
        assert_eq!(
            t.matches("/v1/agents/not-a-uuid/sip-registration"),
            Match::BadParam {
                name: "agentId".into(),
                expected: ParamType::Uuid.check("x").unwrap_err()
            }
        );
    }

    #[test]
    fn parameter_types() {
        assert!(ParamType::Uuid.check(&UUID.to_uppercase()).is_ok());
        assert!(
            ParamType::Uuid
                .check("3fa85f64571745622b3fc2c963f66afa6")
                .is_err()
        );
        assert!(ParamType::Id.check("agent_abc123").is_ok());
        assert!(ParamType::Id.check("a%20b").is_err());
        assert!(ParamType::Int.check("42").is_ok());
        assert!(ParamType::Int.check("-1").is_err());
        assert!(ParamType::E164.check("+15551234567").is_ok());
        assert!(ParamType::E164.check("%2B15551234567").is_ok());
        assert!(ParamType::E164.check("15551234567").is_err());
    }

    #[test]
    fn bad_templates_are_explained() {
        for (text, fragment) in [
            ("v1/x", "start with '/'"),
            ("/v1//x", "empty segment"),
            ("/v1/{id", "not closed"),
            ("/v1/{a:uuid}/{a:int}", "twice"),
            ("/v1/{a:date}", "unknown"),
            ("/v1/{a-b}", "parameter name"),
            ("/v1/x%20y", "reserved"),
        ] {
            let err = PathTemplate::parse(text).expect_err(text);
            assert!(err.contains(fragment), "{text}: {err}");
        }
    }

    #[test]
    fn shapes_compare_literals_and_parameter_positions() {
        let a = template("/v1/sip-connections/{connectionId}");
        let b = template("/v1/sip-connections/{id:uuid}");
        let c = template("/v1/sip-connections/{id}/status");
        assert!(a.same_shape(&b));
        assert!(!a.same_shape(&c));
    }
}
