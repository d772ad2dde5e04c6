//! The `X-Dest-User` header value (seed 000): an optional routing identity that upstream
//! providers and PBXs route on instead of the SIP username.
//!
//! "Allowed characters: a-z, A-Z, 0-9, and . _ + @ ~ / -". "Empty strings are treated as unset."
//! "Sent on the wire only when set." Any other character is an error, never silently dropped,
//! because a silently changed routing identity routes the call somewhere else.

use std::fmt;

use crate::json::{FieldErrors, FromJson, Pointer};

/// The longest value accepted. The seed sets no limit; a bound keeps one header from growing a
/// SIP message without limit, and 256 is far beyond any routing identity seen in practice.
pub const MAX_LEN: usize = 256;

/// A set, valid `X-Dest-User` value. Unset is `Option::<DestUser>::None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestUser(String);

/// Why a value cannot be an `X-Dest-User`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestUserError {
    /// A character outside the allowed set, with its position (in characters).
    BadChar {
        /// The character.
        found: char,
        /// Its position, counting from 0.
        at: usize,
    },
    /// Longer than [`MAX_LEN`].
    TooLong,
}

impl fmt::Display for DestUserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestUserError::BadChar { found, at } => write!(
                f,
                "character {found:?} at position {at} is not allowed; \
                 use only a-z A-Z 0-9 . _ + @ ~ / -"
            ),
            DestUserError::TooLong => write!(f, "must be at most {MAX_LEN} characters long"),
        }
    }
}

impl std::error::Error for DestUserError {}

/// Whether `c` may appear in an `X-Dest-User` value.
pub fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '@' | '~' | '/' | '-')
}

impl DestUser {
    /// Parses a configured value: `Ok(None)` for the empty string (unset), `Ok(Some(_))` for a
    /// valid value, an error naming the first bad character otherwise.
    pub fn parse(value: &str) -> Result<Option<DestUser>, DestUserError> {
        if value.len() > MAX_LEN {
            return Err(DestUserError::TooLong);
        }
        if let Some((at, found)) = value.chars().enumerate().find(|(_, c)| !is_allowed(*c)) {
            return Err(DestUserError::BadChar { found, at });
        }
        Ok((!value.is_empty()).then(|| DestUser(value.to_owned())))
    }

    /// The value, ready to be written as a header value (it contains no character that needs
    /// quoting or escaping in SIP).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DestUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for DestUser {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Read as `Option<DestUser>` because an empty string is a valid way of saying "unset".
impl FromJson for Option<DestUser> {
    fn from_json(
        value: &crate::json::Value<'_>,
        at: &Pointer<'_>,
        errors: &mut FieldErrors,
    ) -> Option<Self> {
        let text: String = String::from_json(value, at, errors)?;
        DestUser::parse(&text)
            .map_err(|e| errors.push(at, e.to_string()))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // seed 000: "Example: routing.user+1@example"
    #[test]
    fn seed_example_is_valid() {
        let v = DestUser::parse("routing.user+1@example").expect("valid");
        assert_eq!(
            v.map(|d| d.to_string()).as_deref(),
            Some("routing.user+1@example")
        );
    }

    // seed 000: "Allowed characters: a-z, A-Z, 0-9, and . _ + @ ~ / -"
    #[test]
    fn every_allowed_character_is_accepted() {
        let all = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+@~/-";
        assert!(matches!(DestUser::parse(all), Ok(Some(_))));
    }

    // seed 000: "Empty strings are treated as unset."
    #[test]
    fn empty_means_unset() {
        assert_eq!(DestUser::parse(""), Ok(None));
    }

    #[test]
    fn other_characters_are_errors_not_stripped() {
        for (value, found, at) in [
            ("sales desk", ' ', 5),
            ("a;b", ';', 1),
            ("a,b", ',', 1),
            ("x\r\nVia: evil", '\r', 1),
            ("é", 'é', 0),
            ("a:b", ':', 1),
            ("<a>", '<', 0),
            ("a%20b", '%', 1),
        ] {
            assert_eq!(
                DestUser::parse(value),
                Err(DestUserError::BadChar { found, at }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn overlong_values_are_refused() {
        assert!(DestUser::parse(&"a".repeat(MAX_LEN)).is_ok());
        assert_eq!(
            DestUser::parse(&"a".repeat(MAX_LEN + 1)),
            Err(DestUserError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn accepts_exactly_the_allowed_alphabet(s in "\\PC{0,40}") {
            let ok = s.chars().all(is_allowed);
            prop_assert_eq!(DestUser::parse(&s).is_ok(), ok);
        }
    }
}
