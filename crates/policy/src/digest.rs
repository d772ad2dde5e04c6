//! Digest authentication as SIP uses it (RFC 3261 section 22.4, with the algorithms of RFC 7616
//! and RFC 8760): a challenge (`WWW-Authenticate` / `Proxy-Authenticate`) read, the response
//! computed, and the credentials (`Authorization` / `Proxy-Authorization`) written.
//!
//! Both sides share [`response`]: the ingress answering a PBX's 401/407 as a registering client,
//! and (later) the ingress challenging a trunk. Nothing here draws randomness or reads a clock:
//! the client nonce and the nonce count are the caller's.
//!
//! Supported: `MD5` (the default when a challenge names none) and `SHA-256`, each with `qop=auth`
//! or without qop (RFC 2069 compatibility, RFC 7616 section 3.4.1). `-sess` algorithms and
//! `auth-int` are not: a challenge offering only those is [`ChallengeError::Unsupported`].

use std::fmt;
use std::fmt::Write as _;

use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (RFC 7616 section 3.2; what a challenge without `algorithm` means).
    Md5,
    /// `SHA-256` (RFC 7616 section 3.2, RFC 8760 for SIP).
    Sha256,
}

impl Algorithm {
    /// The name written in challenges and credentials.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// The lower-case hex digest of `data`.
    pub fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A digest challenge (RFC 7616 section 3.3), as read from one header field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space.
    pub realm: String,
    /// The server's nonce.
    pub nonce: String,
    /// Sent back unchanged, when present.
    pub opaque: Option<String>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Whether `qop=auth` is offered (else the RFC 2069 form is used).
    pub qop_auth: bool,
    /// `stale=true`: the nonce expired, the credentials were right (RFC 7616 section 3.3).
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeError {
    /// The value is not `Digest` followed by parameters.
    NotDigest,
    /// A required parameter (`realm`, `nonce`) is missing.
    Missing(&'static str),
    /// The algorithm or qop is one this side does not implement.
    Unsupported(String),
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChallengeError::NotDigest => f.write_str("not a Digest challenge"),
            ChallengeError::Missing(name) => write!(f, "the challenge has no {name}"),
            ChallengeError::Unsupported(what) => write!(f, "unsupported {what}"),
        }
    }
}

impl std::error::Error for ChallengeError {}

