//! The bindings' tests: the store's wishes in, REGISTERs read back, the registrar's answers made
//! from them.

use super::*;
use crate::register::binding::Account;
use policy::Secret;

const LOCAL: &str = "127.0.0.1:5060";
const PBX: &str = "192.0.2.7:5060";
const UNIX: u64 = 1_800_000_000;

fn counter() -> RandomSource {
    let mut next = 0u64;
    Box::new(move || {
        next += 1;
        next
    })
}

fn key(agent: &str) -> BindingKey {
    BindingKey::Registration {
        tenant: "t1".into(),
        agent_id: agent.into(),
    }
}

fn spec(user: &str, registrar: &str, contact_user: &str) -> BindingSpec {
    BindingSpec {
        account: Account {
            user: user.into(),
            domain: "pbx.example".into(),
            auth_username: None,
            password: Secret::new("s3cret"),
            transport: Transport::Udp,
        },
        contact_user: contact_user.into(),
        registrar: registrar.parse().expect("host"),
        port: 5060,
    }
}

struct World {
    bindings: Bindings,
    board: Board,
    registrars: Registrars,
}

fn world(max_per_second: u32) -> World {
    let (board, registrars) = (Board::default(), Registrars::default());
    let config = RegistrationConfig {
        expires: 3600,
        max_per_second,
    };
    let bindings = Bindings::new(
        LOCAL.parse().expect("addr"),
        config,
        Duration::from_millis(500),
        counter(),
        registrars.clone(),
        board.clone(),
    );
    World {
        bindings,
        board,
        registrars,
    }
}

fn text(out: &Outgoing) -> String {
    String::from_utf8_lossy(&out.bytes).into_owned()
}

fn field(message: &str, name: &str) -> String {
    let prefix = format!("{name}: ");
    message
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_default()
}

/// The registrar's answer `status` to `request`, with `extra` fields.
fn answer(request: &Outgoing, status: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let request = text(request);
    let mut text = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        text.push_str(&format!("{name}: {}\r\n", field(&request, name)));
    }
    text.push_str(&format!("To: {};tag=pbx\r\n", field(&request, "To")));
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    text.into_bytes()
}

fn pbx() -> SocketAddr {
    PBX.parse().expect("addr")
}

/// Binding `a1` (extension 1001 at 192.0.2.7, contact c1) set up; its first REGISTER.
fn first_register(w: &mut World, now: Instant) -> Outgoing {
    w.bindings.set(
        vec![(key("a1"), Ok(spec("1001", "192.0.2.7", "c1")))],
        now,
        UNIX,
    );
    w.bindings.on_timers(now, UNIX).remove(0)
}

/// Binding `a1` set up and accepted by its registrar.
fn online(w: &mut World, now: Instant) {
    let register = first_register(w, now);
    w.bindings
        .on_response(&answer(&register, "200 OK", &[]), pbx(), now, UNIX);
}

#[test]
fn bindings_start_one_spacing_apart_and_register_their_own_contact() {
    let mut w = world(100);
    let now = Instant::now();
    let out = w.bindings.set(
        vec![
            (key("a1"), Ok(spec("1001", "192.0.2.7", "c1"))),
            (key("a2"), Ok(spec("1002", "192.0.2.7", "c2"))),
        ],
        now,
        UNIX,
    );
    assert!(out.is_empty(), "REGISTERs leave on their timers");
    assert_eq!(w.bindings.next_timer(), Some(now));
    let first = w.bindings.on_timers(now, UNIX);
    assert_eq!(first.len(), 1, "the second waits for its slot");
    assert_eq!(first[0].to, pbx());
    assert!(text(&first[0]).starts_with("REGISTER sip:pbx.example SIP/2.0\r\n"));
    assert_eq!(
        field(&text(&first[0]), "Contact"),
        "<sip:c1@127.0.0.1:5060>"
    );
    assert_eq!(
        w.bindings.next_timer(),
        Some(now + Duration::from_millis(10))
    );
    let second = w.bindings.on_timers(now + Duration::from_millis(10), UNIX);
    assert_eq!(
        field(&text(&second[0]), "Contact"),
        "<sip:c2@127.0.0.1:5060>"
    );
    assert!(w.registrars.trusts("c1", pbx().ip()));
    let report = w.board.get(&key("a1")).expect("reported");
    assert_eq!(report.lifecycle, Lifecycle::Running);
    assert_eq!(report.sip, Some(SipStatus::Registering));
}

