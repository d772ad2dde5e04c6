//! Every message of RFC 4475 and RFC 5118 (in `shared/conformance/`) gets the behaviour its
//! INDEX.tsv describes, received as a UDP datagram: parsed, answered with the listed status, or
//! dropped. The table below is the
//! ingress's reading of each INDEX line; a message missing from it, or a table entry without a
//! message, fails the test.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sip_ingress::sip::check::{Verdict, classify_datagram};

/// The expected outcome of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A request that may be routed.
    Request,
    /// A response for the transaction layer.
    Response,
    /// Answered with this status.
    Status(u16),
    /// Dropped silently.
    Drop,
}

use Expect::*;

fn expectations() -> BTreeMap<&'static str, Expect> {
    BTreeMap::from([
        // RFC 4475 3.1.1: valid messages.
        ("rfc4475/wsinv", Request),
        ("rfc4475/intmeth", Request), // unknown method: routing decides (404 for unknown URIs)
        ("rfc4475/esc01", Request),
        ("rfc4475/escnull", Request),
        ("rfc4475/esc02", Request),
        ("rfc4475/lwsdisp", Request),
        ("rfc4475/longreq", Request),
        ("rfc4475/dblreq", Request), // the trailing INVITE octets are not part of it
        ("rfc4475/semiuri", Request),
        ("rfc4475/transports", Request),
        ("rfc4475/mpart01", Request),
        ("rfc4475/unreason", Response),
        ("rfc4475/noreason", Response),
        // RFC 4475 3.1.2: invalid messages.
        ("rfc4475/badinv01", Status(400)),
        ("rfc4475/clerr", Status(400)),
        ("rfc4475/ncl", Status(400)),
        ("rfc4475/scalar02", Status(400)),
        ("rfc4475/scalarlg", Drop),
        ("rfc4475/quotbal", Status(400)),
        ("rfc4475/ltgtruri", Status(400)),
        ("rfc4475/lwsruri", Status(400)),
        ("rfc4475/lwsstart", Status(400)),
        ("rfc4475/trws", Status(400)),
        ("rfc4475/escruri", Status(400)),
        ("rfc4475/baddate", Request), // the Date value does not matter to a proxy
        ("rfc4475/regbadct", Status(400)),
        ("rfc4475/badaspec", Status(400)),
        ("rfc4475/baddn", Status(400)),
        ("rfc4475/badvers", Status(505)),
        ("rfc4475/mismatch01", Status(400)),
        ("rfc4475/mismatch02", Status(400)), // 400 is acceptable per RFC 4475 3.1.2.18
        ("rfc4475/bigcode", Drop),
        // RFC 4475 3.2 to 3.4: transaction, application and backward-compatibility semantics.
        ("rfc4475/badbranch", Status(400)),
        ("rfc4475/insuf", Status(400)),
        ("rfc4475/unkscm", Status(416)),
        ("rfc4475/novelsc", Status(416)),
        ("rfc4475/unksm2", Request),
        ("rfc4475/bext01", Status(420)),
        ("rfc4475/invut", Request),
        ("rfc4475/regaut01", Request),
        ("rfc4475/multi01", Status(400)),
        ("rfc4475/mcl01", Status(400)),
        ("rfc4475/bcast", Drop),
        ("rfc4475/zeromf", Status(483)),
        ("rfc4475/cparam01", Request),
        ("rfc4475/cparam02", Request),
        ("rfc4475/regescrt", Request),
        ("rfc4475/sdp01", Request),
        ("rfc4475/inv2543", Request), // RFC 2543 backward compatibility, as longreq needs
        // RFC 5118: IPv6.
        ("rfc5118/ipv6-good", Request),
        ("rfc5118/ipv6-bad", Status(400)),
        ("rfc5118/port-ambiguous", Request),
        ("rfc5118/port-unambiguous", Request),
        ("rfc5118/via-received-param-with-delim", Request),
        ("rfc5118/via-received-param-no-delim", Request),
        ("rfc5118/ipv6-in-sdp", Status(400)), // published Content-Length exceeds the body
        ("rfc5118/mult-ip-in-header", Request),
        ("rfc5118/mult-ip-in-sdp", Request),
        ("rfc5118/ipv4-mapped-ipv6", Request),
        ("rfc5118/ipv6-bug-abnf-3-colons", Status(400)),
        ("rfc5118/ipv6-correct-abnf-2-colons", Request),
    ])
}

