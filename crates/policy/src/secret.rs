//! Write-only secrets (SIP passwords): accepted in requests, never serialised, never shown.

use std::fmt;

use crate::json::{FromJsonText, MAX_TEXT_CHARS, check_text};

/// A secret such as a SIP password.
///
/// It deliberately implements neither `Serialize` nor `Display`, and its `Debug` output is
/// redacted, so a response type or a log line that tries to include one does not compile or shows
/// nothing. Code that must use the value (storing it, answering a digest challenge) calls
/// [`Secret::expose`], which is easy to find in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for storage or authentication only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromJsonText for Secret {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        // The check's message names the rule, never the value.
        check_text(text, MAX_TEXT_CHARS)?;
        Ok(Secret(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn errors_do_not_echo_the_value() {
        let err = Secret::from_text("pass\u{7}word").expect_err("control char");
        assert!(!err.contains("pass"));
    }
}
