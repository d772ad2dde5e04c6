//! The proxy core's tests: messages in, messages out, on a clock the tests move.

use super::*;
use std::num::NonZeroU32;

fn proxy(rate: u32, burst: u32) -> Proxy {
    let config = crate::config::Config::parse(crate::config::DEMO).expect("demo");
    proxy_of(&config, rate, burst)
}

fn proxy_of(config: &crate::config::Config, rate: u32, burst: u32) -> Proxy {
    let rules = crate::admission::oracle::NativeRules::new(&config.admission).expect("rules");
    let quota = Quota::per_second(NonZeroU32::new(rate).expect("rate"))
        .allow_burst(NonZeroU32::new(burst).expect("burst"));
    Proxy::new(
        Box::new(rules),
        "127.0.0.1:5060".parse().expect("addr"),
        quota,
        Timers::default(),
    )
}

/// A SIP message built field by field; [`Message::bytes`] ends it with an empty body.
struct Message {
    start: String,
    fields: Vec<(&'static str, String)>,
}

impl Message {
    fn new(start: impl Into<String>) -> Self {
        Self {
            start: start.into(),
            fields: Vec::new(),
        }
    }

    /// With `name: value` after the fields so far.
    fn field(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.fields.push((name, value.into()));
        self
    }

    /// With `name: value` before every other field.
    fn first(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.fields.insert(0, (name, value.into()));
        self
    }

    /// With the first field named `name` given `value` instead.
    fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        if let Some(field) = self.fields.iter_mut().find(|(n, _)| *n == name) {
            field.1 = value.into();
        }
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut text = format!("{}\r\n", self.start);
        for (name, value) in &self.fields {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        text.into_bytes()
    }
}

/// The caller's From on every call.
const CALLER_FROM: &str = "<sip:+15551230000@pbx>;tag=1";
/// The To of the calls to agent `sales`, before it answers.
const SALES_TO: &str = "<sip:sales@127.0.0.1>";
/// The To of the calls to agent `sales` once it answered, with its tag.
const SALES_TAGGED: &str = "<sip:sales@127.0.0.1>;tag=a";

/// The caller's Via on a request whose branch is `z9hG4bK{branch}`.
fn caller_via(branch: impl std::fmt::Display) -> String {
    format!("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch}")
}

/// The caller's `method` request of call `n` outside a dialog (an INVITE, or its CANCEL).
fn caller_request(method: &str, n: u32) -> Message {
    Message::new(format!("{method} sip:sales@127.0.0.1 SIP/2.0"))
        .field("Via", caller_via(n))
        .field("From", CALLER_FROM)
        .field("To", SALES_TO)
        .field("Call-ID", format!("flood-{n}"))
        .field("CSeq", format!("1 {method}"))
}

/// The agent's `method` request to the caller in call `n`, with Request-URI `uri`, Via `via`.
fn agent_request(method: &str, uri: &str, via: &str, n: u32) -> Message {
    Message::new(format!("{method} {uri} SIP/2.0"))
        .field("Via", via)
        .field("From", SALES_TAGGED)
        .field("To", CALLER_FROM)
        .field("Call-ID", format!("flood-{n}"))
        .field("CSeq", format!("1 {method}"))
}

/// An answer `status` to a request whose Vias were `ours` then `caller`, in call `n`.
fn answer(status: &str, ours: &str, caller: &str, n: u32) -> Message {
    Message::new(format!("SIP/2.0 {status}"))
        .field("Via", ours)
        .field("Via", caller)
        .field("From", CALLER_FROM)
        .field("To", SALES_TAGGED)
        .field("Call-ID", format!("flood-{n}"))
        .field("CSeq", "1 INVITE")
}

fn invite(n: u32) -> Vec<u8> {
    caller_request("INVITE", n).bytes()
}

#[test]
fn a_flooding_source_gets_503_with_retry_after_and_unknown_sources_nothing() {
    let mut proxy = proxy(1, 2);
    let known: SocketAddr = "127.0.0.1:5070".parse().expect("addr");
    for n in 0..2 {
        let (_, event) = proxy.on_message(&invite(n), known, Transport::Udp, Instant::now());
        assert_eq!(event, Event::Admitted);
    }
    let (out, event) = proxy.on_message(&invite(2), known, Transport::Udp, Instant::now());
    assert_eq!(event, Event::Refused("flood".into()));
    let text = String::from_utf8_lossy(&out[0].bytes).into_owned();
    assert!(
        text.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert!(text.contains("Retry-After: 1\r\n"), "{text}");

    let unknown: SocketAddr = "127.0.0.9:5070".parse().expect("addr");
    for n in 10..12 {
        proxy.on_message(&invite(n), unknown, Transport::Udp, Instant::now());
    }
    let (out, event) = proxy.on_message(&invite(12), unknown, Transport::Udp, Instant::now());
    assert_eq!((out.len(), event), (0, Event::Refused("flood".into())));
}

/// The caller's in-dialog `method` request of call `n` (To has a tag).
fn caller_in_dialog(method: &str, n: u32) -> Message {
    caller_request(method, n)
        .set("Via", caller_via(format!("d{n}")))
        .set("To", SALES_TAGGED)
        .set("CSeq", format!("2 {method}"))
}

fn in_dialog_request(method: &str, n: u32) -> Vec<u8> {
    caller_in_dialog(method, n).bytes()
}

#[test]
fn requests_naming_no_admitted_dialog_count_against_the_flood_limit_and_calls_do_not() {
    let mut proxy = proxy(1, 3);
    let now = Instant::now();
    let (known, unknown) = (caller(), "127.0.0.9:5070".parse().expect("addr"));
    let (_, event) = proxy.on_message(&invite(1), known, Transport::Udp, now);
    assert_eq!(event, Event::Admitted);
    for n in 2..4 {
        let (_, event) = proxy.on_message(&in_dialog_request("BYE", n), known, Transport::Udp, now);
        assert_eq!(event, Event::Answered(481));
    }
    let (out, event) = proxy.on_message(&in_dialog_request("BYE", 4), known, Transport::Udp, now);
    assert_eq!(event, Event::Refused("flood".into()));
    assert!(
        text(&out[0]).starts_with("SIP/2.0 503 "),
        "{}",
        text(&out[0])
    );
    for _ in 0..10 {
        let (_, event) =
            proxy.on_message(&in_dialog_request("INFO", 1), known, Transport::Udp, now);
        assert_eq!(event, Event::Relayed, "the admitted call is not limited");
    }
    for n in 10..13 {
        proxy.on_message(&in_dialog_request("BYE", n), unknown, Transport::Udp, now);
    }
    let (out, event) =
        proxy.on_message(&in_dialog_request("BYE", 13), unknown, Transport::Udp, now);
    assert_eq!((out.len(), event), (0, Event::Refused("flood".into())));
}

#[test]
fn in_dialog_requests_go_the_way_their_tags_say_and_others_get_481() {
    let mut proxy = proxy(100, 100);
    let now = Instant::now();
    let (out, _) = proxy.on_message(&invite(14), caller(), Transport::Udp, now);
    let agent = out[1].to;
    // The agent's BYE comes from another port than the one it was reached at.
    let agent_bye = agent_request(
        "BYE",
        "sip:+15551230000@127.0.0.1:5070",
        "SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKbye",
        14,
    )
    .bytes();
    let elsewhere = SocketAddr::new(agent.ip(), 40000);
    let (out, event) = proxy.on_message(&agent_bye, elsewhere, Transport::Udp, now);
    assert_eq!(event, Event::Relayed);
    assert_eq!(
        out[0].to,
        caller(),
        "to the caller, whose tag is its To tag"
    );

    let (out, event) = proxy.on_message(
        &in_dialog_request("INFO", 14),
        caller(),
        Transport::Udp,
        now,
    );
    assert_eq!((event, out[0].to), (Event::Relayed, agent));

    let strangers = caller_in_dialog("BYE", 14)
        .set("From", "<sip:+15551230000@pbx>;tag=other")
        .bytes();
    let (out, event) = proxy.on_message(&strangers, caller(), Transport::Udp, now);
    assert_eq!(
        event,
        Event::Answered(481),
        "the Call-ID alone is not the dialog"
    );
    assert!(text(&out[0]).starts_with("SIP/2.0 481 "));
}

#[test]
fn an_invite_that_passed_through_the_ingress_before_is_482() {
    let mut proxy = proxy(100, 100);
    let looped = caller_request("INVITE", 7)
        .first("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours")
        .first("Via", "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKagent")
        .bytes();
    let caller: SocketAddr = "127.0.0.1:5090".parse().expect("addr");
    let (out, event) = proxy.on_message(&looped, caller, Transport::Udp, Instant::now());
    assert_eq!(event, Event::Refused("loop".into()));
    assert!(String::from_utf8_lossy(&out[0].bytes).starts_with("SIP/2.0 482 Loop Detected\r\n"));
}

#[test]
fn retransmissions_are_absorbed_and_admitted_calls_are_tracked() {
    let mut proxy = proxy(100, 100);
    let caller = caller();
    let start = Instant::now();
    let (out, event) = proxy.on_message(&invite(1), caller, Transport::Udp, start);
    assert_eq!((event, out.len()), (Event::Admitted, 2));
    assert_eq!(
        out[1].to,
        "127.0.0.1:5090".parse::<SocketAddr>().expect("agent")
    );
    let (again, event) = proxy.on_message(&invite(1), caller, Transport::Udp, Instant::now());
    assert_eq!(event, Event::Retransmission);
    assert_eq!(
        again,
        vec![out[0].clone()],
        "the 100 Trying is sent again, nothing forwarded"
    );
    assert_eq!(proxy.live(), (1, 1));
    assert_eq!(proxy.branches.len(), 1);
    proxy.expire(start + DEFAULT_T1 * 63);
    assert_eq!(proxy.live(), (1, 1), "a transaction under way is kept");
    let ended = start + DEFAULT_T1 * 64;
    let (_, events) = proxy.on_timers(ended);
    assert_eq!(events.last(), Some(&Event::TimedOut(408)));
    assert_eq!(
        proxy.live(),
        (0, 1),
        "the call is over, its transaction kept"
    );
    proxy.expire(ended + proxy.transaction_lifetime() - Duration::from_millis(1));
    assert_eq!(proxy.live(), (0, 1), "retransmissions are still absorbed");
    proxy.expire(ended + proxy.transaction_lifetime());
    assert_eq!(proxy.live(), (0, 0));
    assert!(
        proxy.branches.is_empty(),
        "the branch index is expired with them"
    );
}

fn text(out: &Outgoing) -> String {
    String::from_utf8_lossy(&out.bytes).into_owned()
}

#[test]
fn an_unanswered_invite_is_retransmitted_at_doubling_intervals_then_the_caller_gets_408() {
    let mut proxy = proxy(100, 100);
    let caller = caller();
    let start = Instant::now();
    let (out, _) = proxy.on_message(&invite(1), caller, Transport::Udp, start);
    let forwarded = out[1].clone();
    assert_eq!(proxy.next_timer(), Some(start + DEFAULT_T1));
    assert_eq!(proxy.on_timers(start + DEFAULT_T1 / 2), (vec![], vec![]));

    // Timer A: T1, 2T1, 4T1... after the last send: six retransmissions before 64 x T1.
    let mut sent_at = Vec::new();
    let mut at = start;
    while let Some(next) = proxy.next_timer() {
        at = next;
        let (out, events) = proxy.on_timers(at);
        if events == [Event::TimedOut(408)] {
            break;
        }
        assert_eq!(
            (out, events),
            (vec![forwarded.clone()], vec![Event::Retransmitted])
        );
        sent_at.push((at - start).as_millis());
    }
    assert_eq!(sent_at, [500, 1500, 3500, 7500, 15500, 31500]);

    // Timer B at 64 x T1: 408 to the caller, who gets it again if it retransmits.
    assert_eq!(at - start, DEFAULT_T1 * 64);
    assert_eq!(proxy.next_timer(), None);
    let (again, event) = proxy.on_message(&invite(1), caller, Transport::Udp, at);
    assert_eq!(event, Event::Retransmission);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].to, caller);
    assert!(
        text(&again[0]).starts_with("SIP/2.0 408 Request Timeout\r\n"),
        "{}",
        text(&again[0])
    );
    assert_eq!(
        proxy.live(),
        (0, 1),
        "the dialog that never was is forgotten"
    );
}

