//! The proxy core on hostile traffic: whatever arrives, it does not panic, and everything it
//! sends is a message it would itself accept.
//!
//! Each case is a run of steps on one proxy: a caller's message (a RFC 4475 / RFC 5118 torture
//! message or a valid INVITE, CANCEL, BYE, ACK or OPTIONS, mutated byte by byte), the agent's
//! answer to the last request forwarded to it (also mutated), a host-name lookup answered or
//! failed, that last request failing to be sent, or time passing with the timers fired.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::Quota;
use proptest::prelude::*;
use sip_ingress::admission::oracle::NativeRules;
use sip_ingress::config::{Config, DEMO};
use sip_ingress::proxy::{Outgoing, Proxy, Timers};
use sip_ingress::sip::Transport;
use sip_ingress::sip::check::{BROADCAST_NEXT_VIA, Verdict, classify_datagram};
use sip_ingress::sip::frame::frame_datagram;

/// The demo world, with two more agents for the demo's second tenant (`acme`, whose callers
/// come from 127.0.0.4): one at a host name, so INVITEs wait for lookups, and one behind a
/// proxy reached over TCP.
fn world() -> String {
    format!(
        r#"{DEMO}
[[tenants.agents]]
id = "named"
username = "named"
uri = "sip:named@agent.example:5090"

[[tenants.agents]]
id = "desk"
username = "desk"
uri = "sip:desk@127.0.0.1:5090"
route = "127.0.0.1:5090;transport=tcp;proxyAddress=127.0.0.1:5091"
"#
    )
}

/// Valid requests a caller sends (from port 5070 of 127.0.0.1, a demo source, or 127.0.0.4,
/// an acme one), by template. `{n}` is one of [`CALLS`] call numbers, so later steps
/// retransmit, cancel, acknowledge and end earlier calls.
const CALLS: usize = 3;
const REQUESTS: [&str; 7] = [
    "INVITE sip:sales@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}\r\nMax-Forwards: 70\r\nFrom: \"Caller\" <sip:+15551230000@pbx>;tag=c{n}\r\nTo: <sip:sales@127.0.0.1>\r\nCall-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:+15551230000@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
    "INVITE sip:named@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}\r\nFrom: <sip:+15551230000@pbx>;tag=c{n}\r\nTo: <sip:support@127.0.0.1>\r\nCall-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:desk@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}\r\nFrom: <sip:+15551230000@pbx>;tag=c{n}\r\nTo: <sip:support@127.0.0.1>\r\nCall-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    "CANCEL sip:sales@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}\r\nFrom: <sip:+15551230000@pbx>;tag=c{n}\r\nTo: <sip:sales@127.0.0.1>\r\nCall-ID: call-{n}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
    "BYE sip:sales@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye{n}\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:+15551230000@pbx>;tag=c{n}\r\nTo: <sip:sales@127.0.0.1>;tag=a{n}\r\nCall-ID: call-{n}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
    "ACK sip:sales@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack{n}\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:+15551230000@pbx>;tag=c{n}\r\nTo: <sip:sales@127.0.0.1>;tag=a{n}\r\nCall-ID: call-{n}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
    "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo{n}\r\nFrom: <sip:+15551230000@pbx>;tag=c{n}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: options-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
];

/// Every torture message in `shared/conformance/`.
fn torture_messages() -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    for suite in ["rfc4475", "rfc5118"] {
        let dir = trunkguard::shared_dir().join("conformance").join(suite);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "dat"));
        for entry in entries {
            messages.push(std::fs::read(entry.path()).expect("readable"));
        }
    }
    assert!(messages.len() > 40, "torture messages missing");
    messages
}

/// One change to a message's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Replace { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
    RepeatLine { at: usize },
}

