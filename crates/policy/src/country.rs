//! ISO 3166-1 alpha-2 country codes (seed 003 "Destination country", seed 004 country code).

use std::fmt;

use crate::json::FromJsonText;

/// The officially assigned ISO 3166-1 alpha-2 codes (249), sorted for binary search.
const ASSIGNED: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// An assigned ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code, e.g. `"US"`.
    pub fn as_str(&self) -> &str {
        // Only ever built from an entry of ASSIGNED, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromJsonText for CountryCode {
    fn from_text(text: &str) -> Result<Self, String> {
        let upper = text.to_ascii_uppercase();
        if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err("must be a two-letter ISO 3166-1 alpha-2 country code, e.g. US".to_owned());
        }
        if ASSIGNED.binary_search(&upper.as_str()).is_err() {
            return Err(format!(
                "{upper} is not an assigned ISO 3166-1 alpha-2 country code"
            ));
        }
        if upper != text {
            return Err(format!("country codes are written in upper case: {upper}"));
        }
        let b = text.as_bytes();
        Ok(CountryCode([b[0], b[1]]))
    }
}

impl serde::Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(ASSIGNED.windows(2).all(|w| w[0] < w[1]));
    }

    // seed 003: "ISO-3166 α-2 (2 letters)", example RU; seed 004: "e.g., 'US', 'IN'".
    #[test]
    fn seed_examples_are_valid() {
        for code in ["RU", "US", "IN"] {
            assert_eq!(
                CountryCode::from_text(code).map(|c| c.to_string()),
                Ok(code.into())
            );
        }
    }

    #[test]
    fn unassigned_wrong_length_and_lower_case_are_refused() {
        assert!(
            CountryCode::from_text("XX")
                .unwrap_err()
                .contains("not an assigned")
        );
        assert!(CountryCode::from_text("USA").is_err());
        assert!(CountryCode::from_text("U").is_err());
        assert!(CountryCode::from_text("1A").is_err());
        assert!(CountryCode::from_text("us").unwrap_err().contains("US"));
    }
}