#[test]
fn a_caller_on_tcp_gets_a_double_record_route_and_both_routes_are_consumed() {
    let mut proxy = proxy(100, 100);
    let caller = caller();
    let (out, _) = proxy.on_message(&invite(3), caller, Transport::Tcp, Instant::now());
    assert!(
        text(&out[1]).contains(
            "\r\nRecord-Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5060;transport=tcp;lr>\r\n"
        ),
        "{}",
        text(&out[1])
    );
    let (out, _) = proxy.on_message(&invite(4), caller, Transport::Udp, Instant::now());
    assert!(
        text(&out[1]).contains("\r\nRecord-Route: <sip:127.0.0.1:5060;lr>\r\n"),
        "{}",
        text(&out[1])
    );

    // The caller's BYE carries the route set in reverse: the TCP entry first.
    let mut bye = caller_in_dialog("BYE", 3)
        .set("Via", "SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKbye")
        .field(
            "Route",
            "<sip:127.0.0.1:5060;transport=tcp;lr>, <sip:127.0.0.1:5060;lr>",
        );
    bye.start = "BYE sip:sales@127.0.0.1:5090 SIP/2.0".to_owned();
    let (out, event) = proxy.on_message(&bye.bytes(), caller, Transport::Tcp, Instant::now());
    assert_eq!(event, Event::Relayed);
    assert!(!text(&out[0]).contains("Route:"), "{}", text(&out[0]));
    assert!(text(&out[0]).contains("\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch="));

    // A request from the agent to the caller on TCP leaves over TCP, and says so in our Via.
    let agent: SocketAddr = "127.0.0.1:5090".parse().expect("agent");
    let bye_from_agent = agent_request(
        "BYE",
        "sip:+15551230000@127.0.0.1:5070;transport=tcp",
        "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKfromagent",
        3,
    )
    .field(
        "Route",
        "<sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5060;transport=tcp;lr>",
    )
    .bytes();
    let (out, event) = proxy.on_message(&bye_from_agent, agent, Transport::Udp, Instant::now());
    assert_eq!(event, Event::Relayed);
    assert_eq!(out[0].to, caller);
    assert!(
        text(&out[0]).contains("\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch="),
        "{}",
        text(&out[0])
    );
    assert!(!text(&out[0]).contains("Route:"), "{}", text(&out[0]));
}

