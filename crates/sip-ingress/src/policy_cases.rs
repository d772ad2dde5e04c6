//! `sip-ingress policy test`: runs a policy module in wasmtime, exactly as the ingress runs it
//! (same host, limits and fail-closed path), against a case file, and reports every case.
//!
//! A case file is TOML, one `[[case]]` table per INVITE:
//!
//! ```toml
//! [[case]]
//! name = "an agent is reached by its username"
//! source = "127.0.0.1:5070"                 # the packet's source address and port
//! transport = "udp"                         # optional: udp (default) or tcp
//! request_uri = "sip:sales@127.0.0.1"
//! from = "\"Caller\" <sip:+15551230000@pbx.example>"
//! to = "<sip:sales@127.0.0.1>"              # optional: the Request-URI
//! headers = { "User-Agent" = "PBX 1.0" }    # optional: as received (for `[policy] headers`)
//! expect = "forward sip:sales@127.0.0.1:5090"   # or "reject 404 [reason]", "drop [reason]"
//! next_hop = "127.0.0.1:5090"               # optional, for forward
//! add_headers = { "X-Dest-User" = "sales.desk" }  # optional, for forward: exactly these
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;

use crate::admission::live::{Generation, LivePolicy};
use crate::admission::registrars::Registrars;
use crate::admission::{self, Admit, Facts, Text, Verdict};
use crate::metrics::Metrics;
use crate::sip::Transport;
use crate::sip::head::canonical_name;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawTransport {
    #[default]
    Udp,
    Tcp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    source: SocketAddr,
    #[serde(default)]
    transport: RawTransport,
    request_uri: String,
    from: String,
    to: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect: String,
    next_hop: Option<String>,
    add_headers: Option<BTreeMap<String, String>>,
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Forward(String),
    Reject(u16, Option<String>),
    Drop(Option<String>),
}

fn expected(text: &str) -> Result<Expected, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["forward", uri] => Ok(Expected::Forward((*uri).to_owned())),
        ["reject", code, rest @ ..] if rest.len() <= 1 => Ok(Expected::Reject(
            code.parse()
                .map_err(|_| format!("{code:?} is not a status code"))?,
            rest.first().map(|r| (*r).to_owned()),
        )),
        ["drop", rest @ ..] if rest.len() <= 1 => {
            Ok(Expected::Drop(rest.first().map(|r| (*r).to_owned())))
        }
        _ => Err(format!(
            "expect {text:?}: write \"forward URI\", \"reject CODE [REASON]\" or \"drop [REASON]\""
        )),
    }
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The case's name.
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

fn hop(forward: &admission::Forward) -> String {
    let host = &forward.next_hop.host;
    if host.contains(':') {
        format!("[{host}]:{}", forward.next_hop.port)
    } else {
        format!("{host}:{}", forward.next_hop.port)
    }
}

fn describe(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Forward(forward) => {
            let mut text = format!("forward {} via {}", forward.agent_uri, hop(forward));
            for (name, value) in &forward.headers {
                text.push_str(&format!(" +{name}: {value}"));
            }
            text
        }
        Verdict::Reject { code, reason } => format!("reject {code} {reason}"),
        Verdict::Drop { reason } => format!("drop {reason}"),
    }
}

fn check(case: &Case, expected: &Expected, verdict: &Verdict) -> Result<(), String> {
    let matches = match (expected, verdict) {
        (Expected::Forward(uri), Verdict::Forward(forward)) => {
            let headers: BTreeMap<String, String> = forward.headers.iter().cloned().collect();
            let wanted = case.add_headers.as_ref().map(|h| {
                h.iter()
                    .map(|(name, value)| (canonical_name(name), value.clone()))
                    .collect::<BTreeMap<_, _>>()
            });
            *uri == forward.agent_uri
                && case.next_hop.as_ref().is_none_or(|h| *h == hop(forward))
                && wanted.is_none_or(|wanted| wanted == headers)
        }
        (
            Expected::Reject(code, reason),
            Verdict::Reject {
                code: got,
                reason: why,
            },
        ) => code == got && reason.as_ref().is_none_or(|r| r == why.as_str()),
        (Expected::Drop(reason), Verdict::Drop { reason: why }) => {
            reason.as_ref().is_none_or(|r| r == why.as_str())
        }
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        let mut wanted = case.expect.clone();
        if let Some(next_hop) = &case.next_hop {
            wanted.push_str(&format!(" via {next_hop}"));
        }
        for (name, value) in case.add_headers.iter().flatten() {
            wanted.push_str(&format!(" +{name}: {value}"));
        }
        Err(format!("expected {wanted}, got {}", describe(verdict)))
    }
}

fn facts(case: &Case) -> Facts {
    let to = case.to.as_deref().unwrap_or(&case.request_uri);
    let text = Text::of(&case.request_uri, &case.from, to);
    let headers: Vec<(String, &str)> = case
        .headers
        .iter()
        .map(|(name, value)| (canonical_name(name), value.as_str()))
        .collect();
    let transport = match case.transport {
        RawTransport::Udp => Transport::Udp,
        RawTransport::Tcp => Transport::Tcp,
    };
    Facts::new(
        case.source,
        transport,
        text,
        headers.iter().map(|(name, value)| (name.as_str(), *value)),
    )
}

/// Runs every case of `cases` (case-file text) against `generation`.
pub fn run(generation: Generation, cases: &str) -> Result<Vec<Outcome>, String> {
    let file: CaseFile = toml::from_str(cases).map_err(|e| e.to_string())?;
    let expectations = file
        .cases
        .iter()
        .map(|case| expected(&case.expect).map_err(|e| format!("case {:?}: {e}", case.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let (_publish, updates) = watch::channel(Arc::new(generation));
    let mut policy = LivePolicy::new(updates, Registrars::default(), Arc::new(Metrics::default()));
    Ok(file
        .cases
        .iter()
        .zip(&expectations)
        .map(|(case, expected)| Outcome {
            name: case.name.clone(),
            failure: check(case, expected, &policy.decide(facts(case))).err(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_parse() {
        assert_eq!(
            expected("forward sip:a@b"),
            Ok(Expected::Forward("sip:a@b".into()))
        );
        assert_eq!(expected("reject 404"), Ok(Expected::Reject(404, None)));
        assert_eq!(
            expected("reject 404 from_not_e164"),
            Ok(Expected::Reject(404, Some("from_not_e164".into())))
        );
        assert_eq!(expected("drop"), Ok(Expected::Drop(None)));
        for bad in ["", "forward", "reject x", "drop a b", "accept"] {
            assert!(expected(bad).is_err(), "{bad}");
        }
    }
}
