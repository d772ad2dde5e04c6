//! Reading JSON request bodies while collecting *every* problem, each tied to its field by a
//! JSON Pointer (RFC 6901).
//!
//! serde's derive stops at the first error; clients fixing a request one error at a time is what
//! this module exists to avoid. Bodies are therefore parsed into a [`Value`] document and read
//! by [`FromJson`] implementations that report into a shared [`FieldErrors`] and keep going.

mod document;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Map;

use document::member;
pub use document::{DUPLICATE_MEMBER, Value};

/// One problem with one field of a request body, as carried in the `errors[]` member of an
/// RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON Pointer to the offending field; `""` is the whole body.
    pub pointer: String,
    /// A sentence a person can act on. Never contains secret values.
    pub detail: String,
}

/// Every problem found in one body, in document order of discovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Records a problem with the field at `pointer`.
    pub fn push(&mut self, pointer: &Pointer<'_>, detail: impl Into<String>) {
        self.0.push(FieldError {
            pointer: pointer.to_string(),
            detail: detail.into(),
        });
    }

    /// Whether no problem has been recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded problems.
    pub fn as_slice(&self) -> &[FieldError] {
        &self.0
    }

    /// Whether some problem was recorded at exactly `pointer`.
    pub fn has(&self, pointer: &str) -> bool {
        self.0.iter().any(|e| e.pointer == pointer)
    }

    /// Turns the collected errors into the value or the errors: `value` is only trusted when no
    /// error was recorded while building it.
    pub fn into_result<T>(self, value: Option<T>) -> Result<T, FieldErrors> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ if self.is_empty() => {
                // A reader returned nothing without saying why; never let that pass silently.
                let mut errors = self;
                errors.push(&Pointer::root(), "body is invalid");
                Err(errors)
            }
            _ => Err(self),
        }
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let at = if error.pointer.is_empty() {
                "(body)"
            } else {
                &error.pointer
            };
            write!(f, "{at}: {}", error.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// A JSON Pointer (RFC 6901) to the value being read.
///
/// Readers descend into every field of every body, but a pointer is only needed as text when a
/// problem is reported, so it is kept as a chain of borrowed steps on the reader's stack and
/// rendered by [`fmt::Display`] (`to_string()`) on demand.
#[derive(Debug, Clone, Copy)]
pub struct Pointer<'a> {
    parent: Option<&'a Pointer<'a>>,
    step: Step<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Root,
    Field(&'a str),
    Index(usize),
}

impl<'a> Pointer<'a> {
    /// The pointer to the whole document (`""`).
    pub fn root() -> Self {
        Self {
            parent: None,
            step: Step::Root,
        }
    }

    /// The pointer to member `name` of the object at `self`.
    pub fn field(&'a self, name: &'a str) -> Self {
        Self {
            parent: Some(self),
            step: Step::Field(name),
        }
    }

    /// The pointer to element `index` of the array at `self`.
    pub fn index(&'a self, index: usize) -> Self {
        Self {
            parent: Some(self),
            step: Step::Index(index),
        }
    }
}

/// The pointer text, member names escaped per RFC 6901 section 3.
impl fmt::Display for Pointer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            parent.fmt(f)?;
        }
        match self.step {
            Step::Root => Ok(()),
            Step::Index(index) => write!(f, "/{index}"),
            Step::Field(name) => {
                f.write_str("/")?;
                for piece in name.split_inclusive(['~', '/']) {
                    match piece.strip_suffix('~') {
                        Some(before) => write!(f, "{before}~0")?,
                        None => match piece.strip_suffix('/') {
                            Some(before) => write!(f, "{before}~1")?,
                            None => f.write_str(piece)?,
                        },
                    }
                }
                Ok(())
            }
        }
    }
}

/// A type read from a JSON value, reporting every problem into `errors`.
///
/// Returns `None` when the value cannot be used; in that case at least one error was pushed.
pub trait FromJson: Sized {
    /// Reads `value`, found at `at`.
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self>;
}

/// A type written in JSON as a string and checked by its own rule.
pub trait FromJsonText: Sized {
    /// Parses the string, or explains in a sentence what is wrong with it.
    fn from_text(text: &str) -> Result<Self, String>;
}

impl<T: FromJsonText> FromJson for T {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let Some(text) = value.as_str() else {
            errors.push(at, format!("must be a string, not {}", kind(value)));
            return None;
        };
        T::from_text(text)
            .map_err(|detail| errors.push(at, detail))
            .ok()
    }
}