/// The `name=value` parameters of an auth-param list, values unquoted (RFC 7235 section 2.1):
/// commas inside quoted strings do not split, and `\` escapes inside them.
fn params(list: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = rest[eq + 1..].trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    other => value.push(other),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((name, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

impl Challenge {
    /// Reads a `WWW-Authenticate` or `Proxy-Authenticate` value.
    pub fn parse(value: &str) -> Result<Self, ChallengeError> {
        let value = value.trim();
        let (scheme, list) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(ChallengeError::NotDigest);
        }
        let params = params(list);
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(name) if name.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            Some(name) if name.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            Some(other) => return Err(ChallengeError::Unsupported(format!("algorithm {other}"))),
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(qops) => {
                let auth = qops
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"));
                if !auth {
                    return Err(ChallengeError::Unsupported(format!("qop {qops}")));
                }
                true
            }
        };
        Ok(Self {
            realm: get("realm").ok_or(ChallengeError::Missing("realm"))?,
            nonce: get("nonce").ok_or(ChallengeError::Missing("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// What the `qop=auth` form adds to a response: the nonce count and the client nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qop<'a> {
    /// How many requests this client made with the nonce, this one included (from 1).
    pub nc: u32,
    /// The client's nonce.
    pub cnonce: &'a str,
}

/// The inputs of a digest response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The user name authenticated.
    pub username: &'a str,
    /// The realm.
    pub realm: &'a str,
    /// The password.
    pub password: &'a str,
    /// The request's method.
    pub method: &'a str,
    /// The digest URI (the Request-URI).
    pub uri: &'a str,
    /// The server's nonce.
    pub nonce: &'a str,
    /// The `qop=auth` values, or None for the form without qop.
    pub qop: Option<Qop<'a>>,
}

/// The `response` value (RFC 7616 section 3.4.1): `H(H(A1):nonce:nc:cnonce:qop:H(A2))`, or
/// `H(H(A1):nonce:H(A2))` without qop, with `A1 = username:realm:password` and
/// `A2 = method:uri`.
pub fn response(inputs: &Inputs<'_>) -> String {
    let algorithm = inputs.algorithm;
    let ha1 = algorithm.hex(&format!(
        "{}:{}:{}",
        inputs.username, inputs.realm, inputs.password
    ));
    let ha2 = algorithm.hex(&format!("{}:{}", inputs.method, inputs.uri));
    match inputs.qop {
        Some(qop) => algorithm.hex(&format!(
            "{ha1}:{}:{:08x}:{}:auth:{ha2}",
            inputs.nonce, qop.nc, qop.cnonce
        )),
        None => algorithm.hex(&format!("{ha1}:{}:{ha2}", inputs.nonce)),
    }
}

/// Quotes `value` as a quoted-string.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The credentials answering `challenge` (an `Authorization` or `Proxy-Authorization` value)
/// for a `method` request to `uri`, as `username` with `password`; with `qop=auth` when the
/// challenge offers it, numbered `nc` with client nonce `cnonce`.
pub fn authorization(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let qop = challenge.qop_auth.then_some(Qop { nc, cnonce });
    let response = response(&Inputs {
        algorithm: challenge.algorithm,
        username,
        realm: &challenge.realm,
        password,
        method,
        uri,
        nonce: &challenge.nonce,
        qop,
    });
    let mut value = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={}",
        quoted(username),
        quoted(&challenge.realm),
        quoted(&challenge.nonce),
        quoted(uri),
        challenge.algorithm.as_str(),
    );
    if let Some(qop) = qop {
        let _ = write!(
            value,
            ", qop=auth, nc={:08x}, cnonce={}",
            qop.nc,
            quoted(qop.cnonce)
        );
    }
    if let Some(opaque) = &challenge.opaque {
        let _ = write!(value, ", opaque={}", quoted(opaque));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 section 3.9.1: the same request, answered with MD5 and with SHA-256.
    fn rfc_7616_example(algorithm: Algorithm) -> String {
        response(&Inputs {
            algorithm,
            username: "Mufasa",
            realm: "http-auth@example.org",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop: Some(Qop {
                nc: 1,
                cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            }),
        })
    }

    #[test]
    fn the_rfc_7616_md5_example_gives_its_response() {
        assert_eq!(
            rfc_7616_example(Algorithm::Md5),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn the_rfc_7616_sha_256_example_gives_its_response() {
        assert_eq!(
            rfc_7616_example(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn the_rfc_2617_form_without_qop_hashes_nonce_and_a2_only() {
        // RFC 2617 section 3.5's values, without qop (RFC 2069 compatibility).
        let inputs = Inputs {
            algorithm: Algorithm::Md5,
            username: "Mufasa",
            realm: "testrealm@host.com",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop: None,
        };
        let ha1 = Algorithm::Md5.hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = Algorithm::Md5.hex("GET:/dir/index.html");
        assert_eq!(
            response(&inputs),
            Algorithm::Md5.hex(&format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}"))
        );
    }

    #[test]
    fn a_challenge_is_read_with_quoted_commas_and_defaults() {
        let challenge = Challenge::parse(
            "Digest realm=\"pbx, the one\", nonce=\"abc\", qop=\"auth,auth-int\", opaque=\"o\", stale=TRUE",
        )
        .expect("challenge");
        assert_eq!(challenge.realm, "pbx, the one");
        assert_eq!(challenge.nonce, "abc");
        assert_eq!(challenge.opaque.as_deref(), Some("o"));
        assert_eq!(
            challenge.algorithm,
            Algorithm::Md5,
            "MD5 when none is named"
        );
        assert!(challenge.qop_auth && challenge.stale);
        let sha = Challenge::parse("digest realm=r,nonce=n,algorithm=SHA-256").expect("sha");
        assert_eq!((sha.algorithm, sha.qop_auth), (Algorithm::Sha256, false));
    }

    #[test]
    fn challenges_that_cannot_be_answered_say_why() {
        assert_eq!(
            Challenge::parse("Basic realm=\"r\""),
            Err(ChallengeError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(ChallengeError::Missing("realm"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=r, nonce=n, algorithm=SHA-512-256"),
            Err(ChallengeError::Unsupported(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=r, nonce=n, qop=auth-int"),
            Err(ChallengeError::Unsupported(_))
        ));
    }

    #[test]
    fn credentials_carry_what_the_server_recomputes() {
        let challenge = Challenge::parse(
            "Digest realm=\"pbx.example\", nonce=\"n1\", qop=\"auth\", algorithm=SHA-256, opaque=\"x\"",
        )
        .expect("challenge");
        let value = authorization(
            &challenge,
            "1001",
            "s3cret",
            "REGISTER",
            "sip:pbx.example",
            2,
            "c1",
        );
        let expected = response(&Inputs {
            algorithm: Algorithm::Sha256,
            username: "1001",
            realm: "pbx.example",
            password: "s3cret",
            method: "REGISTER",
            uri: "sip:pbx.example",
            nonce: "n1",
            qop: Some(Qop {
                nc: 2,
                cnonce: "c1",
            }),
        });
        assert_eq!(
            value,
            format!(
                "Digest username=\"1001\", realm=\"pbx.example\", nonce=\"n1\", \
                 uri=\"sip:pbx.example\", response=\"{expected}\", algorithm=SHA-256, \
                 qop=auth, nc=00000002, cnonce=\"c1\", opaque=\"x\""
            )
        );
        assert!(!value.contains("s3cret"), "the password never travels");
    }
}
