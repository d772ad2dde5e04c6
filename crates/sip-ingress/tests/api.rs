//! The control-plane API of the real `sip-ingress` binary, over loopback: an access-list entry
//! added through the API lets the next INVITE from that source in, deleting it shuts it out
//! again, tenants never see or touch each other's entries, invalid requests get RFC 9457
//! answers, what was acknowledged survives a SIGKILL in the middle of a stream of writes, and the
//! whole loop works through the real edge.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use trunkguard::process::{Guarded, wait_until};
use trunkguard::sip_world::{Agent, Tenant, tenants_toml};

struct Ingress {
    sip: SocketAddr,
    api: SocketAddr,
    _process: Guarded,
}

fn scratch(name: &str) -> PathBuf {
    trunkguard::sip_world::scratch("api", name)
}

fn start(dir: &Path, sip_port: u16, api_port: u16) -> Ingress {
    start_with_gateway(dir, sip_port, api_port, 9)
}

/// The ingress, with agents registered through the API reached at 127.0.0.1:`gateway_port`.
fn start_with_gateway(dir: &Path, sip_port: u16, api_port: u16, gateway_port: u16) -> Ingress {
    let tenants = tenants_toml(&[
        Tenant::new("demo", &["127.0.0.1/32"])
            .agent(Agent::named("sales", "sip:sales@127.0.0.1:9")),
        Tenant::new("acme", &["127.0.0.4/32"]),
    ]);
    let config = format!(
        r#"
[sip]
udp = ["127.0.0.1:{sip_port}"]

[policy]
# Wall-clock time; roomy for debug builds on a loaded machine.
deadline_ms = 500

[api]
listen = "127.0.0.1:{api_port}"
database = "trunkguard.db"
agent_gateway = "sip:{{username}}@127.0.0.1:{gateway_port}"

{tenants}
"#
    );
    let path = dir.join("ingress.toml");
    std::fs::write(&path, config).expect("config written");
    let log = dir.join("ingress.log");
    let process = Guarded::spawn(
        "sip-ingress",
        Command::new(env!("CARGO_BIN_EXE_sip-ingress"))
            .arg("--config")
            .arg(&path),
        &log,
    );
    let ready = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("serving the control-plane API"))
    });
    assert!(
        ready,
        "sip-ingress did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Ingress {
        sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
        api: SocketAddr::from(([127, 0, 0, 1], api_port)),
        _process: process,
    }
}

/// The ingress with agents registered through the API reached at a socket of the test's.
fn start_with_agent_socket(dir: &Path) -> (Ingress, UdpSocket) {
    let gateway = UdpSocket::bind("127.0.0.1:0").expect("gateway socket");
    let port = gateway.local_addr().expect("addr").port();
    let ingress = start_with_gateway(
        dir,
        trunkguard::free_udp_port(),
        trunkguard::free_port(),
        port,
    );
    (ingress, gateway)
}

/// An INVITE for `sales` from `source`; the first answer within a second.
fn invite(ingress: &Ingress, source: &str, n: u32) -> Option<String> {
    let socket = UdpSocket::bind((source, 0)).expect("loopback source");
    let port = socket.local_addr().expect("addr").port();
    let message = format!(
        "INVITE sip:sales@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-api-{n}\r\n\
         From: <sip:+15551230000@pbx>;tag=1\r\nTo: <sip:sales@127.0.0.1>\r\nCall-ID: api-{n}\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket
        .send_to(message.as_bytes(), ingress.sip)
        .expect("sent");
    datagram_within(&socket, Duration::from_secs(1)).map(|(text, _)| text)
}

/// The next datagram on `socket` within `wait`, and who sent it.
fn datagram_within(socket: &UdpSocket, wait: Duration) -> Option<(String, SocketAddr)> {
    socket.set_read_timeout(Some(wait)).expect("timeout");
    let mut buffer = [0u8; 8192];
    let (n, from) = socket.recv_from(&mut buffer).ok()?;
    Some((String::from_utf8_lossy(&buffer[..n]).into_owned(), from))
}

fn call(
    ingress: &Ingress,
    method: &str,
    path: &str,
    tenant: Option<&str>,
    body: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(tenant) = tenant {
        headers.push(("x-tenant-id", tenant));
    }
    let response =
        trunkguard::http::request(ingress.api, method, path, &headers, body.map(str::as_bytes));
    let content_type = response.header("content-type").map(str::to_owned);
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
        content_type,
    )
}

fn id_of(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect("json");
    value["id"].as_str().expect("an id").to_owned()
}