/// Any string (free text still has a length limit and no control characters).
impl FromJsonText for String {
    fn from_text(text: &str) -> Result<Self, String> {
        check_text(text, MAX_TEXT_CHARS)?;
        Ok(text.to_owned())
    }
}

/// The longest free-text value accepted (names, descriptions), in characters.
pub const MAX_TEXT_CHARS: usize = 1024;

/// Checks free text: at most `max` characters and no control characters (which have no place
/// in labels and would let a value forge lines in logs or SIP headers).
pub fn check_text(text: &str, max: usize) -> Result<(), String> {
    // The control characters (general category Cc) are C0 and DEL, plus C1 (U+0080 to U+009F)
    // outside ASCII. Every body field goes through here, so the common case (ASCII) is one pass
    // over the bytes, eight at a time.
    let AsciiScan { ascii, c0_or_del } = AsciiScan::of(text.as_bytes());
    let chars = if ascii {
        text.len()
    } else {
        text.chars().count()
    };
    if chars > max {
        return Err(format!("must be at most {max} characters long"));
    }
    if c0_or_del || (!ascii && text.chars().any(char::is_control)) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(())
}

/// What one pass over some bytes finds.
struct AsciiScan {
    /// Every byte is ASCII.
    ascii: bool,
    /// Some byte is a C0 control or DEL (in UTF-8 such a byte is always that character).
    c0_or_del: bool,
}

impl AsciiScan {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

    /// Scans `bytes` a 64-bit word at a time (wasm has no wider registers without SIMD, and
    /// long fields such as passwords would otherwise cost one step per byte).
    fn of(bytes: &[u8]) -> Self {
        let mut seen_bits = 0u64;
        let mut controls = 0u64;
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            seen_bits |= word;
            controls |=
                Self::byte_below(word, 0x20) | Self::byte_below(word ^ (Self::ONES * 0x7F), 1);
        }
        for &byte in words.remainder() {
            seen_bits |= u64::from(byte);
            controls |= u64::from(byte < 0x20 || byte == 0x7F);
        }
        Self {
            ascii: seen_bits & Self::HIGH_BITS == 0,
            c0_or_del: controls != 0,
        }
    }

    /// Non-zero exactly when some byte of `word` is below `limit` (at most 0x80): only such a
    /// byte borrows when `limit` is subtracted from every byte, and the lowest one of them then
    /// has its high bit set by the subtraction but not in `word`.
    fn byte_below(word: u64, limit: u8) -> u64 {
        word.wrapping_sub(Self::ONES * u64::from(limit)) & !word & Self::HIGH_BITS
    }
}

impl FromJson for bool {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let b = value.as_bool();
        if b.is_none() {
            errors.push(at, format!("must be true or false, not {}", kind(value)));
        }
        b
    }
}

impl FromJson for f64 {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let n = value.as_f64();
        if n.is_none() {
            errors.push(at, format!("must be a number, not {}", kind(value)));
        }
        n
    }
}

/// An integer in `MIN..=MAX`, such as a ring timeout in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ranged<const MIN: i64, const MAX: i64>(i64);

impl<const MIN: i64, const MAX: i64> Ranged<MIN, MAX> {
    /// Checks that `n` is in range.
    pub fn new(n: i64) -> Option<Self> {
        (MIN..=MAX).contains(&n).then_some(Self(n))
    }

    /// The value.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl<const MIN: i64, const MAX: i64> Serialize for Ranged<MIN, MAX> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.0)
    }
}

impl<const MIN: i64, const MAX: i64> FromJson for Ranged<MIN, MAX> {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let out_of_range = || format!("must be an integer from {MIN} to {MAX}");
        let Some(n) = value.as_i64() else {
            if value.is_number() {
                errors.push(at, out_of_range());
            } else {
                errors.push(at, format!("must be an integer, not {}", kind(value)));
            }
            return None;
        };
        let ranged = Self::new(n);
        if ranged.is_none() {
            errors.push(at, out_of_range());
        }
        ranged
    }
}

/// A TCP/UDP port number, 1 to 65535.
pub type Port = Ranged<1, 65535>;

impl Port {
    /// The port as the type sockets use.
    pub fn as_u16(self) -> u16 {
        u16::try_from(self.0).unwrap_or(u16::MAX)
    }
}

/// The most elements accepted in one array field.
pub const MAX_ARRAY_LEN: usize = 256;

impl<T: FromJson> FromJson for Vec<T> {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let Some(items) = value.as_array() else {
            errors.push(at, format!("must be an array, not {}", kind(value)));
            return None;
        };
        if items.len() > MAX_ARRAY_LEN {
            errors.push(at, format!("must have at most {MAX_ARRAY_LEN} elements"));
            return None;
        }
        let read: Vec<Option<T>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| T::from_json(item, &at.index(i), errors))
            .collect();
        read.into_iter().collect()
    }
}