fn cancel(n: u32) -> Vec<u8> {
    caller_request("CANCEL", n).bytes()
}

/// The value of the first Via of `out`: ours, on what the ingress sent.
fn our_via(out: &Outgoing) -> String {
    text(out)
        .lines()
        .find_map(|l| l.strip_prefix("Via: "))
        .expect("our via")
        .to_owned()
}

/// The agent's answer `status` to call `n`'s INVITE, forwarded as `forwarded`.
fn agent_answer_to(forwarded: &Outgoing, status: &str, n: u32) -> Message {
    answer(status, &our_via(forwarded), &caller_via(n), n)
}

fn agent_answer(forwarded: &Outgoing, status: &str, n: u32) -> Vec<u8> {
    agent_answer_to(forwarded, status, n).bytes()
}

#[test]
fn a_cancel_waits_for_the_agents_provisional_answer() {
    let mut proxy = proxy(100, 100);
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 5, now);
    let agent = forwarded.to;
    let (out, event) = proxy.on_message(&cancel(5), caller(), Transport::Udp, now);
    assert_eq!(event, Event::Relayed);
    assert_eq!(out.len(), 1, "only the 200 to the caller");
    assert!(text(&out[0]).starts_with("SIP/2.0 200 OK\r\n"));
    assert!(text(&out[0]).contains("CSeq: 1 CANCEL\r\n"));

    let ringing = agent_answer(&forwarded, "180 Ringing", 5);
    let (out, _) = proxy.on_message(&ringing, agent, Transport::Udp, now);
    assert_eq!(out.len(), 2, "the 180 relayed and the CANCEL sent");
    assert_eq!(out[1].to, agent);
    assert!(
        text(&out[1]).starts_with("CANCEL sip:sales@127.0.0.1:5090 SIP/2.0\r\n"),
        "{}",
        text(&out[1])
    );
    assert_eq!(
        top_branch(&out[1]),
        top_branch(&forwarded),
        "the CANCEL matches the forwarded INVITE"
    );
}

#[test]
fn the_ack_for_a_failure_repeats_the_invite_and_takes_only_to_from_the_answer() {
    let mut proxy = proxy(100, 100);
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 7, now);
    let agent = forwarded.to;
    // An agent that rewrites From in its answer must not change the ACK's From.
    let busy = agent_answer_to(&forwarded, "486 Busy Here", 7)
        .set("From", "\"Rewritten\" <sip:other@pbx>;tag=1")
        .bytes();
    let (out, event) = proxy.on_message(&busy, agent, Transport::Udp, now);
    assert_eq!(event, Event::ResponseRelayed);
    assert_eq!(out.len(), 2, "the 486 relayed and the ACK sent");
    assert_eq!(out[1].to, agent);
    let ack = text(&out[1]);
    assert!(
        ack.starts_with("ACK sip:sales@127.0.0.1:5090 SIP/2.0\r\n"),
        "{ack}"
    );
    for field in [
        "From: <sip:+15551230000@pbx>;tag=1\r\n",
        "To: <sip:sales@127.0.0.1>;tag=a\r\n",
        "Call-ID: flood-7\r\n",
        "CSeq: 1 ACK\r\n",
    ] {
        assert!(ack.contains(field), "{field:?} missing from\n{ack}");
    }
}

#[test]
fn an_agents_503_reaches_the_caller_as_500_with_the_rest_of_the_answer() {
    let mut proxy = proxy(100, 100);
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 14, now);
    let agent = forwarded.to;
    let unavailable = agent_answer_to(&forwarded, "503 Service Unavailable", 14)
        .field("Retry-After", "30")
        .bytes();
    let unavailable = String::from_utf8(unavailable).expect("text");
    let (out, event) = proxy.on_message(unavailable.as_bytes(), agent, Transport::Udp, now);
    assert_eq!(event, Event::ResponseRelayed);
    assert_eq!(out.len(), 2, "the answer relayed and the ACK sent");
    let relayed = text(&out[0]);
    assert_eq!(out[0].to, caller());
    assert!(
        relayed.starts_with("SIP/2.0 500 Server Internal Error\r\n"),
        "{relayed}"
    );
    let unavailable_rest = unavailable.split_once("\r\n").expect("line").1;
    let our_via = unavailable_rest.lines().next().expect("our via");
    assert_eq!(
        relayed.split_once("\r\n").expect("line").1,
        unavailable_rest.replacen(&format!("{our_via}\r\n"), "", 1),
        "everything but the status line and our Via is the agent's"
    );
    let ack = out[1].clone();
    assert!(text(&ack).starts_with("ACK "), "{}", text(&ack));
    // The agent's retransmission (our ACK was lost) is acknowledged again; the caller
    // already has its final answer (RFC 3261 section 16.7 step 5).
    let (out, event) = proxy.on_message(unavailable.as_bytes(), agent, Transport::Udp, now);
    assert_eq!((out, event), (vec![ack], Event::ResponseAbsorbed));
    let (out, _) = proxy.on_message(&invite(14), caller(), Transport::Udp, now);
    assert!(
        text(&out[0]).starts_with("SIP/2.0 500 "),
        "the caller's retransmission gets the 500 again"
    );
}

#[test]
fn a_503_to_a_request_other_than_invite_is_relayed_as_it_is() {
    let mut proxy = proxy(100, 100);
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 15, now);
    let agent = forwarded.to;
    let ok = agent_answer(&forwarded, "200 OK", 15);
    proxy.on_message(&ok, agent, Transport::Udp, now);
    let mut bye = caller_in_dialog("BYE", 15)
        .set("Via", caller_via("bye15"))
        .field("Route", "<sip:127.0.0.1:5060;lr>")
        .field("Max-Forwards", "70");
    bye.start = "BYE sip:sales@127.0.0.1:5090 SIP/2.0".to_owned();
    let (out, event) = proxy.on_message(&bye.bytes(), caller(), Transport::Udp, now);
    assert_eq!(event, Event::Relayed);
    let unavailable = answer(
        "503 Service Unavailable",
        &our_via(&out[0]),
        &caller_via("bye15"),
        15,
    )
    .set("CSeq", "2 BYE")
    .bytes();
    let (out, event) = proxy.on_message(&unavailable, agent, Transport::Udp, now);
    assert_eq!(event, Event::ResponseRelayed);
    assert!(
        text(&out[0]).starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "{}",
        text(&out[0])
    );
}