#[test]
fn a_challenge_is_answered_and_only_the_2xx_makes_the_binding_online() {
    let mut w = world(200);
    let now = Instant::now();
    let register = first_register(&mut w, now);
    let challenge = answer(
        &register,
        "401 Unauthorized",
        &[(
            "WWW-Authenticate",
            "Digest realm=\"pbx.example\", nonce=\"n1\", qop=\"auth\", algorithm=MD5",
        )],
    );
    let (out, code) = w.bindings.on_response(&challenge, pbx(), now, UNIX);
    assert_eq!(code, Some(401));
    assert_eq!(out.len(), 1);
    assert!(field(&text(&out[0]), "Authorization").starts_with("Digest username=\"1001\""));
    assert_eq!(
        w.board.get(&key("a1")).expect("reported").sip,
        Some(SipStatus::Registering)
    );
    let ok = answer(
        &out[0],
        "200 OK",
        &[("Contact", "<sip:c1@127.0.0.1:5060>;expires=20")],
    );
    w.bindings.on_response(&ok, pbx(), now, UNIX);
    let report = w.board.get(&key("a1")).expect("reported");
    assert_eq!(report.sip, Some(SipStatus::Online));
    assert_eq!(report.last_refreshed, Some(UNIX));
    assert_eq!(report.message, None);
    assert_eq!(
        w.bindings.next_timer(),
        Some(now + Duration::from_secs(10)),
        "refreshed at half the grant"
    );
}

#[test]
fn a_response_from_another_address_or_of_another_call_is_ignored() {
    let mut w = world(200);
    let now = Instant::now();
    let register = first_register(&mut w, now);
    let ok = answer(&register, "200 OK", &[]);
    let stranger = "192.0.2.66:5060".parse().expect("addr");
    assert_eq!(
        w.bindings.on_response(&ok, stranger, now, UNIX),
        (Vec::new(), None)
    );
    let other = String::from_utf8_lossy(&ok).replace(&field(&text(&register), "Call-ID"), "x");
    assert_eq!(
        w.bindings.on_response(other.as_bytes(), pbx(), now, UNIX),
        (Vec::new(), None)
    );
    assert_eq!(
        w.board.get(&key("a1")).expect("reported").sip,
        Some(SipStatus::Registering)
    );
}

#[test]
fn a_registrar_name_is_looked_up_once_and_the_register_waits_for_it() {
    let mut w = world(1000);
    let now = Instant::now();
    w.bindings.set(
        vec![
            (key("a1"), Ok(spec("1001", "PBX.example", "c1"))),
            (key("a2"), Ok(spec("1002", "pbx.example", "c2"))),
        ],
        now,
        UNIX,
    );
    let later = now + Duration::from_millis(1);
    assert!(w.bindings.on_timers(later, UNIX).is_empty());
    assert_eq!(w.bindings.take_lookups(), vec!["pbx.example".to_owned()]);
    assert!(w.bindings.take_lookups().is_empty(), "asked once");
    let out = w
        .bindings
        .on_resolved("pbx.example", vec![pbx().ip()], later, UNIX);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.to == pbx()));
}

#[test]
fn a_name_without_an_address_fails_the_attempt_with_a_message() {
    let mut w = world(200);
    let now = Instant::now();
    w.bindings.set(
        vec![(key("a1"), Ok(spec("1001", "nowhere.example", "c1")))],
        now,
        UNIX,
    );
    w.bindings.on_timers(now, UNIX);
    w.bindings.take_lookups();
    assert!(
        w.bindings
            .on_resolved("nowhere.example", Vec::new(), now, UNIX)
            .is_empty()
    );
    let report = w.board.get(&key("a1")).expect("reported");
    assert_eq!(report.sip, Some(SipStatus::Registering));
    let message = report.message.expect("a message");
    assert!(message.contains("nowhere.example"), "{message}");
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].code, 503);
    assert!(
        w.bindings.next_timer().expect("a retry") >= now + Duration::from_secs(15),
        "retried after the backoff"
    );
}

#[test]
fn a_changed_binding_is_removed_before_its_successor_registers() {
    let mut w = world(200);
    let now = Instant::now();
    online(&mut w, now);
    let out = w.bindings.set(
        vec![(key("a1"), Ok(spec("1001", "192.0.2.8", "c2")))],
        now,
        UNIX,
    );
    assert_eq!(out.len(), 1);
    let removal = text(&out[0]);
    assert_eq!(out[0].to, pbx(), "the removal goes where the binding went");
    assert_eq!(field(&removal, "Expires"), "0");
    assert_eq!(field(&removal, "Contact"), "<sip:c1@127.0.0.1:5060>");
    assert!(
        w.bindings
            .on_timers(now + Duration::from_millis(100), UNIX)
            .is_empty(),
        "the successor waits for the removal"
    );
    w.bindings
        .on_response(&answer(&out[0], "200 OK", &[]), pbx(), now, UNIX);
    assert!(!w.registrars.trusts("c1", pbx().ip()));
    let successor = w.bindings.on_timers(now + Duration::from_millis(100), UNIX);
    assert_eq!(successor.len(), 1);
    assert_eq!(successor[0].to, "192.0.2.8:5060".parse().expect("addr"));
    assert_eq!(
        field(&text(&successor[0]), "Contact"),
        "<sip:c2@127.0.0.1:5060>"
    );
    assert_eq!(field(&text(&successor[0]), "Expires"), "3600");
}