const LIST: &str = "/v1/sip/ip-access-list";

#[test]
fn an_entry_added_through_the_api_admits_the_next_invite_and_deleting_it_shuts_it_out() {
    let dir = scratch("loop");
    let ingress = start(&dir, trunkguard::free_udp_port(), trunkguard::free_port());
    assert_eq!(invite(&ingress, "127.0.0.3", 1), None, "not yet allowed");

    let (status, body, _) = call(
        &ingress,
        "POST",
        LIST,
        Some("demo"),
        Some(r#"{"address":"127.0.0.3/32","description":"new PBX"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let id = id_of(&body);
    let answer = invite(&ingress, "127.0.0.3", 2).expect("admitted at once");
    assert!(answer.starts_with("SIP/2.0 100 Trying"), "{answer}");

    // Another tenant sees nothing and cannot delete it.
    let (status, body, _) = call(&ingress, "GET", LIST, Some("acme"), None);
    assert_eq!((status, body.as_str()), (200, r#"{"items":[]}"#));
    let (status, _, content_type) = call(
        &ingress,
        "DELETE",
        &format!("{LIST}/{id}"),
        Some("acme"),
        None,
    );
    assert_eq!(status, 404);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let (status, body, _) = call(&ingress, "GET", LIST, Some("demo"), None);
    assert_eq!(status, 200);
    assert!(
        body.contains(&id) && body.contains(r#""address":"127.0.0.3""#) && body.contains("new PBX"),
        "{body}"
    );

    let (status, _, _) = call(
        &ingress,
        "DELETE",
        &format!("{LIST}/{id}"),
        Some("demo"),
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(invite(&ingress, "127.0.0.3", 3), None, "shut out again");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_requests_get_problem_documents() {
    let dir = scratch("invalid");
    let ingress = start(&dir, trunkguard::free_udp_port(), trunkguard::free_port());
    let (status, body, content_type) = call(
        &ingress,
        "POST",
        LIST,
        Some("demo"),
        Some(r#"{"address":"10.0.0.1/24","description":7}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert!(body.contains(r#""pointer":"/address""#), "{body}");
    assert!(body.contains("did you mean 10.0.0.0/24?"), "{body}");
    assert!(body.contains(r#""pointer":"/description""#), "{body}");

    let (status, body, _) = call(
        &ingress,
        "POST",
        LIST,
        None,
        Some(r#"{"address":"10.0.0.1"}"#),
    );
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = call(&ingress, "PUT", LIST, Some("demo"), Some("{}"));
    assert_eq!(status, 405);
    let (status, _, _) = call(&ingress, "GET", "/v1/nothing", Some("demo"), None);
    assert_eq!(status, 404);
    let response = trunkguard::http::request(
        ingress.api,
        "POST",
        LIST,
        &[("x-tenant-id", "demo"), ("content-type", "text/plain")],
        Some(b"address=10.0.0.1"),
    );
    assert_eq!(response.status, 415);
    // Nothing was stored by any of these.
    let (_, body, _) = call(&ingress, "GET", LIST, Some("demo"), None);
    assert_eq!(body, r#"{"items":[]}"#);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes one access-list entry per request on one connection until the connection fails (or
/// `stop` is set); returns the ids of the writes the API acknowledged, and whether it ended on a
/// failure.
fn write_until_failure(api: SocketAddr, stop: &AtomicBool) -> (Vec<String>, bool) {
    let mut acknowledged = Vec::new();
    let Ok(mut connection) = trunkguard::http::Connection::open(api) else {
        return (acknowledged, true);
    };
    for n in 0u32.. {
        if stop.load(Ordering::SeqCst) {
            return (acknowledged, false);
        }
        let body = format!(r#"{{"address":"10.{}.{}.0/24"}}"#, n / 256 % 256, n % 256);
        let response = connection.request(
            "POST",
            LIST,
            &[
                ("x-tenant-id", "demo"),
                ("content-type", "application/json"),
            ],
            Some(body.as_bytes()),
        );
        match response {
            Ok(response) if response.status == 201 => {
                acknowledged.push(id_of(&String::from_utf8_lossy(&response.body)));
            }
            Ok(response) => panic!("write {n} refused: {}", response.status),
            Err(_) => return (acknowledged, true),
        }
    }
    (acknowledged, false)
}

#[test]
fn every_acknowledged_write_survives_a_sigkill_in_the_middle_of_a_stream() {
    let dir = scratch("durable");
    let (sip_port, api_port) = (trunkguard::free_udp_port(), trunkguard::free_port());
    let ingress = start(&dir, sip_port, api_port);
    let (status, _, _) = call(
        &ingress,
        "POST",
        LIST,
        Some("demo"),
        Some(r#"{"address":"127.0.0.3"}"#),
    );
    assert_eq!(status, 201);

    let stop = AtomicBool::new(false);
    let api = ingress.api;
    let (acknowledged, cut_off) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_until_failure(api, &stop));
        // Let a stream build up, then kill the ingress while the writer is still writing.
        std::thread::sleep(Duration::from_millis(1_500));
        drop(ingress); // Guarded kills with SIGKILL.
        // Bounds the writer if the kill somehow did not cut its connection.
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        writer.join().expect("writer thread")
    });
    assert!(cut_off, "the kill did not land in the middle of the stream");
    assert!(
        acknowledged.len() >= 5,
        "too few writes before the kill: {}",
        acknowledged.len()
    );

    let ingress = start(&dir, sip_port, api_port);
    let (_, body, _) = call(&ingress, "GET", LIST, Some("demo"), None);
    let stored: serde_json::Value = serde_json::from_str(&body).expect("json");
    let stored: std::collections::HashSet<&str> = stored["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["id"].as_str())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    let answer = invite(&ingress, "127.0.0.3", 4).expect("the stored entry is in force");
    assert!(answer.starts_with("SIP/2.0 100 Trying"), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Through the edge, the whole loop of the README: Envoy with the filter and the demo keys in
/// front of the ingress's API; what the demo key adds and registers changes who gets in and
/// what the agent receives; acme's key sees none of it; bad bodies stop at the edge and at the
/// API alike.
#[test]
fn the_loop_through_the_edge_changes_who_gets_in() {
    let dir = scratch("edge");
    let (ingress, gateway) = start_with_agent_socket(&dir);
    let gateway_port = gateway.local_addr().expect("addr").port();
    // Its own scratch name: the tests here clear `trunkguard-api-<name>-<pid>` directories.
    let mut edge = trunkguard::edge::start_envoy("edge-before-api", ingress.api.port(), &[]);
    edge.wait_ready();
    let send = |key: &str, method: &str, path: &str, body: Option<&str>| {
        let response = edge.send(
            "api-loop",
            method,
            path,
            &[("x-api-key", key), ("content-type", "application/json")],
            body.map(str::as_bytes),
        );
        (
            response.status,
            String::from_utf8_lossy(&response.body).into_owned(),
        )
    };
    const DEMO: &str = "tg_demo_0123456789abcdef";
    const ACME: &str = "tg_acme_0123456789abcdef";

    assert_eq!(invite(&ingress, "127.0.0.3", 10), None);
    let (status, body) = send(DEMO, "POST", LIST, Some(r#"{"address":"127.0.0.3/32"}"#));
    assert_eq!(status, 201, "{body}");
    let id = id_of(&body);
    let answer = invite(&ingress, "127.0.0.3", 11).expect("admitted");
    assert!(answer.starts_with("SIP/2.0 100 Trying"), "{answer}");

    // A new agent registered through the edge is called by its username from 127.0.0.3 and
    // receives its X-Dest-User.
    let registration = r#"{"domain":"pbx.invalid","username":"edgeagent","password":"hunter2","xDestUser":"desk.edge"}"#;
    let (status, body) = send(DEMO, "PUT", AGENT, Some(registration));
    assert_eq!(status, 201, "{body}");
    assert!(!body.contains("hunter2"), "{body}");
    let caller = invite_from(&ingress, "127.0.0.3", "edgeagent", 12);
    let forwarded = agent_answers(&gateway).expect("the new agent is called");
    assert!(
        forwarded.starts_with(&format!(
            "INVITE sip:edgeagent@127.0.0.1:{gateway_port} SIP/2.0"
        )),
        "{forwarded}"
    );
    assert!(
        forwarded.contains("\r\nX-Dest-User: desk.edge\r\n"),
        "{forwarded}"
    );
    assert!(received(&caller).is_some_and(|m| m.starts_with("SIP/2.0 100 Trying")));

    // acme's key reaches the same API as tenant acme: nothing to see, nothing to delete.
    assert_eq!(
        send(ACME, "GET", LIST, None),
        (200, r#"{"items":[]}"#.to_owned())
    );
    assert_eq!(send(ACME, "DELETE", &format!("{LIST}/{id}"), None).0, 404);
    assert_eq!(send(ACME, "GET", AGENT, None).0, 404);
    assert_eq!(send(ACME, "DELETE", AGENT, None).0, 404);

    // An invalid body is refused at the edge, and by the API when called directly.
    let invalid = r#"{"address":"10.0.0.1/24"}"#;
    let (status, body) = send(DEMO, "POST", LIST, Some(invalid));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("did you mean 10.0.0.0/24?"), "{body}");
    let (status, direct, content_type) = call(&ingress, "POST", LIST, Some("demo"), Some(invalid));
    assert_eq!(status, 400, "{direct}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let errors = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).expect("json")["errors"].clone()
    };
    assert_eq!(
        errors(&body),
        errors(&direct),
        "the edge and the API judge alike"
    );

    let (status, _) = send(DEMO, "DELETE", &format!("{LIST}/{id}"), None);
    assert_eq!(status, 204);
    let caller = invite_from(&ingress, "127.0.0.3", "edgeagent", 13);
    assert_eq!(received(&caller), None, "shut out again: no answer");
    assert_eq!(received(&gateway), None, "and nothing reached the agent");
    let log = std::fs::read_to_string(dir.join("ingress.log")).unwrap_or_default();
    assert!(!log.contains("hunter2"), "the password was logged");
    let _ = std::fs::remove_dir_all(&dir);
}

const AGENT: &str = "/v1/agents/3fa85f64-5717-4562-b3fc-2c963f66afa6/sip-registration";

/// The next datagram on `socket` within two seconds.
fn received(socket: &UdpSocket) -> Option<String> {
    datagram_within(socket, Duration::from_secs(2)).map(|(text, _)| text)
}

/// The next INVITE the agent gateway receives within two seconds, answered 180 Ringing as an
/// agent would, so the ingress does not send it again (RFC 3261 Timer A).
fn agent_answers(gateway: &UdpSocket) -> Option<String> {
    let (invite, ingress) = datagram_within(gateway, Duration::from_secs(2))?;
    let echoed: Vec<&str> = invite
        .lines()
        .filter(|l| {
            ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                .iter()
                .any(|f| l.starts_with(f))
        })
        .collect();
    let ringing = format!(
        "SIP/2.0 180 Ringing\r\n{}\r\nContent-Length: 0\r\n\r\n",
        echoed.join("\r\n")
    );
    gateway
        .send_to(ringing.as_bytes(), ingress)
        .expect("answered");
    Some(invite)
}

fn invite_for(ingress: &Ingress, called: &str, n: u32) {
    invite_from(ingress, "127.0.0.1", called, n);
}

/// Sends an INVITE for `called` from `source`; returns the caller's socket, where answers come.
fn invite_from(ingress: &Ingress, source: &str, called: &str, n: u32) -> UdpSocket {
    let socket = UdpSocket::bind((source, 0)).expect("loopback source");
    let port = socket.local_addr().expect("addr").port();
    let message = format!(
        "INVITE sip:{called}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-reg-{n}\r\n\
         From: <sip:+15551230000@pbx>;tag=1\r\nTo: <sip:{called}@127.0.0.1>\r\nCall-ID: reg-{n}\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket
        .send_to(message.as_bytes(), ingress.sip)
        .expect("sent");
    socket
}

#[test]
fn a_registered_agent_is_reached_by_username_and_did_with_its_x_dest_user() {
    let dir = scratch("registration");
    let (ingress, gateway) = start_with_agent_socket(&dir);
    let gateway_port = gateway.local_addr().expect("addr").port();
    let body = r#"{"domain":"pbx.invalid","username":"newagent","password":"hunter2","did":"+15550100009","xDestUser":"desk.9"}"#;
    let (status, text, _) = call(&ingress, "PUT", AGENT, Some("demo"), Some(body));
    assert_eq!(status, 201, "{text}");
    let view: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(view["extension"], "newagent");
    assert_eq!(view["registrationEnabled"], true);
    assert_eq!(view["xDestUser"], "desk.9");
    assert!(
        !text.contains("hunter2") && view.get("password").is_none(),
        "{text}"
    );

    // Reached by username and by DID, at the gateway, with X-Dest-User.
    invite_for(&ingress, "newagent", 1);
    let forwarded = agent_answers(&gateway).expect("forwarded to the gateway");
    assert!(
        forwarded.starts_with(&format!(
            "INVITE sip:newagent@127.0.0.1:{gateway_port} SIP/2.0"
        )),
        "{forwarded}"
    );
    assert!(forwarded.contains("X-Dest-User: desk.9\r\n"), "{forwarded}");
    invite_for(&ingress, "+15550100009", 2);
    assert!(agent_answers(&gateway).is_some_and(|m| m.starts_with("INVITE sip:newagent@")));

    let (status, text, _) = call(&ingress, "GET", AGENT, Some("demo"), None);
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let (status, text, _) = call(
        &ingress,
        "GET",
        &format!("{AGENT}/status"),
        Some("demo"),
        None,
    );
    assert_eq!(status, 200, "{text}");
    // The registration client has taken it up; pbx.invalid (RFC 6761) never resolves.
    assert!(text.contains(r#""lifecycleStatus":"Running""#), "{text}");
    assert!(
        text.contains(r#""sipStatus":"registering""#) && text.contains(r#""lastRefreshed":null"#),
        "no registrar answered, so nothing claims one did: {text}"
    );
    // Another tenant sees no registration and cannot delete it.
    assert_eq!(call(&ingress, "GET", AGENT, Some("acme"), None).0, 404);
    assert_eq!(call(&ingress, "DELETE", AGENT, Some("acme"), None).0, 404);

    // A username that names another agent (even another tenant's) is a conflict that discloses
    // nothing, and the registration in force stays.
    let clash = r#"{"domain":"pbx.example.com","username":"sales","password":"x"}"#;
    let (status, text, _) = call(&ingress, "PUT", AGENT, Some("demo"), Some(clash));
    assert_eq!(status, 409, "{text}");
    assert!(!text.contains("acme") && !text.contains("sales"), "{text}");
    invite_for(&ingress, "newagent", 3);
    assert!(
        agent_answers(&gateway).is_some(),
        "the previous registration is still in force"
    );
    let acme_clash = r#"{"domain":"x.example.com","username":"newagent","password":"x"}"#;
    let other = "/v1/agents/00000000-0000-4000-8000-000000000001/sip-registration";
    assert_eq!(
        call(&ingress, "PUT", other, Some("acme"), Some(acme_clash)).0,
        409
    );

    // Invalid: a bad agent id, a bad X-Dest-User.
    let (status, text, _) = call(
        &ingress,
        "PUT",
        "/v1/agents/not-a-uuid/sip-registration",
        Some("demo"),
        Some(body),
    );
    assert_eq!(status, 400, "{text}");
    let bad =
        r#"{"domain":"pbx.example.com","username":"u2","password":"x","xDestUser":"no spaces"}"#;
    let (status, text, _) = call(&ingress, "PUT", AGENT, Some("demo"), Some(bad));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains(r#""pointer":"/xDestUser""#), "{text}");

    assert_eq!(call(&ingress, "DELETE", AGENT, Some("demo"), None).0, 204);
    invite_for(&ingress, "newagent", 4);
    assert_eq!(received(&gateway), None, "no longer an agent");
    let log = std::fs::read_to_string(dir.join("ingress.log")).unwrap_or_default();
    assert!(!log.contains("hunter2"), "the password was logged");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outbound_routes_are_stored_per_tenant() {
    let dir = scratch("routes");
    let ingress = start(&dir, trunkguard::free_udp_port(), trunkguard::free_port());
    const ROUTES: &str = "/v1/sip/outbound-routes";
    let (status, body, _) = call(
        &ingress,
        "POST",
        ROUTES,
        Some("demo"),
        Some(
            r#"{"route":"sip.example.com;TRANSPORT=TCP;proxyaddress=10.0.0.1:5070","description":"trunk"}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    let id = id_of(&body);
    // Printed in the seed's spelling.
    assert!(
        body.contains("sip.example.com;transport=tcp;proxyAddress=10.0.0.1:5070"),
        "{body}"
    );
    assert_eq!(
        call(&ingress, "GET", ROUTES, Some("acme"), None).1,
        r#"{"items":[]}"#
    );
    assert_eq!(
        call(
            &ingress,
            "DELETE",
            &format!("{ROUTES}/{id}"),
            Some("acme"),
            None
        )
        .0,
        404
    );
    let (status, body, _) = call(
        &ingress,
        "POST",
        ROUTES,
        Some("demo"),
        Some(r#"{"route":"sip.example.com;transport=sctp"}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(r#""pointer":"/route""#), "{body}");
    assert!(
        call(&ingress, "GET", ROUTES, Some("demo"), None)
            .1
            .contains(&id)
    );
    assert_eq!(
        call(
            &ingress,
            "DELETE",
            &format!("{ROUTES}/{id}"),
            Some("demo"),
            None
        )
        .0,
        204
    );
    assert_eq!(
        call(&ingress, "GET", ROUTES, Some("demo"), None).1,
        r#"{"items":[]}"#
    );
    let _ = std::fs::remove_dir_all(&dir);
}
