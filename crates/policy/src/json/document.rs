//! The parsed form of a request body that [`FromJson`](super::FromJson) readers walk.
//!
//! `serde_json::Value` owns every string and keeps objects in a `BTreeMap`, which costs an
//! allocation per member name and per string value; every body crossing the edge filter is
//! parsed once and then dropped, so this document borrows its strings from the body (only a
//! string containing escapes is unescaped into its own buffer) and keeps members in order in a
//! `Vec`. Objects are small, so finding a member by a linear scan is as fast as a map.
//!
//! A repeated member name is refused: parsers disagree on which of the two wins, and the edge
//! and the backend must read a body the same way.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value borrowed from the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, kept as serde_json reads it (integers stay exact).
    Number(serde_json::Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Value<'a>>),
    /// An object, its members in document order, names unique.
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number as an `f64`, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// The number as an `i64`, if this is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// Whether this is a number.
    pub fn is_number(&self) -> bool {
        matches!(self, Value::Number(_))
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&[(Cow<'a, str>, Value<'a>)]> {
        match self {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The same value as a `serde_json::Value`, for what is stored without being interpreted.
    pub fn to_serde(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.clone()),
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::Array(items) => items.iter().map(Value::to_serde).collect(),
            Value::Object(members) => serde_json::Value::Object(
                members
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.to_serde()))
                    .collect(),
            ),
        }
    }
}

/// The member named `name` of `members`.
pub fn member<'m, 'a>(
    members: &'m [(Cow<'a, str>, Value<'a>)],
    name: &str,
) -> Option<&'m Value<'a>> {
    members.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot carry"))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Value::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Value::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Value::String(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Value<'de>)> = Vec::new();
        while let Some(Name(name)) = map.next_key()? {
            members.push((name, map.next_value()?));
        }
        if has_repeated_name(&members) {
            return Err(de::Error::custom(DUPLICATE_MEMBER));
        }
        Ok(Value::Object(members))
    }
}

/// Whether two members share a name: pairwise for the usual handful of members, by sorting
/// for large objects, so a body of thousands of members costs no quadratic time.
fn has_repeated_name(members: &[(Cow<'_, str>, Value<'_>)]) -> bool {
    if members.len() <= 16 {
        return members
            .iter()
            .enumerate()
            .any(|(i, (name, _))| members[..i].iter().any(|(other, _)| other == name));
    }
    let mut names: Vec<&str> = members.iter().map(|(name, _)| name.as_ref()).collect();
    names.sort_unstable();
    names.windows(2).any(|pair| pair[0] == pair[1])
}

/// The error message of a repeated member name (serde_json adds the position).
pub const DUPLICATE_MEMBER: &str = "a member name appears twice in one object";

/// A member name, borrowed from the text when it has no escapes (serde's own `Cow<str>` always
/// copies).
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }

            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Value<'_>, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn strings_without_escapes_are_borrowed_and_escaped_ones_unescaped() {
        let value =
            parse(r#"{"plain": "abc", "esc\u0061ped": "a\"b", "n": [1, -2, 2.5, true, null]}"#)
                .expect("valid");
        let members = value.as_object().expect("object");
        assert!(matches!(members[0].0, Cow::Borrowed("plain")));
        assert!(matches!(
            member(members, "plain"),
            Some(Value::String(Cow::Borrowed("abc")))
        ));
        assert_eq!(members[1].0, "escaped");
        assert_eq!(
            member(members, "escaped").and_then(Value::as_str),
            Some("a\"b")
        );
        let n = member(members, "n")
            .and_then(Value::as_array)
            .expect("array");
        assert_eq!(n[0].as_i64(), Some(1));
        assert_eq!(n[1].as_i64(), Some(-2));
        assert_eq!(n[2].as_f64(), Some(2.5));
        assert_eq!(n[3].as_bool(), Some(true));
        assert!(n[4].is_null());
    }

    #[test]
    fn converts_to_the_same_serde_json_value() {
        let text = r#"{"a": {"b": [1, "x", null, false, 1.5, 18446744073709551615]}, "c": "\n"}"#;
        let ours = parse(text).expect("valid").to_serde();
        let theirs: serde_json::Value = serde_json::from_str(text).expect("valid");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn repeated_member_names_are_refused_at_any_depth() {
        for text in [r#"{"a": 1, "a": 2}"#, r#"{"x": {"b": 1, "\u0062": 2}}"#] {
            let error = parse(text).expect_err("duplicate");
            assert!(error.to_string().contains(DUPLICATE_MEMBER), "{error}");
        }
        assert!(parse(r#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).is_ok());
        let many = |last: usize| {
            let members: Vec<String> = (0..100)
                .map(|i| format!("\"m{i}\": 0"))
                .chain(std::iter::once(format!("\"m{last}\": 1")))
                .collect();
            format!("{{{}}}", members.join(","))
        };
        assert!(parse(&many(100)).is_ok());
        assert!(parse(&many(42)).is_err());
    }
}