#[test]
fn a_deleted_binding_is_removed_at_its_registrar_and_forgotten() {
    let mut w = world(200);
    let now = Instant::now();
    online(&mut w, now);
    let out = w.bindings.set(Vec::new(), now, UNIX);
    assert_eq!(field(&text(&out[0]), "Expires"), "0");
    assert!(
        w.board.get(&key("a1")).is_some(),
        "until the registrar answers"
    );
    w.bindings
        .on_response(&answer(&out[0], "200 OK", &[]), pbx(), now, UNIX);
    assert!(w.board.get(&key("a1")).is_none());
    assert!(!w.registrars.knows(pbx().ip()));
    assert!(w.bindings.is_idle());
}

#[test]
fn a_binding_never_accepted_is_forgotten_without_a_removal() {
    let mut w = world(200);
    let now = Instant::now();
    w.bindings.set(
        vec![(key("a1"), Ok(spec("1001", "192.0.2.7", "c1")))],
        now,
        UNIX,
    );
    assert!(w.bindings.set(Vec::new(), now, UNIX).is_empty());
    assert!(w.bindings.is_idle());
    assert!(w.board.get(&key("a1")).is_none());
}

#[test]
fn a_binding_that_cannot_run_is_reported_failed_with_its_reason() {
    let mut w = world(200);
    let now = Instant::now();
    let out = w.bindings.set(
        vec![(key("a1"), Err("transport tls is not available yet".into()))],
        now,
        UNIX,
    );
    assert!(out.is_empty());
    let report = w.board.get(&key("a1")).expect("reported");
    assert_eq!(report.lifecycle, Lifecycle::Failed);
    assert_eq!(report.sip, None);
    assert_eq!(
        report.message.as_deref(),
        Some("transport tls is not available yet")
    );
    w.bindings.set(Vec::new(), now, UNIX);
    assert!(w.board.get(&key("a1")).is_none());
}

#[test]
fn an_undeliverable_register_is_a_failure_of_its_attempt() {
    let mut w = world(200);
    let now = Instant::now();
    let register = first_register(&mut w, now);
    let elsewhere = "192.0.2.9:5060".parse().expect("addr");
    assert!(
        w.bindings
            .on_undeliverable(&register.bytes, elsewhere, now, UNIX)
            .is_none(),
        "not sent there"
    );
    assert!(
        w.bindings
            .on_undeliverable(&register.bytes, pbx(), now, UNIX)
            .is_some()
    );
    let report = w.board.get(&key("a1")).expect("reported");
    assert!(
        report
            .message
            .expect("a message")
            .contains("cannot reach the registrar at 192.0.2.7:5060")
    );
}

#[test]
fn stopping_removes_every_binding_at_once_and_starts_nothing() {
    let mut w = world(1);
    let now = Instant::now();
    w.bindings.set(
        vec![
            (key("a1"), Ok(spec("1001", "192.0.2.7", "c1"))),
            (key("a2"), Ok(spec("1002", "192.0.2.7", "c2"))),
        ],
        now,
        UNIX,
    );
    let register = w.bindings.on_timers(now, UNIX).remove(0);
    w.bindings
        .on_response(&answer(&register, "200 OK", &[]), pbx(), now, UNIX);
    let out = w.bindings.stop(now, UNIX);
    assert_eq!(out.len(), 1, "only the accepted binding needs removing");
    assert_eq!(field(&text(&out[0]), "Expires"), "0");
    assert!(!w.bindings.is_idle());
    w.bindings
        .on_response(&answer(&out[0], "200 OK", &[]), pbx(), now, UNIX);
    assert!(w.bindings.is_idle());
    assert!(
        w.bindings
            .set(
                vec![(key("a3"), Ok(spec("1003", "192.0.2.7", "c3")))],
                now,
                UNIX
            )
            .is_empty()
    );
    assert!(w.bindings.is_idle());
    assert!(
        w.bindings
            .on_timers(now + Duration::from_secs(5), UNIX)
            .is_empty()
    );
}
