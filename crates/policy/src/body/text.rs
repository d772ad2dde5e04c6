//! Small string types shared by the bodies: labels, identifiers, SIP user parts, header names.

use std::fmt;

use crate::json::{FromJsonText, check_text};

/// Implements `Display`, `Serialize` and `as_str` for a string newtype.
macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

/// A human-readable name ("Main Support Line"): 1 to 256 characters, not only spaces, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label(String);
string_newtype!(Label);

/// The longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 256;

impl FromJsonText for Label {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("must not be empty".to_owned());
        }
        check_text(text, MAX_LABEL_CHARS)?;
        Ok(Label(text.to_owned()))
    }
}

/// An identifier of another resource (`agent_abc123`, `comp_abc123`, `alloy`, `fn_order_status`):
/// 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier(String);
string_newtype!(Identifier);

/// The longest identifier.
pub const MAX_IDENTIFIER_LEN: usize = 128;

impl FromJsonText for Identifier {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if text.len() > MAX_IDENTIFIER_LEN {
            return Err(format!(
                "must be at most {MAX_IDENTIFIER_LEN} characters long"
            ));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(format!(
                "character {c:?} is not allowed in an identifier; use A-Z a-z 0-9 . _ : -"
            ));
        }
        Ok(Identifier(text.to_owned()))
    }
}

/// A SIP user part (username, extension, auth username), RFC 3261 section 25.1 `user` without
/// escapes: 1 to 64 characters of unreserved and user-unreserved characters. `@`, `:`, `<`, `>`,
/// spaces and quotes would break the URI it is written into.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SipUser(String);
string_newtype!(SipUser);

/// The longest SIP user part accepted.
pub const MAX_SIP_USER_LEN: usize = 64;

/// Whether `c` may appear in a [`SipUser`] (RFC 3261 `unreserved` / `user-unreserved`).
pub fn is_sip_user_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '_'
                | '.'
                | '!'
                | '~'
                | '*'
                | '\''
                | '('
                | ')'
                | '&'
                | '='
                | '+'
                | '$'
                | ','
                | ';'
                | '?'
                | '/'
        )
}

impl FromJsonText for SipUser {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if text.len() > MAX_SIP_USER_LEN {
            return Err(format!(
                "must be at most {MAX_SIP_USER_LEN} characters long"
            ));
        }
        if let Some(c) = text.chars().find(|c| !is_sip_user_char(*c)) {
            return Err(format!("character {c:?} is not allowed in a SIP user name"));
        }
        Ok(SipUser(text.to_owned()))
    }
}

/// A SIP header name (RFC 3261 `token`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderName(String);
string_newtype!(HeaderName);

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

fn check_header_name(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > MAX_IDENTIFIER_LEN {
        return Err(format!(
            "must be a header name of 1 to {MAX_IDENTIFIER_LEN} characters"
        ));
    }
    if let Some(c) = text.chars().find(|c| !is_token_char(*c)) {
        return Err(format!("character {c:?} is not allowed in a header name"));
    }
    Ok(())
}

impl FromJsonText for HeaderName {
    fn from_text(text: &str) -> Result<Self, String> {
        check_header_name(text)?;
        Ok(HeaderName(text.to_owned()))
    }
}

/// A custom SIP extension header name, which must start with `X-` (seed 004: "Custom SIP X-*
/// headers").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct XHeaderName(String);
string_newtype!(XHeaderName);

impl FromJsonText for XHeaderName {
    fn from_text(text: &str) -> Result<Self, String> {
        check_header_name(text)?;
        if !(text.starts_with("X-") || text.starts_with("x-")) || text.len() < 3 {
            return Err("must be an X-* header name, e.g. X-Customer-Id".to_owned());
        }
        Ok(XHeaderName(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_users_refuse_uri_breaking_characters() {
        assert!(SipUser::from_text("1001").is_ok());
        assert!(SipUser::from_text("your-sip-username").is_ok());
        for bad in ["", "a@b", "a:b", "a b", "<a>", "a\"b", "a%40b"] {
            assert!(SipUser::from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn x_headers_must_be_x_headers() {
        assert!(XHeaderName::from_text("X-Customer-Id").is_ok());
        assert!(XHeaderName::from_text("Via").is_err());
        assert!(XHeaderName::from_text("X-").is_err());
        assert!(XHeaderName::from_text("X-A: b").is_err());
    }

    #[test]
    fn labels_must_have_content() {
        assert!(Label::from_text("Main Support Line").is_ok());
        assert!(Label::from_text("   ").is_err());
        assert!(Identifier::from_text("agent_abc123").is_ok());
        assert!(Identifier::from_text("agent abc").is_err());
    }
}