/// A JSON object whose member names are checked by `K` and values read as `V`.
impl<K: FromJsonText + Ord, V: FromJson> FromJson for BTreeMap<K, V> {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let Some(members) = value.as_object() else {
            errors.push(at, format!("must be an object, not {}", kind(value)));
            return None;
        };
        if members.len() > MAX_ARRAY_LEN {
            errors.push(at, format!("must have at most {MAX_ARRAY_LEN} members"));
            return None;
        }
        let read: Vec<Option<(K, V)>> = members
            .iter()
            .map(|(name, v)| {
                let here = at.field(name);
                let key = K::from_text(name).map_err(|d| errors.push(&here, format!("name {d}")));
                let value = V::from_json(v, &here, errors);
                Some((key.ok()?, value?))
            })
            .collect();
        read.into_iter().collect()
    }
}

/// Arbitrary JSON the platform stores without interpreting (for example `metadata`).
/// Only its shape is checked: it must be an object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpaqueObject(pub Map<String, serde_json::Value>);

impl FromJson for OpaqueObject {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        match value.to_serde() {
            serde_json::Value::Object(map) => Some(Self(map)),
            _ => {
                errors.push(at, format!("must be an object, not {}", kind(value)));
                None
            }
        }
    }
}

/// What a PATCH says about one field: leave it, clear it (`null` or `""`), or set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patch<T> {
    /// The field is absent: keep the stored value.
    Keep,
    /// The field is `null` or the empty string: remove the stored value.
    Clear,
    /// The field has a new value.
    Set(T),
}

impl<T> Patch<T> {
    /// Whether the field was mentioned at all.
    pub fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }
}

/// A PATCH serialises as what it sets: the value, or `null` for a removal (a kept field is
/// normally skipped with `skip_serializing_if = "Patch::is_keep"`).
impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Set(value) => value.serialize(serializer),
            Patch::Keep | Patch::Clear => serializer.serialize_none(),
        }
    }
}

/// The members of one JSON object being read; every member must be claimed by a reader call,
/// and [`Object::finish`] reports the ones nobody claimed as unknown fields.
pub struct Object<'v, 'p> {
    members: &'v [(Cow<'v, str>, Value<'v>)],
    at: &'p Pointer<'p>,
    known: Vec<&'static str>,
    /// Bit i: member i was claimed (objects of at most 64 members, so a body whose members are
    /// all known is finished without comparing names again).
    claimed: u64,
}

impl<'v, 'p> Object<'v, 'p> {
    /// Starts reading `value`, found at `at`, which must be an object.
    pub fn open(
        value: &'v Value<'v>,
        at: &'p Pointer<'p>,
        errors: &mut FieldErrors,
    ) -> Option<Self> {
        let Some(members) = value.as_object() else {
            errors.push(at, format!("must be a JSON object, not {}", kind(value)));
            return None;
        };
        Some(Self {
            members,
            at,
            // Room for every schema's fields, so claiming never grows the list.
            known: Vec::with_capacity(16),
            claimed: 0,
        })
    }

    /// Records `name` as a field of this object and returns its member, if present.
    fn claim(&mut self, name: &'static str) -> Option<&'v Value<'v>> {
        self.known.push(name);
        let (index, (_, value)) = self
            .members
            .iter()
            .enumerate()
            .find(|(_, (n, _))| n == name)?;
        if index < 64 {
            self.claimed |= 1 << index;
        }
        Some(value)
    }

    /// The pointer to member `name`.
    pub fn pointer<'s>(&'s self, name: &'s str) -> Pointer<'s> {
        self.at.field(name)
    }

    /// Reads a member that must be present and not `null`.
    pub fn required<T: FromJson>(
        &mut self,
        name: &'static str,
        errors: &mut FieldErrors,
    ) -> Option<T> {
        match self.claim(name) {
            None | Some(Value::Null) => {
                errors.push(&self.at.field(name), "is required");
                None
            }
            Some(value) => T::from_json(value, &self.at.field(name), errors),
        }
    }

    /// Reads a member that may be absent or `null`. The outer `Option` is `None` when the member
    /// was present but invalid (an error was recorded); the inner one is absence.
    pub fn optional<T: FromJson>(
        &mut self,
        name: &'static str,
        errors: &mut FieldErrors,
    ) -> Option<Option<T>> {
        match self.claim(name) {
            None | Some(Value::Null) => Some(None),
            Some(value) => T::from_json(value, &self.at.field(name), errors).map(Some),
        }
    }