#[test]
fn an_invite_that_cannot_be_sent_to_its_agent_ends_at_once_with_500() {
    let mut proxy = proxy(100, 100);
    let start = Instant::now();
    let forwarded = forward_invite(&mut proxy, 16, start);
    let agent = forwarded.to;
    for elsewhere in ["127.0.0.1:1".parse().expect("addr"), caller()] {
        assert_eq!(
            proxy.on_undeliverable(&forwarded.bytes, elsewhere, start),
            (vec![], None),
            "only a failure towards the INVITE's agent counts"
        );
    }
    let (out, event) = proxy.on_undeliverable(&forwarded.bytes, agent, start);
    assert_eq!(event, Some(Event::Undeliverable(500)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, caller());
    let answer = text(&out[0]);
    assert!(
        answer.starts_with("SIP/2.0 500 Server Internal Error\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Call-ID: flood-16\r\n") && answer.contains(";tag="));
    assert_eq!(
        proxy.on_undeliverable(&forwarded.bytes, agent, start),
        (vec![], None),
        "a transaction ends once"
    );
    assert_eq!(
        proxy.on_timers(start + DEFAULT_T1 * 64),
        (vec![], vec![]),
        "no retransmission, no 408"
    );
    let (out, event) = proxy.on_message(&invite(16), caller(), Transport::Udp, start);
    assert_eq!(event, Event::Retransmission);
    assert_eq!(
        text(&out[0]),
        answer,
        "a retransmitted INVITE gets the 500 again"
    );
    assert_eq!(proxy.live().0, 0, "no dialog is left");
}

#[test]
fn only_an_unanswered_invite_ends_when_a_message_cannot_be_sent() {
    let mut proxy = proxy(100, 100);
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 17, now);
    let agent = forwarded.to;
    let ringing = agent_answer(&forwarded, "180 Ringing", 17);
    proxy.on_message(&ringing, agent, Transport::Udp, now);
    assert_eq!(
        proxy.on_undeliverable(&forwarded.bytes, agent, now),
        (vec![], None),
        "the agent has answered: the INVITE reached it"
    );
    let response = agent_answer(&forwarded, "180 Ringing", 18);
    assert_eq!(
        proxy.on_undeliverable(&response, caller(), now),
        (vec![], None)
    );
    assert_eq!(
        proxy.on_undeliverable(b"INVITE garbage", agent, now),
        (vec![], None)
    );
}

#[test]
fn a_cancelled_invite_that_cannot_be_sent_ends_with_487() {
    let mut proxy = proxy(100, 100);
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 19, now);
    proxy.on_message(&cancel(19), caller(), Transport::Udp, now);
    let (out, event) = proxy.on_undeliverable(&forwarded.bytes, forwarded.to, now);
    assert_eq!(event, Some(Event::Undeliverable(487)));
    assert!(text(&out[0]).starts_with("SIP/2.0 487 Request Terminated\r\n"));
}

#[test]
fn a_response_whose_next_via_is_the_ingress_again_is_dropped_not_sent_to_itself() {
    let mut proxy = proxy(100, 100);
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 8, now);
    let agent = forwarded.to;
    let doubled = agent_answer_to(&forwarded, "180 Ringing", 8)
        .first("Via", our_via(&forwarded))
        .bytes();
    let (out, event) = proxy.on_message(&doubled, agent, Transport::Udp, now);
    assert_eq!(event, Event::Dropped);
    assert!(out.is_empty(), "sent {:?}", out.first().map(text));
}

#[test]
fn only_responses_to_requests_the_ingress_forwarded_are_relayed() {
    let mut proxy = proxy(100, 100);
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 13, now);
    let agent = forwarded.to;
    let ours = our_via(&forwarded);
    let victim = "SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK13";
    let never_made = ours.replacen(&top_branch(&forwarded), "z9hG4bK0123456789abcdef", 1);
    for forged in [
        // Our genuine branch, but the caller's Via pointed elsewhere.
        answer("180 Ringing", &ours, victim, 13),
        // A branch of the right form the ingress never made.
        answer("180 Ringing", &never_made, &caller_via(13), 13),
    ] {
        let forged = forged.bytes();
        let (out, event) = proxy.on_message(&forged, agent, Transport::Udp, now);
        let forged = String::from_utf8_lossy(&forged);
        assert_eq!((out, event), (vec![], Event::Dropped), "relayed:\n{forged}");
    }
    let ringing = agent_answer(&forwarded, "180 Ringing", 13);
    let (out, event) = proxy.on_message(&ringing, agent, Transport::Udp, now);
    assert_eq!(event, Event::ResponseRelayed);
    assert_eq!(out[0].to, caller());
}

