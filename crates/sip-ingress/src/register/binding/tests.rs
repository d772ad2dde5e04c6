//! The binding's tests: its REGISTERs read back, the registrar's answers made from them.

use super::*;
use crate::sip::check::{Verdict, classify_datagram};
use policy::digest::{Algorithm, Inputs, Qop};

const CONTACT: &str = "sip:tg0123456789abcdef@127.0.0.1:5060";

/// A counter standing in for randomness: every draw differs, every run is the same.
fn counter() -> impl FnMut() -> u64 {
    let mut next = 0u64;
    move || {
        next += 1;
        next
    }
}

fn account(transport: Transport) -> Account {
    Account {
        user: "1001".into(),
        domain: "pbx.example".into(),
        auth_username: None,
        password: Secret::new("s3cret"),
        transport,
    }
}

fn binding(transport: Transport, now: Instant) -> Binding {
    let local = "127.0.0.1:5060".parse().expect("addr");
    let t1 = Duration::from_millis(500);
    Binding::new(
        account(transport),
        CONTACT.into(),
        local,
        3600,
        t1,
        now,
        &mut counter(),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of the first `name` field of `message`.
fn field(message: &[u8], name: &str) -> String {
    let prefix = format!("{name}: ");
    text(message)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_default()
}

/// The registrar's answer `status` to `request`, with `extra` fields.
fn answer(request: &[u8], status: &str, extra: &[(&str, &str)]) -> Response {
    let mut text = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        text.push_str(&format!("{name}: {}\r\n", field(request, name)));
    }
    text.push_str(&format!("To: {};tag=pbx\r\n", field(request, "To")));
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    match classify_datagram(text.as_bytes()) {
        Verdict::Response(response) => response,
        other => panic!("not a response: {other:?}\n{text}"),
    }
}

#[test]
fn a_register_names_the_address_of_record_and_our_contact() {
    let now = Instant::now();
    let mut binding = binding(Transport::Udp, now);
    assert_eq!(
        binding.deadline(),
        Some(now),
        "the first REGISTER is due at once"
    );
    let register = binding
        .on_timer(now, 0, &mut counter())
        .expect("a REGISTER");
    let message = text(&register);
    assert!(
        message.starts_with("REGISTER sip:pbx.example SIP/2.0\r\n"),
        "{message}"
    );
    assert!(field(&register, "From").starts_with("<sip:1001@pbx.example>;tag="));
    assert_eq!(field(&register, "To"), "<sip:1001@pbx.example>");
    assert_eq!(field(&register, "Contact"), format!("<{CONTACT}>"));
    assert_eq!(field(&register, "Expires"), "3600");
    assert_eq!(field(&register, "CSeq"), "1 REGISTER");
    assert_eq!(field(&register, "Call-ID"), binding.call_id());
    assert!(field(&register, "Via").starts_with("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK"));
    assert_eq!(binding.status(), SipStatus::Registering);
}

#[test]
fn a_401_is_answered_with_credentials_and_the_2xx_puts_the_binding_online() {
    let now = Instant::now();
    let mut random = counter();
    let mut binding = binding(Transport::Udp, now);
    let first = binding.on_timer(now, 0, &mut random).expect("register");
    let challenge = "Digest realm=\"pbx.example\", nonce=\"n1\", qop=\"auth\"";
    let unauthorized = answer(
        &first,
        "401 Unauthorized",
        &[("WWW-Authenticate", challenge)],
    );
    let second = binding
        .on_response(&unauthorized, now, 0, &mut random)
        .expect("credentials");
    assert_eq!(field(&second, "CSeq"), "2 REGISTER");
    assert_eq!(field(&second, "Call-ID"), field(&first, "Call-ID"));
    assert_ne!(field(&second, "Via"), field(&first, "Via"), "a new branch");
    let credentials = field(&second, "Authorization");
    let param = |name: &str| {
        credentials
            .split(", ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned()
    };
    let expected = digest::response(&Inputs {
        algorithm: Algorithm::Md5,
        username: "1001",
        realm: "pbx.example",
        password: "s3cret",
        method: "REGISTER",
        uri: "sip:pbx.example",
        nonce: "n1",
        qop: Some(Qop {
            nc: 1,
            cnonce: &param("cnonce"),
        }),
    });
    assert_eq!(param("response"), expected, "{credentials}");
    assert_eq!(param("nc"), "00000001");
    assert!(!text(&second).contains("s3cret"));

    let ok = answer(
        &second,
        "200 OK",
        &[("Contact", &format!("<{CONTACT}>;expires=20"))],
    );
    assert_eq!(
        binding.on_response(&ok, now, 1_700_000_000, &mut random),
        None
    );
    assert_eq!(binding.status(), SipStatus::Online);
    assert_eq!(binding.last_refreshed(), Some(1_700_000_000));
    assert_eq!(
        binding.deadline(),
        Some(now + Duration::from_secs(10)),
        "a 20 s grant is refreshed after 10 s"
    );
    let refresh = binding
        .on_timer(now + Duration::from_secs(10), 0, &mut random)
        .expect("refresh");
    assert_eq!(field(&refresh, "CSeq"), "3 REGISTER");
    assert!(
        field(&refresh, "Authorization").contains("nc=00000002"),
        "the nonce is used again, counted"
    );
}

#[test]
fn credentials_challenged_again_are_rejected_and_retried_after_a_backoff() {
    let now = Instant::now();
    let mut random = counter();
    let mut binding = binding(Transport::Udp, now);
    let first = binding.on_timer(now, 0, &mut random).expect("register");
    let challenge = [("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n1\"")];
    let unauthorized = answer(&first, "401 Unauthorized", &challenge);
    let second = binding
        .on_response(&unauthorized, now, 0, &mut random)
        .expect("credentials");
    let again = answer(&second, "401 Unauthorized", &challenge);
    assert_eq!(binding.on_response(&again, now, 42, &mut random), None);
    assert_eq!(binding.status(), SipStatus::Registering);
    let error = binding.errors().next().expect("an error");
    assert_eq!((error.code, error.unix), (401, 42));
    assert!(
        error.message.contains("refused the credentials"),
        "{}",
        error.message
    );
    assert!(!error.message.contains("s3cret"));
    let retry = binding.deadline().expect("a retry") - now;
    assert!(
        retry >= FIRST_BACKOFF / 2 && retry <= FIRST_BACKOFF,
        "{retry:?}"
    );
}

#[test]
fn a_stale_nonce_is_answered_again_and_a_407_gets_proxy_credentials() {
    let now = Instant::now();
    let mut random = counter();
    let mut binding = binding(Transport::Udp, now);
    let first = binding.on_timer(now, 0, &mut random).expect("register");
    let offer = [
        (
            "Proxy-Authenticate",
            "Digest realm=\"r\", nonce=\"n1\", algorithm=SHA-256",
        ),
        (
            "Proxy-Authenticate",
            "Digest realm=\"r\", nonce=\"n1\", algorithm=MD5",
        ),
    ];
    let required = answer(&first, "407 Proxy Authentication Required", &offer);
    let second = binding
        .on_response(&required, now, 0, &mut random)
        .expect("credentials");
    let credentials = field(&second, "Proxy-Authorization");
    assert!(
        credentials.contains("algorithm=SHA-256"),
        "the first offered: {credentials}"
    );
    let stale = [(
        "Proxy-Authenticate",
        "Digest realm=\"r\", nonce=\"n2\", stale=true",
    )];
    let required = answer(&second, "407 Proxy Authentication Required", &stale);
    let third = binding
        .on_response(&required, now, 0, &mut random)
        .expect("answered again");
    assert!(field(&third, "Proxy-Authorization").contains("nonce=\"n2\""));
    assert_eq!(binding.errors().count(), 0);
}

#[test]
fn a_423_asks_again_with_the_registrars_min_expires() {
    let now = Instant::now();
    let mut random = counter();
    let mut binding = binding(Transport::Udp, now);
    let first = binding.on_timer(now, 0, &mut random).expect("register");
    let brief = answer(&first, "423 Interval Too Brief", &[("Min-Expires", "7200")]);
    let second = binding
        .on_response(&brief, now, 0, &mut random)
        .expect("again");
    assert_eq!(field(&second, "Expires"), "7200");
    let same = answer(
        &second,
        "423 Interval Too Brief",
        &[("Min-Expires", "7200")],
    );
    assert_eq!(binding.on_response(&same, now, 0, &mut random), None);
    assert_eq!(binding.errors().next().map(|e| e.code), Some(423));
}

#[test]
fn over_udp_a_silent_registrar_gets_retransmissions_then_the_attempt_fails_at_timer_f() {
    let start = Instant::now();
    let mut random = counter();
    let mut binding = binding(Transport::Udp, start);
    let first = binding.on_timer(start, 0, &mut random).expect("register");
    let mut resent_after = Vec::new();
    while let Some(at) = binding
        .deadline()
        .filter(|at| *at < start + Duration::from_secs(32))
    {
        assert_eq!(binding.on_timer(at, 0, &mut random), Some(first.clone()));
        resent_after.push((at - start).as_millis());
    }
    assert_eq!(
        resent_after,
        [
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    let timer_f = start + Duration::from_secs(32);
    assert_eq!(binding.on_timer(timer_f, 7, &mut random), None);
    let error = binding.errors().next().expect("an error");
    assert_eq!(
        (error.code, error.message.as_str()),
        (TIMED_OUT, "the registrar did not answer")
    );
    assert!(binding.deadline().expect("a retry") > timer_f);
}

#[test]
fn over_tcp_only_timer_f_runs_and_a_provisional_answer_stops_retransmissions() {
    let start = Instant::now();
    let mut random = counter();
    let mut tcp = binding(Transport::Tcp, start);
    tcp.on_timer(start, 0, &mut random).expect("register");
    assert_eq!(tcp.deadline(), Some(start + Duration::from_secs(32)));

    let mut udp = binding(Transport::Udp, start);
    let first = udp.on_timer(start, 0, &mut random).expect("register");
    udp.on_response(&answer(&first, "100 Trying", &[]), start, 0, &mut random);
    assert_eq!(udp.deadline(), Some(start + Duration::from_secs(32)));
}

#[test]
fn answers_of_other_transactions_are_ignored() {
    let now = Instant::now();
    let mut random = counter();
    let mut binding = binding(Transport::Udp, now);
    let first = binding.on_timer(now, 0, &mut random).expect("register");
    let text = String::from_utf8(first.clone()).expect("text");
    let branch = uri::param(&field(&first, "Via"), "branch")
        .expect("branch")
        .to_owned();
    for other in [
        text.replace(&branch, "z9hG4bKforged"),
        text.replace(binding.call_id(), "another-call"),
    ] {
        let ok = answer(other.as_bytes(), "200 OK", &[]);
        assert_eq!(binding.on_response(&ok, now, 0, &mut random), None);
        assert_eq!(binding.status(), SipStatus::Registering);
    }
}

#[test]
fn a_removal_asks_for_expires_0_and_its_2xx_ends_the_binding() {
    let now = Instant::now();
    let mut random = counter();
    let mut never_accepted = binding(Transport::Udp, now);
    assert_eq!(
        never_accepted.remove(now, &mut random),
        None,
        "nothing to remove"
    );
    assert_eq!(never_accepted.status(), SipStatus::Unregistered);

    let mut online = binding(Transport::Udp, now);
    let first = online.on_timer(now, 0, &mut random).expect("register");
    let ok = answer(&first, "200 OK", &[("Expires", "60")]);
    online.on_response(&ok, now, 0, &mut random);
    assert_eq!(online.deadline(), Some(now + Duration::from_secs(30)));
    let removal = online.remove(now, &mut random).expect("removal");
    assert_eq!(field(&removal, "Expires"), "0");
    online.on_response(&answer(&removal, "200 OK", &[]), now, 0, &mut random);
    assert_eq!(
        (online.status(), online.deadline()),
        (SipStatus::Unregistered, None)
    );
}

#[test]
fn the_backoff_doubles_from_30_seconds_to_at_most_30_minutes() {
    for random in [0, 1, u64::MAX] {
        let first = backoff(1, random);
        assert!(
            first >= FIRST_BACKOFF / 2 && first <= FIRST_BACKOFF,
            "{first:?}"
        );
        let second = backoff(2, random);
        assert!(
            second >= FIRST_BACKOFF && second <= FIRST_BACKOFF * 2,
            "{second:?}"
        );
        let late = backoff(40, random);
        assert!(late >= MOST_BACKOFF / 2 && late <= MOST_BACKOFF, "{late:?}");
    }
}