    /// Reads a PATCH member: absent keeps, `null` or `""` clears, anything else must be a `T`.
    pub fn patch<T: FromJson>(
        &mut self,
        name: &'static str,
        errors: &mut FieldErrors,
    ) -> Option<Patch<T>> {
        match self.claim(name) {
            None => Some(Patch::Keep),
            Some(Value::Null) => Some(Patch::Clear),
            Some(Value::String(s)) if s.is_empty() => Some(Patch::Clear),
            Some(value) => T::from_json(value, &self.at.field(name), errors).map(Patch::Set),
        }
    }

    /// Reads an optional member that may also be sent under a second, legacy name; sending both
    /// is an error because the two could disagree.
    pub fn optional_aliased<T: FromJson>(
        &mut self,
        name: &'static str,
        alias: &'static str,
        errors: &mut FieldErrors,
    ) -> Option<Option<T>> {
        let both = self.is_set(name) && self.is_set(alias);
        let primary = self.optional(name, errors);
        let secondary = self.optional(alias, errors);
        if both {
            errors.push(
                &self.at.field(alias),
                format!("send either {name} or {alias}, not both"),
            );
            return None;
        }
        Some(primary?.or(secondary?))
    }

    /// Whether member `name` is present and not `null`.
    pub fn is_set(&self, name: &str) -> bool {
        member(self.members, name).is_some_and(|v| !v.is_null())
    }

    /// Whether member `name` holds a value: present, not `null`, not `""`.
    pub fn is_filled(&self, name: &str) -> bool {
        match member(self.members, name) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        }
    }

    /// Whether the object has no members at all.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Reports every member that no reader call claimed.
    pub fn finish(self, errors: &mut FieldErrors) {
        // Only members below index 64 have a bit, each set once.
        let all_claimed = self.members.len() <= 64
            && usize::try_from(self.claimed.count_ones()) == Ok(self.members.len());
        if all_claimed {
            return;
        }
        for (name, _) in self.members {
            if !self.known.contains(&name.as_ref()) {
                let mut expected = self.known.clone();
                expected.sort_unstable();
                errors.push(
                    &self.at.field(name),
                    format!("unknown field; expected one of: {}", expected.join(", ")),
                );
            }
        }
    }
}

/// Parses a request body and reads it as `T`, collecting every problem.
///
/// A body that is not JSON at all gets a single error at the root pointer saying where the
/// syntax broke.
pub fn parse_body<T: FromJson>(bytes: &[u8]) -> Result<T, FieldErrors> {
    let mut errors = FieldErrors::default();
    let value: Value<'_> = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => {
            errors.push(
                &Pointer::root(),
                format!(
                    "body is not valid JSON: {} at line {} column {}",
                    syntax_problem(&e),
                    e.line(),
                    e.column()
                ),
            );
            return Err(errors);
        }
    };
    let read = T::from_json(&value, &Pointer::root(), &mut errors);
    errors.into_result(read)
}

/// serde_json's message without its own " at line L column C" suffix (we add ours) and without
/// echoing any of the input, which might be a secret.
fn syntax_problem(error: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    if error.to_string().starts_with(DUPLICATE_MEMBER) {
        return DUPLICATE_MEMBER;
    }
    match error.classify() {
        Category::Eof => "the body ends too early",
        Category::Syntax => "syntax error",
        Category::Data | Category::Io => "unreadable value",
    }
}