#[test]
fn a_cancelled_invite_the_agent_never_answers_ends_with_487_and_no_cancel() {
    let mut proxy = proxy(100, 100);
    let caller = caller();
    let start = Instant::now();
    let (out, _) = proxy.on_message(&invite(6), caller, Transport::Udp, start);
    let agent = out[1].to;
    proxy.on_message(&cancel(6), caller, Transport::Udp, start);
    let (out, events) = proxy.on_timers(start + DEFAULT_T1 * 64);
    assert_eq!(events, [Event::TimedOut(487)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, caller);
    assert!(
        text(&out[0]).starts_with("SIP/2.0 487 Request Terminated\r\n"),
        "{}",
        text(&out[0])
    );
    assert!(out.iter().all(|o| o.to != agent));
}

#[test]
fn any_answer_from_the_agent_stops_the_retransmissions_and_the_408() {
    let mut proxy = proxy(100, 100);
    let caller = caller();
    let start = Instant::now();
    let (out, _) = proxy.on_message(&invite(2), caller, Transport::Udp, start);
    let ringing = agent_answer(&out[1], "180 Ringing", 2);
    let agent = out[1].to;
    let (relayed, event) =
        proxy.on_message(&ringing, agent, Transport::Udp, start + DEFAULT_T1 / 2);
    assert_eq!((relayed.len(), event), (1, Event::ResponseRelayed));
    assert_eq!(
        proxy.on_timers(start + DEFAULT_T1 * 100),
        (vec![], vec![]),
        "nothing retransmitted, no 408"
    );
    assert_eq!(
        proxy.next_timer(),
        Some(start + DEFAULT_T1 / 2 + DEFAULT_TIMER_C),
        "only Timer C runs, from the 180"
    );
}

/// The branch of the first Via of `out`.
fn top_branch(out: &Outgoing) -> String {
    let message = text(out);
    let via = message
        .lines()
        .find(|l| l.starts_with("Via: "))
        .unwrap_or_default();
    uri::param(via, "branch").unwrap_or_default().to_owned()
}

#[test]
fn an_agent_ringing_past_timer_c_is_cancelled_and_its_487_reaches_the_caller() {
    let mut proxy = proxy(100, 100);
    let caller = caller();
    let start = Instant::now();
    let forwarded = forward_invite(&mut proxy, 9, start);
    let agent = forwarded.to;
    let trying = agent_answer(&forwarded, "100 Trying", 9);
    proxy.on_message(&trying, agent, Transport::Udp, start);
    let ringing = agent_answer(&forwarded, "180 Ringing", 9);
    let rang = start + Duration::from_secs(100);
    proxy.on_message(&ringing, agent, Transport::Udp, rang);

    // Sixty seconds of ringing outlive the 32 s an ended transaction is kept, not this one.
    proxy.expire(start + Duration::from_secs(60));
    assert_eq!(
        proxy.on_timers(start + DEFAULT_TIMER_C),
        (vec![], vec![]),
        "the 180 reset Timer C"
    );
    let (out, events) = proxy.on_timers(rang + DEFAULT_TIMER_C);
    assert_eq!(events, [Event::RangTooLong]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, agent);
    assert!(
        text(&out[0]).starts_with("CANCEL sip:sales@127.0.0.1:5090 SIP/2.0\r\n"),
        "{}",
        text(&out[0])
    );
    assert_eq!(top_branch(&out[0]), top_branch(&forwarded));

    let terminated = agent_answer(&forwarded, "487 Request Terminated", 9);
    let (out, event) = proxy.on_message(&terminated, agent, Transport::Udp, rang + DEFAULT_TIMER_C);
    assert_eq!(event, Event::ResponseRelayed);
    assert_eq!((out[0].to, out[1].to), (caller, agent));
    assert!(text(&out[0]).starts_with("SIP/2.0 487 "));
    assert!(text(&out[1]).starts_with("ACK "));
    assert_eq!(proxy.live(), (0, 1));
    assert_eq!(
        proxy.on_timers(rang + DEFAULT_TIMER_C * 2),
        (vec![], vec![])
    );
}

#[test]
fn timer_c_runs_from_the_forwarded_invite_when_only_100_trying_came() {
    let mut proxy = proxy(100, 100);
    let start = Instant::now();
    let forwarded = forward_invite(&mut proxy, 10, start);
    let agent = forwarded.to;
    let trying = agent_answer(&forwarded, "100 Trying", 10);
    proxy.on_message(
        &trying,
        agent,
        Transport::Udp,
        start + Duration::from_secs(10),
    );
    let (out, events) = proxy.on_timers(start + DEFAULT_TIMER_C);
    assert_eq!(events, [Event::RangTooLong]);
    assert!(text(&out[0]).starts_with("CANCEL "));
}

#[test]
fn with_a_long_t1_timer_c_answers_a_silent_agent_408_before_timer_b() {
    let config = crate::config::Config::parse(crate::config::DEMO).expect("demo");
    let rules = crate::admission::oracle::NativeRules::new(&config.admission).expect("rules");
    let quota = Quota::per_second(NonZeroU32::new(100).expect("rate"));
    let local = "127.0.0.1:5060".parse().expect("addr");
    let timers = Timers {
        t1: Duration::from_secs(4),
        ..Timers::default()
    };
    let mut proxy = Proxy::new(Box::new(rules), local, quota, timers);
    let start = Instant::now();
    proxy.on_message(&invite(11), caller(), Transport::Udp, start);
    let mut events = Vec::new();
    while let Some(at) = proxy
        .next_timer()
        .filter(|at| *at <= start + DEFAULT_TIMER_C)
    {
        events.extend(proxy.on_timers(at).1);
    }
    assert_eq!(events.last(), Some(&Event::TimedOut(408)));
    assert_eq!(proxy.next_timer(), None);
}

#[test]
fn a_cancel_the_agent_never_answers_gets_the_caller_487_after_64_t1() {
    let mut proxy = proxy(100, 100);
    let caller = caller();
    let start = Instant::now();
    let forwarded = forward_invite(&mut proxy, 12, start);
    let agent = forwarded.to;
    let ringing = agent_answer(&forwarded, "180 Ringing", 12);
    proxy.on_message(&ringing, agent, Transport::Udp, start);

    let cancelled = start + Duration::from_secs(60);
    proxy.expire(cancelled);
    let (out, event) = proxy.on_message(&cancel(12), caller, Transport::Udp, cancelled);
    assert_eq!(
        event,
        Event::Relayed,
        "a call ringing for a minute is still known"
    );
    assert_eq!((out[0].to, out[1].to), (caller, agent));
    assert!(text(&out[0]).starts_with("SIP/2.0 200 OK\r\n"));
    assert!(text(&out[1]).starts_with("CANCEL "));
    let (again, _) = proxy.on_message(&cancel(12), caller, Transport::Udp, cancelled);
    assert_eq!(again, out, "a resent CANCEL is answered and sent on again");

    let (out, events) = proxy.on_timers(cancelled + DEFAULT_T1 * 64);
    assert_eq!(events, [Event::CancelUnanswered(487)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, caller);
    assert!(text(&out[0]).starts_with("SIP/2.0 487 Request Terminated\r\n"));
    assert_eq!(proxy.live(), (0, 1), "the dialog is gone");
    let (resent, event) = proxy.on_message(&invite(12), caller, Transport::Udp, cancelled);
    assert_eq!(event, Event::Retransmission);
    assert_eq!(resent, out, "a retransmitted INVITE gets the 487 again");
    let (out, event) = proxy.on_message(&cancel(12), caller, Transport::Udp, cancelled);
    assert_eq!(
        (out.len(), event),
        (1, Event::Answered(200)),
        "a CANCEL after the end is only answered"
    );
}

#[test]
fn the_ingress_resends_its_cancel_over_udp_until_the_agent_answers_it() {
    let mut proxy = proxy(100, 100);
    let start = Instant::now();
    let forwarded = forward_invite(&mut proxy, 15, start);
    let agent = forwarded.to;
    let ringing = agent_answer(&forwarded, "180 Ringing", 15);
    proxy.on_message(&ringing, agent, Transport::Udp, start);
    let (out, _) = proxy.on_message(&cancel(15), caller(), Transport::Udp, start);
    let cancel_sent = out[1].clone();

    let mut resent_after = Vec::new();
    while let Some(at) = proxy
        .next_timer()
        .filter(|at| *at < start + Duration::from_secs(10))
    {
        let (out, events) = proxy.on_timers(at);
        assert_eq!(events, [Event::CancelRetransmitted]);
        assert_eq!(out, std::slice::from_ref(&cancel_sent));
        resent_after.push(at - start);
    }
    let seconds = |s: f64| Duration::from_secs_f64(s);
    assert_eq!(
        resent_after,
        [seconds(0.5), seconds(1.5), seconds(3.5), seconds(7.5)],
        "T1, 2xT1, 4xT1 apart, then T2"
    );

    let answered = Message::new("SIP/2.0 200 OK")
        .field("Via", our_via(&cancel_sent))
        .field("From", CALLER_FROM)
        .field("To", SALES_TO)
        .field("Call-ID", "flood-15")
        .field("CSeq", "1 CANCEL")
        .bytes();
    let (out, _) = proxy.on_message(&answered, agent, Transport::Udp, start);
    assert!(out.is_empty(), "the answer to our CANCEL goes no further");
    let mut events = Vec::new();
    while let Some(at) = proxy.next_timer() {
        events.extend(proxy.on_timers(at).1);
    }
    assert_eq!(
        events,
        [Event::CancelUnanswered(487)],
        "no more CANCELs, and the 487 when the agent never ends the INVITE"
    );
}

const AGENT_HOST: &str = "agents.example";

/// The demo world, but agent `sales` is at a host name.
fn proxy_with_named_agent() -> Proxy {
    let mut config = crate::config::Config::parse(crate::config::DEMO).expect("demo");
    let sales = config
        .admission
        .tenants
        .iter_mut()
        .flat_map(|tenant| tenant.agents.iter_mut())
        .find(|agent| agent.id == "sales")
        .expect("agent sales");
    sales.uri = format!("sip:sales@{AGENT_HOST}:5090");
    proxy_of(&config, 100, 100)
}

fn caller() -> SocketAddr {
    "127.0.0.1:5070".parse().expect("addr")
}

/// Call `n`'s INVITE from [`caller`] at `now`, as forwarded to the agent.
fn forward_invite(proxy: &mut Proxy, n: u32, now: Instant) -> Outgoing {
    let (mut out, event) = proxy.on_message(&invite(n), caller(), Transport::Udp, now);
    assert_eq!(
        (event, out.len()),
        (Event::Admitted, 2),
        "100 Trying, INVITE"
    );
    out.swap_remove(1)
}

fn status_line(out: &Outgoing) -> String {
    text(out).lines().next().unwrap_or_default().to_owned()
}

#[test]
fn an_agent_host_name_is_looked_up_once_for_all_the_invites_waiting_for_it_then_cached() {
    let mut proxy = proxy_with_named_agent();
    let start = Instant::now();
    let (out, event) = proxy.on_message(&invite(1), caller(), Transport::Udp, start);
    assert_eq!(event, Event::AwaitingName);
    assert_eq!(out.len(), 1, "only the 100 Trying, nothing forwarded yet");
    assert_eq!(
        (out[0].to, status_line(&out[0])),
        (caller(), "SIP/2.0 100 Trying".to_owned())
    );
    assert_eq!(proxy.take_lookups(), [AGENT_HOST]);
    let (_, event) = proxy.on_message(&invite(2), caller(), Transport::Udp, start);
    assert_eq!(event, Event::AwaitingName);
    assert!(proxy.take_lookups().is_empty(), "one lookup under way");
    let (again, event) = proxy.on_message(&invite(1), caller(), Transport::Udp, start);
    assert_eq!(event, Event::Retransmission);
    assert_eq!(again, out, "a retransmission gets the 100 again");
    assert_eq!(proxy.live(), (0, 2));

    // The IPv6 address is skipped: this core sends from an IPv4 socket.
    let ipv6: IpAddr = "2001:db8::7".parse().expect("ip");
    let ipv4: IpAddr = "192.0.2.7".parse().expect("ip");
    let (out, events) = proxy.on_resolved(AGENT_HOST, vec![ipv6, ipv4], start);
    assert_eq!(events, [Event::Admitted, Event::Admitted]);
    let agent = SocketAddr::new(ipv4, 5090);
    assert_eq!(out.iter().map(|o| o.to).collect::<Vec<_>>(), [agent, agent]);
    assert!(text(&out[0]).starts_with(&format!("INVITE sip:sales@{AGENT_HOST}:5090 SIP/2.0\r\n")));
    assert!(text(&out[0]).contains("X-Dest-User: sales.desk\r\n"));
    assert_eq!(proxy.live(), (2, 2));
    assert_eq!(
        proxy.next_timer(),
        Some(start + DEFAULT_T1),
        "Timer A runs from the forwarding"
    );

    // Cached: the next call goes at once.
    let (out, event) = proxy.on_message(&invite(3), caller(), Transport::Udp, start);
    assert_eq!((event, out.len(), out[1].to), (Event::Admitted, 2, agent));
    assert!(proxy.take_lookups().is_empty());

    // Until the answer is too old.
    let later = start + RESOLVED_LIFETIME;
    proxy.expire(later);
    let (_, event) = proxy.on_message(&invite(4), caller(), Transport::Udp, later);
    assert_eq!(event, Event::AwaitingName);
    assert_eq!(proxy.take_lookups(), [AGENT_HOST]);
}

#[test]
fn a_name_without_a_usable_address_gets_503_which_is_remembered_briefly() {
    let mut proxy = proxy_with_named_agent();
    let start = Instant::now();
    proxy.on_message(&invite(1), caller(), Transport::Udp, start);
    assert_eq!(proxy.take_lookups(), [AGENT_HOST]);
    let (out, events) = proxy.on_resolved(AGENT_HOST, Vec::new(), start);
    assert_eq!(events, [Event::Refused(UNREACHABLE.into())]);
    assert_eq!(
        (out.len(), out[0].to, status_line(&out[0])),
        (1, caller(), "SIP/2.0 503 Service Unavailable".to_owned())
    );
    let (again, event) = proxy.on_message(&invite(1), caller(), Transport::Udp, start);
    assert_eq!((event, again), (Event::Retransmission, out));

    let (out, event) = proxy.on_message(&invite(2), caller(), Transport::Udp, start);
    assert_eq!(event, Event::Refused(UNREACHABLE.into()));
    assert_eq!(status_line(&out[0]), "SIP/2.0 503 Service Unavailable");
    assert!(proxy.take_lookups().is_empty(), "the failure is cached");

    let later = start + FAILED_LOOKUP_LIFETIME;
    let (_, event) = proxy.on_message(&invite(3), caller(), Transport::Udp, later);
    assert_eq!(event, Event::AwaitingName);
    assert_eq!(proxy.take_lookups(), [AGENT_HOST]);
    // Only IPv6 addresses, for an IPv4 socket: nothing to send to.
    let (out, _) = proxy.on_resolved(AGENT_HOST, vec!["2001:db8::7".parse().expect("ip")], later);
    assert_eq!(status_line(&out[0]), "SIP/2.0 503 Service Unavailable");
    assert_eq!(
        proxy.live(),
        (0, 2),
        "the ended transactions absorb retransmissions"
    );
    proxy.expire(later + proxy.transaction_lifetime());
    assert_eq!(proxy.live(), (0, 0));
}

#[test]
fn a_call_cancelled_while_its_agent_is_looked_up_gets_487_and_never_reaches_the_agent() {
    let mut proxy = proxy_with_named_agent();
    let start = Instant::now();
    proxy.on_message(&invite(1), caller(), Transport::Udp, start);
    let (out, event) = proxy.on_message(&cancel(1), caller(), Transport::Udp, start);
    assert_eq!(event, Event::Answered(487));
    let lines: Vec<String> = out.iter().map(status_line).collect();
    assert_eq!(lines, ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]);
    assert!(text(&out[0]).contains("CSeq: 1 CANCEL\r\n"));
    assert!(text(&out[1]).contains("CSeq: 1 INVITE\r\n"));
    let (sent, events) =
        proxy.on_resolved(AGENT_HOST, vec!["192.0.2.7".parse().expect("ip")], start);
    assert_eq!((sent, events), (vec![], vec![]));
    let (again, _) = proxy.on_message(&invite(1), caller(), Transport::Udp, start);
    assert_eq!(status_line(&again[0]), "SIP/2.0 487 Request Terminated");
    assert_eq!(proxy.live().0, 0, "no dialog");
}

/// Call `n`'s INVITE to the agent at [`AGENT_HOST`], forwarded once the name resolved to
/// `addresses`.
fn forward_to_named_agent(proxy: &mut Proxy, n: u32, addresses: &[&str], now: Instant) -> Outgoing {
    let (_, event) = proxy.on_message(&invite(n), caller(), Transport::Udp, now);
    assert_eq!(event, Event::AwaitingName);
    let addresses = addresses.iter().map(|a| a.parse().expect("ip")).collect();
    let (mut out, events) = proxy.on_resolved(AGENT_HOST, addresses, now);
    assert_eq!((events, out.len()), (vec![Event::Admitted], 1));
    out.remove(0)
}

#[test]
fn an_invite_that_cannot_be_sent_goes_to_the_agents_next_address_as_a_new_transaction() {
    let mut proxy = proxy_with_named_agent();
    let start = Instant::now();
    // The IPv6 address is skipped: this core sends from an IPv4 socket.
    let first = forward_to_named_agent(
        &mut proxy,
        1,
        &["192.0.2.7", "2001:db8::7", "192.0.2.8"],
        start,
    );
    let (a, b): (SocketAddr, SocketAddr) = (
        "192.0.2.7:5090".parse().expect("addr"),
        "192.0.2.8:5090".parse().expect("addr"),
    );
    assert_eq!(first.to, a);

    let later = start + Duration::from_millis(100);
    let (out, event) = proxy.on_undeliverable(&first.bytes, a, later);
    assert_eq!(event, Some(Event::NextAddress(Failover::TransportError)));
    assert_eq!(out.len(), 1, "nothing to the caller yet");
    let second = &out[0];
    assert_eq!((second.to, second.transport), (b, Transport::Udp));
    let (old, new) = (top_branch(&first), top_branch(second));
    assert!(
        new.starts_with(check::BRANCH_COOKIE) && new.ends_with(".1") && new != old,
        "a branch of its own: {new}"
    );
    assert_eq!(
        text(second),
        text(&first).replacen(&old, &new, 1),
        "the same INVITE otherwise"
    );
    assert_eq!(
        proxy.on_undeliverable(&first.bytes, a, later),
        (vec![], None),
        "the first attempt is over"
    );

    // Timer A starts again for the new transaction.
    assert_eq!(proxy.on_timers(start + DEFAULT_T1), (vec![], vec![]));
    let (resent, events) = proxy.on_timers(later + DEFAULT_T1);
    assert_eq!(events, [Event::Retransmitted]);
    assert_eq!((resent[0].to, &resent[0].bytes), (b, &second.bytes));

    // The agent at the second address answers on the new branch.
    let ringing = agent_answer(second, "180 Ringing", 1);
    let (out, event) = proxy.on_message(&ringing, b, Transport::Udp, later);
    assert_eq!(event, Event::ResponseRelayed);
    assert_eq!(
        (out.len(), out[0].to, status_line(&out[0])),
        (1, caller(), "SIP/2.0 180 Ringing".to_owned())
    );
    let busy = agent_answer(second, "486 Busy Here", 1);
    let (out, _) = proxy.on_message(&busy, b, Transport::Udp, later);
    let ack = out
        .iter()
        .find(|o| o.to == b)
        .expect("our ACK to the agent");
    assert!(text(ack).starts_with("ACK "));
    assert_eq!(top_branch(ack), new, "the ACK is of the new transaction");
}

#[test]
fn an_invite_whose_every_address_fails_gets_500_after_at_most_four_addresses() {
    let mut proxy = proxy_with_named_agent();
    let now = Instant::now();
    let addresses = [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
        "192.0.2.5",
    ];
    let mut sent = forward_to_named_agent(&mut proxy, 1, &addresses, now);
    let mut tried = vec![sent.to];
    loop {
        let (mut out, event) = proxy.on_undeliverable(&sent.bytes, sent.to, now);
        match event {
            Some(Event::NextAddress(Failover::TransportError)) => {
                sent = out.remove(0);
                tried.push(sent.to);
            }
            Some(Event::Undeliverable(code)) => {
                assert_eq!(code, 500);
                assert_eq!(out[0].to, caller());
                assert!(text(&out[0]).starts_with("SIP/2.0 500 Server Internal Error\r\n"));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<SocketAddr> = addresses[..MOST_ADDRESSES_TRIED]
        .iter()
        .map(|ip| SocketAddr::new(ip.parse().expect("ip"), 5090))
        .collect();
    assert_eq!(tried, expected, "in the resolver's order");
    assert_eq!(proxy.live().0, 0, "no dialog is left");
    assert_eq!(proxy.on_timers(now + DEFAULT_T1 * 64), (vec![], vec![]));
}

#[test]
fn the_next_address_keeps_the_first_addresss_timer_b() {
    let mut proxy = proxy_with_named_agent();
    let start = Instant::now();
    let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], start);
    let later = start + DEFAULT_T1 * 10;
    let (_, event) = proxy.on_undeliverable(&first.bytes, first.to, later);
    assert_eq!(event, Some(Event::NextAddress(Failover::TransportError)));
    let (out, events) = proxy.on_timers(start + DEFAULT_T1 * 64);
    assert_eq!(events.last(), Some(&Event::TimedOut(408)));
    assert_eq!(
        status_line(out.last().expect("408")),
        "SIP/2.0 408 Request Timeout"
    );
}

#[test]
fn a_cancelled_invite_does_not_go_to_the_next_address() {
    let mut proxy = proxy_with_named_agent();
    let now = Instant::now();
    let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], now);
    proxy.on_message(&cancel(1), caller(), Transport::Udp, now);
    let (out, event) = proxy.on_undeliverable(&first.bytes, first.to, now);
    assert_eq!(event, Some(Event::Undeliverable(487)));
    assert_eq!((out.len(), out[0].to), (1, caller()));
}

