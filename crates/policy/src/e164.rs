//! E.164 telephone numbers in the `+` form the platforms use for DIDs and for the SIP From user.
//!
//! The rule is `^\+[1-9][0-9]{1,14}$` (DESIGN.md): a `+`, a first digit 1-9 (no country code
//! starts with 0), and at most 15 digits in all (ITU-T E.164 section 6.1). A lone country digit
//! such as `+1` is not a subscriber number, so at least two digits are required. Only ASCII digits
//! count: no spaces, dashes, dots, parentheses or other scripts' digits, because the ingress
//! compares these strings byte for byte with the SIP From user.

use std::fmt;
use std::str::FromStr;

use crate::json::FromJsonText;

/// The most digits an E.164 number has (ITU-T E.164 section 6.1).
pub const MAX_DIGITS: usize = 15;
/// The fewest digits accepted: a country code and at least one more digit.
pub const MIN_DIGITS: usize = 2;

/// A valid E.164 number, stored with its leading `+`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct E164(String);

/// Why a string is not an E.164 number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E164Error {
    /// It does not start with `+`.
    MissingPlus,
    /// The first digit is 0, which no country code has.
    LeadingZero,
    /// A character other than an ASCII digit follows the `+`.
    NotADigit(char),
    /// Fewer than [`MIN_DIGITS`] digits.
    TooShort,
    /// More than [`MAX_DIGITS`] digits.
    TooLong(usize),
}

impl fmt::Display for E164Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("must be an E.164 number such as +15551234567: ")?;
        match self {
            E164Error::MissingPlus => f.write_str("it must start with '+'"),
            E164Error::LeadingZero => f.write_str("the first digit after '+' must be 1-9"),
            E164Error::NotADigit(' ') => f.write_str("spaces are not allowed"),
            E164Error::NotADigit(c) if c.is_ascii() => {
                write!(f, "{c:?} is not allowed, only the digits 0-9")
            }
            E164Error::NotADigit(_) => f.write_str("only the ASCII digits 0-9 are allowed"),
            E164Error::TooShort => write!(f, "it needs at least {MIN_DIGITS} digits"),
            E164Error::TooLong(n) => {
                write!(f, "it has {n} digits, at most {MAX_DIGITS} are allowed")
            }
        }
    }
}

impl std::error::Error for E164Error {}

impl E164 {
    /// The number with its `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks `s` without keeping it: what admission needs for every From user.
    pub fn check(s: &str) -> Result<(), E164Error> {
        let digits = s.strip_prefix('+').ok_or(E164Error::MissingPlus)?;
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(E164Error::NotADigit(bad));
        }
        if digits.starts_with('0') {
            return Err(E164Error::LeadingZero);
        }
        match digits.len() {
            n if n < MIN_DIGITS => Err(E164Error::TooShort),
            n if n > MAX_DIGITS => Err(E164Error::TooLong(n)),
            _ => Ok(()),
        }
    }
}

impl FromStr for E164 {
    type Err = E164Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::check(s)?;
        Ok(E164(s.to_owned()))
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromJsonText for E164 {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e: E164Error| e.to_string())
    }
}

impl serde::Serialize for E164 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<E164, E164Error> {
        s.parse()
    }

    // seed 001: "The SIP From header must contain a valid E.164 phone number."
    // seed 004: "E.164 format phone number (e.g., +15551234567)".
    #[test]
    fn seed_examples_are_valid() {
        for n in [
            "+15551234567",
            "+18335888432",
            "+71234567890",
            "+15105550100",
        ] {
            assert_eq!(parse(n).map(|e| e.to_string()), Ok(n.to_owned()));
        }
    }

    #[test]
    fn fifteen_digits_pass_and_sixteen_fail() {
        assert!(parse("+123456789012345").is_ok());
        assert_eq!(parse("+1234567890123456"), Err(E164Error::TooLong(16)));
    }

    #[test]
    fn two_digits_is_the_minimum() {
        assert!(parse("+12").is_ok());
        assert_eq!(parse("+1"), Err(E164Error::TooShort));
        assert_eq!(parse("+"), Err(E164Error::TooShort));
    }

    #[test]
    fn leading_zero_missing_plus_and_separators_fail() {
        assert_eq!(parse("+0123456789"), Err(E164Error::LeadingZero));
        assert_eq!(parse("15551234567"), Err(E164Error::MissingPlus));
        assert_eq!(parse("0015551234567"), Err(E164Error::MissingPlus));
        assert_eq!(parse("+1 555 123 4567"), Err(E164Error::NotADigit(' ')));
        assert_eq!(parse("+1-555-123-4567"), Err(E164Error::NotADigit('-')));
        assert_eq!(parse("+1(555)1234567"), Err(E164Error::NotADigit('(')));
        assert_eq!(parse("++15551234567"), Err(E164Error::NotADigit('+')));
        assert_eq!(parse(" +15551234567"), Err(E164Error::MissingPlus));
        assert_eq!(parse("+15551234567\n"), Err(E164Error::NotADigit('\n')));
    }

    #[test]
    fn non_ascii_digits_fail() {
        // Arabic-Indic, Devanagari and full-width digits are digits to Unicode, not to SIP.
        assert!(matches!(
            parse("+١٥٥٥١٢٣٤٥٦٧"),
            Err(E164Error::NotADigit(_))
        ));
        assert!(matches!(
            parse("+१५५५१२३४५६७"),
            Err(E164Error::NotADigit(_))
        ));
        assert!(matches!(
            parse("+１５５５１２３４５６７"),
            Err(E164Error::NotADigit(_))
        ));
        assert!(
            parse("+١٥٥٥").unwrap_err().to_string().contains("ASCII"),
            "the message says which digits are meant"
        );
    }

    proptest! {
        #[test]
        fn accepts_exactly_the_design_regex(s in "\\PC{0,20}") {
            let by_rule = s.len() >= 3
                && s.len() <= 16
                && s.starts_with('+')
                && s.as_bytes()[1].is_ascii_digit()
                && s.as_bytes()[1] != b'0'
                && s.bytes().skip(1).all(|b| b.is_ascii_digit());
            prop_assert_eq!(parse(&s).is_ok(), by_rule);
        }

        #[test]
        fn every_valid_number_round_trips(s in "\\+[1-9][0-9]{1,14}") {
            prop_assert_eq!(parse(&s).map(|e| e.to_string()), Ok(s.clone()));
        }
    }
}