impl Mutation {
    fn apply(&self, message: &mut Vec<u8>) {
        let place = |at: usize| at % (message.len() + 1);
        match self {
            Mutation::Replace { at, byte } if !message.is_empty() => {
                let at = at % message.len();
                message[at] = *byte;
            }
            Mutation::Replace { .. } => {}
            Mutation::Insert { at, bytes } => {
                let at = place(*at);
                message.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete { at, len } => {
                let at = place(*at);
                let end = (at + len).min(message.len());
                message.drain(at..end);
            }
            Mutation::Truncate { at } => message.truncate(place(*at)),
            Mutation::RepeatLine { at } => {
                let at = place(*at);
                let start = message[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = message[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(message.len(), |i| at + i + 1);
                let line = message[start..end].to_vec();
                message.splice(end..end, line);
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to a SIP parser more often than chance would pick them.
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"\r\n:;,<>\"\\ \t=@%0123456789".to_vec()),
    ];
    prop_oneof![
        (any::<usize>(), byte).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(vec![
                    b"\r\n".to_vec(),
                    b"\r\n\r\n".to_vec(),
                    b"Content-Length: 99999\r\n".to_vec(),
                    b"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKloop\r\n".to_vec(),
                    b"Max-Forwards: 0\r\n".to_vec(),
                    b";tag=x".to_vec(),
                    b"Proxy-Require: foo\r\n".to_vec(),
                    b"Route: <sip:127.0.0.1:5060;lr>\r\n".to_vec(),
                ]),
            ]
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        any::<usize>().prop_map(|at| Mutation::RepeatLine { at }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    /// A caller's request: a template of [`REQUESTS`] or a torture message, mutated.
    Caller {
        seed: usize,
        torture: bool,
        from_acme: bool,
        tcp: bool,
        mutations: Vec<Mutation>,
    },
    /// The agent answers the last request forwarded to it with `REPLIES[reply]`, mutated.
    Agent {
        reply: usize,
        mutations: Vec<Mutation>,
    },
    /// The host-name lookups asked for so far are answered (with 127.0.0.1 and 127.0.0.9, or
    /// with nothing).
    Resolve { found: bool },
    /// The last request sent to the agent could not be sent (a refused connection).
    Undeliverable,
    /// Time passes and due timers fire.
    Wait { millis: u64 },
}

const REPLIES: [u16; 8] = [100, 180, 183, 200, 404, 486, 487, 503];

fn step() -> impl Strategy<Value = Step> {
    let mutations = || prop::collection::vec(mutation(), 0..4);
    prop_oneof![
        4 => (any::<usize>(), any::<bool>(), any::<bool>(), any::<bool>(), mutations())
            .prop_map(|(seed, torture, from_acme, tcp, mutations)| Step::Caller {
                seed, torture, from_acme, tcp, mutations,
            }),
        3 => (0..REPLIES.len(), mutations()).prop_map(|(reply, mutations)| Step::Agent { reply, mutations }),
        1 => any::<bool>().prop_map(|found| Step::Resolve { found }),
        1 => Just(Step::Undeliverable),
        1 => prop_oneof![3 => 0u64..70_000, 1 => 170_000u64..250_000]
            .prop_map(|millis| Step::Wait { millis }),
    ]
}

/// The agent's answer to `request` (the bytes forwarded to it).
fn answer(request: &[u8], code: u16) -> Option<Vec<u8>> {
    let Verdict::Request(request) = classify_datagram(request) else {
        return None;
    };
    let mut reply = format!("SIP/2.0 {code} Reply\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for field in request.head.all(name) {
            let tag = if name == "To" && code > 100 && !field.value.contains("tag=") {
                ";tag=agent"
            } else {
                ""
            };
            reply.push_str(&format!("{}: {}{tag}\r\n", field.name, field.value));
        }
    }
    reply.push_str("Contact: <sip:agent@127.0.0.1:5090>\r\nContent-Length: 0\r\n\r\n");
    Some(reply.into_bytes())
}

fn ingress() -> SocketAddr {
    "127.0.0.1:5060".parse().expect("address")
}

fn proxy() -> Proxy {
    let config = Config::parse(&world()).expect("the test world is valid");
    let rules = NativeRules::new(&config.admission).expect("rules");
    let unlimited = NonZeroU32::new(1_000_000).expect("non-zero");
    Proxy::new(
        Box::new(rules),
        ingress(),
        Quota::per_second(unlimited).allow_burst(unlimited),
        Timers::default(),
    )
}

/// Everything the proxy sends must be a message it would accept itself, except its answer to a
/// request it refused: that answer copies the request's Via, From, To, Call-ID and CSeq as they
/// are (RFC 3261 section 8.2.6.2), missing or malformed ones included (RFC 4475 `insuf`: respond
/// 400 even without Call-ID, From or To), so it only has to be a framed error response. A
/// relayed response goes to its next Via, which must not be a broadcast address; where the
/// element there sends it on is that element's concern, so a broadcast Via beyond it is not
/// the proxy's fault.
fn check_sent(sent: &[Outgoing], step: &Step, refused: bool) -> Result<(), TestCaseError> {
    for out in sent {
        prop_assert_ne!(
            out.to,
            ingress(),
            "after {:?} the proxy sent to itself",
            step
        );
        let verdict = classify_datagram(&out.bytes);
        if refused {
            let status = out
                .bytes
                .get(8..11)
                .and_then(|s| std::str::from_utf8(s).ok());
            prop_assert!(
                out.bytes.starts_with(b"SIP/2.0 ")
                    && status
                        .and_then(|s| s.parse::<u16>().ok())
                        .is_some_and(|c| (400..700).contains(&c))
                    && frame_datagram(&out.bytes).is_ok(),
                "after {step:?} the proxy answered a refused request with:\n{}",
                String::from_utf8_lossy(&out.bytes)
            );
            continue;
        }
        let broadcast_beyond_next_hop = out.bytes.starts_with(b"SIP/2.0 ")
            && matches!(&verdict, Verdict::Drop(reason) if reason == BROADCAST_NEXT_VIA);
        prop_assert!(
            matches!(verdict, Verdict::Request(_) | Verdict::Response(_))
                || broadcast_beyond_next_hop,
            "after {step:?} the proxy sent what it would refuse ({verdict:?}):\n{}",
            String::from_utf8_lossy(&out.bytes)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn the_proxy_core_survives_hostile_traffic(steps in prop::collection::vec(step(), 1..24)) {
        let torture = torture_messages();
        let mut proxy = proxy();
        let mut now = Instant::now();
        let mut to_agent: Option<(SocketAddr, Vec<u8>)> = None;
        for step in &steps {
            let mut refused = false;
            let sent = match step {
                Step::Caller { seed, torture: from_suite, from_acme, tcp, mutations } => {
                    let mut message = if *from_suite {
                        torture[seed % torture.len()].clone()
                    } else {
                        let call = (seed / REQUESTS.len()) % CALLS;
                        REQUESTS[seed % REQUESTS.len()].replace("{n}", &call.to_string()).into_bytes()
                    };
                    for mutation in mutations {
                        mutation.apply(&mut message);
                    }
                    let ip = if *from_acme { Ipv4Addr::new(127, 0, 0, 4) } else { Ipv4Addr::LOCALHOST };
                    let transport = if *tcp { Transport::Tcp } else { Transport::Udp };
                    refused = matches!(classify_datagram(&message), Verdict::Reject(_));
                    proxy.on_message(&message, SocketAddr::new(IpAddr::V4(ip), 5070), transport, now).0
                }
                Step::Agent { reply, mutations } => {
                    let Some(mut message) = to_agent
                        .as_ref()
                        .and_then(|(_, request)| answer(request, REPLIES[*reply]))
                    else {
                        continue;
                    };
                    for mutation in mutations {
                        mutation.apply(&mut message);
                    }
                    let agent = to_agent.as_ref().map(|(to, _)| *to).expect("set above");
                    refused = matches!(classify_datagram(&message), Verdict::Reject(_));
                    proxy.on_message(&message, agent, Transport::Udp, now).0
                }
                Step::Resolve { found } => {
                    // Two addresses, so an INVITE that cannot be sent has a next one to go to.
                    let addresses = if *found {
                        let other = Ipv4Addr::new(127, 0, 0, 9);
                        vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(other)]
                    } else {
                        Vec::new()
                    };
                    let mut sent = Vec::new();
                    for name in proxy.take_lookups() {
                        sent.extend(proxy.on_resolved(&name, addresses.clone(), now).0);
                    }
                    sent
                }
                Step::Undeliverable => {
                    let Some((agent, request)) = &to_agent else {
                        continue;
                    };
                    proxy.on_undeliverable(request, *agent, now).0
                }
                Step::Wait { millis } => {
                    now += Duration::from_millis(*millis);
                    proxy.expire(now);
                    proxy.on_timers(now).0
                }
            };
            check_sent(&sent, step, refused)?;
            if let Some(last) = sent.iter().rev().find(|o| o.to.port() == 5090 || o.to.port() == 5091) {
                to_agent = Some((last.to, last.bytes.clone()));
            }
        }
        // Whatever the agent did, every INVITE transaction ends by its timers (B, C, the wait
        // for a cancelled INVITE's answer) and is then forgotten.
        for _ in 0..1000 {
            let Some(at) = proxy.next_timer() else { break };
            now = now.max(at);
            let (sent, _) = proxy.on_timers(now);
            check_sent(&sent, &Step::Wait { millis: 0 }, false)?;
        }
        prop_assert_eq!(proxy.next_timer(), None, "the timers never end");
        proxy.expire(now + Duration::from_secs(60));
        prop_assert_eq!(proxy.live().1, 0, "a transaction outlived its timers");
    }
}