#[test]
fn an_agent_address_that_answers_503_is_acknowledged_and_the_invite_goes_to_the_next() {
    let mut proxy = proxy_with_named_agent();
    let start = Instant::now();
    let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], start);
    let (a, b) = (first.to, "192.0.2.8:5090".parse().expect("addr"));
    let trying = agent_answer(&first, "100 Trying", 1);
    let (out, event) = proxy.on_message(&trying, a, Transport::Udp, start);
    assert_eq!((out, event), (vec![], Event::ResponseAbsorbed));
    let ringing = agent_answer(&first, "180 Ringing", 1);
    let (out, _) = proxy.on_message(&ringing, a, Transport::Udp, start);
    assert_eq!(status_line(&out[0]), "SIP/2.0 180 Ringing");

    let later = start + DEFAULT_T1 * 100;
    let unavailable = agent_answer(&first, "503 Service Unavailable", 1);
    let (out, event) = proxy.on_message(&unavailable, a, Transport::Udp, later);
    assert_eq!(event, Event::NextAddress(Failover::Unavailable));
    assert_eq!(out.len(), 2, "nothing to the caller: {out:?}");
    let (ack, second) = (&out[0], &out[1]);
    assert_eq!(ack.to, a);
    assert!(text(ack).starts_with("ACK "));
    assert_eq!(
        top_branch(ack),
        top_branch(&first),
        "the ACK ends the first attempt"
    );
    assert_eq!(second.to, b);
    assert!(text(second).starts_with("INVITE "));
    assert!(top_branch(second).ends_with(".1"));

    // The first address sends its 503 again (our ACK was lost): acknowledged again, and
    // the caller still hears nothing of it.
    let (out, event) = proxy.on_message(&unavailable, a, Transport::Udp, later);
    assert_eq!(event, Event::ResponseAbsorbed);
    assert_eq!(out, vec![ack.clone()]);

    // The new attempt has timers of its own: Timer A, then Timer B from the 503.
    let (resent, _) = proxy.on_timers(later + DEFAULT_T1);
    assert_eq!(resent, vec![second.clone()]);
    let (out, events) = proxy.on_timers(later + DEFAULT_T1 * 64);
    assert_eq!(events.last(), Some(&Event::TimedOut(408)));
    assert_eq!(out.last().map(|o| o.to), Some(caller()));
}