fn conformance_dir() -> PathBuf {
    let shared = std::env::var_os("TRUNKGUARD_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    shared.join("conformance")
}

fn outcome(verdict: &Verdict) -> Expect {
    match verdict {
        Verdict::Request(_) => Request,
        Verdict::Response(_) => Response,
        Verdict::Reject(r) => Status(r.code),
        Verdict::Drop(_) => Drop,
    }
}

#[test]
fn every_torture_message_gets_its_indexed_behaviour() {
    let expected = expectations();
    let mut seen = Vec::new();
    let mut failures = Vec::new();
    for suite in ["rfc4475", "rfc5118"] {
        let index = conformance_dir().join(suite).join("INDEX.tsv");
        let index =
            std::fs::read_to_string(&index).unwrap_or_else(|e| panic!("{}: {e}", index.display()));
        for line in index.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let name = line.split('\t').next().unwrap_or_default();
            let key = format!("{suite}/{name}");
            let path = conformance_dir().join(suite).join(format!("{name}.dat"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let Some(want) = expected.get(key.as_str()) else {
                failures.push(format!("{key}: no expectation in the table"));
                continue;
            };
            seen.push(key.clone());
            let verdict = classify_datagram(&bytes);
            if outcome(&verdict) != *want {
                failures.push(format!("{key}: expected {want:?}, got {verdict:?}"));
            }
        }
    }
    for key in expected.keys() {
        if !seen.iter().any(|s| s == key) {
            failures.push(format!("{key}: in the table but not in any INDEX.tsv"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_fixed_rfc5118_messages_parse() {
    let dir = conformance_dir().join("rfc5118").join("clfixed");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "dat") {
            let bytes = std::fs::read(&path).expect("readable");
            let verdict = classify_datagram(&bytes);
            assert!(
                matches!(verdict, Verdict::Request(_)),
                "{}: {verdict:?}",
                path.display()
            );
            count += 1;
        }
    }
    assert!(count > 0, "no messages in {}", dir.display());
}

#[test]
fn the_trailing_octets_of_dblreq_are_not_part_of_the_message() {
    let bytes = std::fs::read(conformance_dir().join("rfc4475/dblreq.dat")).expect("readable");
    let Verdict::Request(request) = classify_datagram(&bytes) else {
        panic!("not a request")
    };
    assert_eq!(request.method, "REGISTER");
    assert_eq!(request.frame.body_len, 0);
    assert!(request.frame.len() < bytes.len());
}

#[test]
fn mpart01_keeps_its_binary_body_byte_for_byte() {
    let bytes = std::fs::read(conformance_dir().join("rfc4475/mpart01.dat")).expect("readable");
    let Verdict::Request(request) = classify_datagram(&bytes) else {
        panic!("not a request")
    };
    let body = &bytes[request.frame.body_start..request.frame.len()];
    assert!(body.contains(&0), "the body's NUL octets are kept");
    let length: usize = request
        .head
        .first("Content-Length")
        .expect("CL")
        .value
        .parse()
        .expect("n");
    assert_eq!(body.len(), length);
}

#[test]
fn bext01_is_answered_420_with_the_unsupported_tags() {
    let bytes = std::fs::read(conformance_dir().join("rfc4475/bext01.dat")).expect("readable");
    let Verdict::Reject(rejection) = classify_datagram(&bytes) else {
        panic!("not rejected")
    };
    assert_eq!(rejection.code, 420);
    let (name, value) = &rejection.headers[0];
    assert_eq!(name, "Unsupported");
    assert_eq!(value, "noProxiesSupportThis, norDoAnyProxiesSupportThis");
}

#[test]
fn baddn_is_refused_for_its_display_name() {
    let bytes = std::fs::read(conformance_dir().join("rfc4475/baddn.dat")).expect("readable");
    let Verdict::Reject(rejection) = classify_datagram(&bytes) else {
        panic!("not rejected")
    };
    assert!(
        rejection.detail.contains("display name"),
        "{}",
        rejection.detail
    );
}