/// The JSON type of `value`, for error messages (never the value itself).
pub fn kind(value: &Value<'_>) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escapes_tilde_and_slash_per_rfc6901() {
        let root = Pointer::root();
        let a = root.field("a/b");
        let m = a.field("m~n");
        assert_eq!(m.index(3).to_string(), "/a~1b/m~0n/3");
        assert_eq!(root.to_string(), "");
        assert_eq!(root.field("~/~").to_string(), "/~0~1~0");
        assert_eq!(root.field("").to_string(), "/");
    }

    #[derive(Debug)]
    struct Pair {
        left: bool,
        right: Ranged<1, 300>,
    }

    impl FromJson for Pair {
        fn from_json(
            value: &Value<'_>,
            at: &Pointer<'_>,
            errors: &mut FieldErrors,
        ) -> Option<Self> {
            let mut object = Object::open(value, at, errors)?;
            let left = object.required("left", errors);
            let right = object.required("right", errors);
            object.finish(errors);
            Some(Self {
                left: left?,
                right: right?,
            })
        }
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let errors = parse_body::<Pair>(br#"{"left": "yes", "right": 301, "extra": 1}"#)
            .expect_err("invalid");
        assert!(errors.has("/left"));
        assert!(errors.has("/right"));
        assert!(errors.has("/extra"));
        assert_eq!(errors.as_slice().len(), 3);
    }

    #[test]
    fn valid_object_is_read() {
        let pair = parse_body::<Pair>(br#"{"left": true, "right": 300}"#).expect("valid");
        assert!(pair.left);
        assert_eq!(pair.right.get(), 300);
    }

    #[test]
    fn missing_and_null_required_fields_are_reported() {
        let errors = parse_body::<Pair>(br#"{"left": null}"#).expect_err("invalid");
        assert_eq!(
            errors.to_string(),
            "/left: is required; /right: is required"
        );
    }

    #[test]
    fn syntax_errors_point_at_the_body_and_do_not_echo_input() {
        let errors = parse_body::<Pair>(br#"{"left": hunter2"#).expect_err("invalid");
        assert_eq!(errors.as_slice().len(), 1);
        assert_eq!(errors.as_slice()[0].pointer, "");
        assert!(!errors.to_string().contains("hunter2"));
    }

    #[test]
    fn a_repeated_member_is_an_error_at_the_body_not_a_silent_choice() {
        let errors = parse_body::<Pair>(br#"{"left": true, "right": 1, "left": false}"#)
            .expect_err("duplicate");
        assert_eq!(
            errors.to_string(),
            format!("(body): body is not valid JSON: {DUPLICATE_MEMBER} at line 1 column 41")
        );
    }

    #[test]
    fn array_elements_are_pointed_at_by_index() {
        let mut errors = FieldErrors::default();
        let value: Value<'_> = serde_json::from_str(r#"[true, 1, false, "x"]"#).expect("JSON");
        let read = Vec::<bool>::from_json(&value, &Pointer::root(), &mut errors);
        assert!(read.is_none());
        assert!(errors.has("/1"));
        assert!(errors.has("/3"));
    }

    #[test]
    fn fractional_and_huge_numbers_are_out_of_range_not_wrapped() {
        for text in ["1.5", "1e300", "18446744073709551615"] {
            let value: Value<'_> = serde_json::from_str(text).expect("JSON");
            let mut errors = FieldErrors::default();
            assert!(Ranged::<1, 300>::from_json(&value, &Pointer::root(), &mut errors).is_none());
            assert_eq!(
                errors.as_slice()[0].detail,
                "must be an integer from 1 to 300"
            );
        }
    }

    #[test]
    fn text_check_counts_characters_and_finds_controls_like_char_does() {
        for c in (0..=0x3000)
            .chain(0x1_0000..=0x1_0100)
            .filter_map(char::from_u32)
        {
            for text in [
                c.to_string(),
                format!("ab{c}"),
                format!("{c}\u{a0}"),
                format!("é{c}"),
            ] {
                for max in [1, 2, 3] {
                    assert_eq!(
                        check_text(&text, max),
                        check_text_reference(&text, max),
                        "{text:?}"
                    );
                }
            }
        }
    }

    fn check_text_reference(text: &str, max: usize) -> Result<(), String> {
        if text.chars().count() > max {
            Err(format!("must be at most {max} characters long"))
        } else if text.chars().any(char::is_control) {
            Err("must not contain control characters".to_owned())
        } else {
            Ok(())
        }
    }

    #[test]
    fn text_check_finds_a_control_at_any_place_in_a_word_or_the_tail() {
        let borders = [
            '\0', '\t', '\x1f', ' ', '~', '\x7f', '\u{80}', '\u{9f}', '\u{a0}', 'é',
        ];
        for len in [8, 15, 16, 23] {
            for at in 0..len {
                for c in borders {
                    let mut text: String = "a".repeat(len);
                    text.replace_range(at..=at, &c.to_string());
                    for max in [len - 1, len, len + 1] {
                        assert_eq!(
                            check_text(&text, max),
                            check_text_reference(&text, max),
                            "{text:?} max {max}"
                        );
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn text_check_agrees_with_char_on_any_text(
            text in "[a-z\\x00-\\x1f\\x7f\\u{80}-\\u{a0}é€😀 ]{0,40}",
            max in 0usize..45,
        ) {
            proptest::prop_assert_eq!(check_text(&text, max), check_text_reference(&text, max));
        }
    }

    #[test]
    fn text_rejects_control_characters() {
        assert!(String::from_text("line\r\nInjected: yes").is_err());
        assert!(String::from_text("plain words").is_ok());
    }
}