#[test]
fn a_503_from_the_last_address_reaches_the_caller_as_500() {
    let mut proxy = proxy_with_named_agent();
    let now = Instant::now();
    let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], now);
    let unavailable = agent_answer(&first, "503 Service Unavailable", 1);
    let (out, _) = proxy.on_message(&unavailable, first.to, Transport::Udp, now);
    let second = out[1].clone();
    let unavailable = agent_answer(&second, "503 Service Unavailable", 1);
    let (out, event) = proxy.on_message(&unavailable, second.to, Transport::Udp, now);
    assert_eq!(event, Event::ResponseRelayed);
    let to_caller = out.iter().find(|o| o.to == caller()).expect("the answer");
    assert_eq!(status_line(to_caller), "SIP/2.0 500 Server Internal Error");
    let ack = out.iter().find(|o| o.to == second.to).expect("our ACK");
    assert_eq!(top_branch(ack), top_branch(&second));
}

#[test]
fn a_2xx_from_an_address_the_invite_moved_on_from_still_reaches_the_caller() {
    let mut proxy = proxy_with_named_agent();
    let now = Instant::now();
    let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], now);
    proxy.on_message(
        &agent_answer(&first, "503 Service Unavailable", 1),
        first.to,
        Transport::Udp,
        now,
    );
    let ok = agent_answer(&first, "200 OK", 1);
    let (out, event) = proxy.on_message(&ok, first.to, Transport::Udp, now);
    assert_eq!(event, Event::ResponseRelayed);
    assert_eq!(
        (out.len(), out[0].to, status_line(&out[0])),
        (1, caller(), "SIP/2.0 200 OK".to_owned())
    );
    let ringing = agent_answer(&first, "180 Ringing", 1);
    let (out, event) = proxy.on_message(&ringing, first.to, Transport::Udp, now);
    assert_eq!((out, event), (vec![], Event::ResponseAbsorbed));
}

#[test]
fn the_agents_100_trying_stops_timer_a_and_goes_no_further() {
    let mut proxy = proxy(100, 100);
    let start = Instant::now();
    let (sent, _) = proxy.on_message(&invite(20), caller(), Transport::Udp, start);
    let (ours, forwarded) = (sent[0].clone(), sent[1].clone());
    let trying = agent_answer(&forwarded, "100 Trying", 20);
    let (out, event) = proxy.on_message(&trying, forwarded.to, Transport::Udp, start);
    assert_eq!((out, event), (vec![], Event::ResponseAbsorbed));
    let (out, events) = proxy.on_timers(start + DEFAULT_T1 * 2);
    assert_eq!(
        (out, events),
        (vec![], vec![]),
        "no Timer A once the agent answered"
    );
    let (out, event) = proxy.on_message(&invite(20), caller(), Transport::Udp, start);
    assert_eq!(
        (out, event),
        (vec![ours], Event::Retransmission),
        "the caller's retransmission gets the ingress's own 100 again"
    );
}

#[test]
fn after_the_callers_final_answer_only_a_2xx_reaches_it() {
    let mut proxy = proxy(100, 100);
    let start = Instant::now();
    let forwarded = forward_invite(&mut proxy, 21, start);
    let agent = forwarded.to;
    let (out, events) = proxy.on_timers(start + DEFAULT_T1 * 64);
    assert_eq!(events.last(), Some(&Event::TimedOut(408)));
    assert_eq!(
        status_line(out.last().expect("408")),
        "SIP/2.0 408 Request Timeout"
    );

    let busy = agent_answer(&forwarded, "486 Busy Here", 21);
    let (out, event) = proxy.on_message(&busy, agent, Transport::Udp, start);
    assert_eq!(event, Event::ResponseAbsorbed);
    assert_eq!(out.len(), 1, "only our ACK: {out:?}");
    assert_eq!(out[0].to, agent);
    assert!(text(&out[0]).starts_with("ACK "));
    let ringing = agent_answer(&forwarded, "180 Ringing", 21);
    let (out, event) = proxy.on_message(&ringing, agent, Transport::Udp, start);
    assert_eq!((out, event), (vec![], Event::ResponseAbsorbed));

    let ok = agent_answer(&forwarded, "200 OK", 21);
    let (out, event) = proxy.on_message(&ok, agent, Transport::Udp, start);
    assert_eq!(event, Event::ResponseRelayed);
    assert_eq!(
        (out.len(), out[0].to, status_line(&out[0])),
        (1, caller(), "SIP/2.0 200 OK".to_owned())
    );
}

/// A board on which agent `sales`'s registration binding is online with the contact `sales`,
/// the Request-URI user of the test calls.
fn board_with_sales_binding() -> (
    crate::register::status::Board,
    crate::register::status::BindingKey,
) {
    use crate::register::binding::SipStatus;
    use crate::register::status::{BindingKey, Board, Lifecycle, Report};
    let (board, key) = (
        Board::default(),
        BindingKey::Registration {
            tenant: "acme".into(),
            agent_id: "sales".into(),
        },
    );
    let report = Report {
        lifecycle: Lifecycle::Running,
        sip: Some(SipStatus::Online),
        message: None,
        last_refreshed: Some(1),
        errors: Vec::new(),
        contact: Some("sales".into()),
        calls_up: 0,
    };
    board.set(&key, report);
    (board, key)
}

#[test]
fn a_call_through_a_binding_is_counted_from_the_agents_2xx_to_the_first_bye() {
    let (board, key) = board_with_sales_binding();
    let mut proxy = proxy(100, 100).counting_calls_on(board.clone());
    let calls_up = || board.get(&key).expect("reported").calls_up;
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 30, now);
    proxy.on_message(
        &agent_answer(&forwarded, "180 Ringing", 30),
        forwarded.to,
        Transport::Udp,
        now,
    );
    assert_eq!(calls_up(), 0, "a ringing call is not up");
    for _ in 0..2 {
        let (_, event) = proxy.on_message(
            &agent_answer(&forwarded, "200 OK", 30),
            forwarded.to,
            Transport::Udp,
            now,
        );
        assert_eq!(event, Event::ResponseRelayed);
        assert_eq!(calls_up(), 1, "a retransmitted 2xx is the same call");
    }
    assert_eq!(
        board.get(&key).expect("reported").sip_word(),
        Some("calling")
    );
    for _ in 0..2 {
        let (_, event) =
            proxy.on_message(&in_dialog_request("BYE", 30), caller(), Transport::Udp, now);
        assert_eq!(event, Event::Relayed);
        assert_eq!(calls_up(), 0, "the BYE ends the call, once");
    }
    assert_eq!(
        board.get(&key).expect("reported").sip_word(),
        Some("online")
    );
}

#[test]
fn a_refused_call_is_never_counted_and_a_forgotten_one_is_uncounted() {
    let (board, key) = board_with_sales_binding();
    let mut proxy = proxy(100, 100).counting_calls_on(board.clone());
    let calls_up = || board.get(&key).expect("reported").calls_up;
    let now = Instant::now();
    let refused = forward_invite(&mut proxy, 31, now);
    proxy.on_message(
        &agent_answer(&refused, "486 Busy Here", 31),
        refused.to,
        Transport::Udp,
        now,
    );
    assert_eq!(calls_up(), 0);
    let answered = forward_invite(&mut proxy, 32, now);
    proxy.on_message(
        &agent_answer(&answered, "200 OK", 32),
        answered.to,
        Transport::Udp,
        now,
    );
    assert_eq!(calls_up(), 1);
    proxy.expire(now + super::dialog::DIALOG_LIFETIME);
    assert_eq!(
        calls_up(),
        0,
        "a dialog forgotten without a BYE is no call up"
    );
}

#[test]
fn calls_to_users_that_name_no_binding_are_not_counted() {
    let (board, key) = board_with_sales_binding();
    board.set(
        &key,
        crate::register::status::Report {
            contact: Some("another-token".into()),
            ..board.get(&key).expect("reported")
        },
    );
    let mut proxy = proxy(100, 100).counting_calls_on(board.clone());
    let now = Instant::now();
    let forwarded = forward_invite(&mut proxy, 33, now);
    proxy.on_message(
        &agent_answer(&forwarded, "200 OK", 33),
        forwarded.to,
        Transport::Udp,
        now,
    );
    assert_eq!(board.get(&key).expect("reported").calls_up, 0);
    assert_eq!(
        board.counts()[&(crate::register::status::Lifecycle::Running, "online")],
        1
    );
}
