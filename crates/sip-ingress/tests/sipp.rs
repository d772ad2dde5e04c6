//! The SIP ingress between real SIPp peers over loopback UDP: a caller (UAC) calls an agent
//! (UAS) through `sip-ingress`. Every process is started here and killed by pid when the test
//! ends; every SIPp run is bounded (`-m 1`, `-timeout`).
//!
//! These end-to-end tests live beside the crate rather than in the workspace's `tests/` because
//! only a package's own integration tests are guaranteed a freshly built binary
//! (`CARGO_BIN_EXE_sip-ingress`).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use trunkguard::process::{Guarded, wait_until};
use trunkguard::sip_world::{Agent, demo_tenants, sipp_scenario as scenario, tenants_toml};

const CALLER: &str = "+15551230000";

struct World {
    ingress: SocketAddr,
    ingress_v6: SocketAddr,
    metrics: SocketAddr,
    agent_port: u16,
    proxy_port: u16,
    /// The TCP port of agent `tcpdesk`, whose URI says `transport=tcp`.
    tcp_agent_port: u16,
    dir: PathBuf,
    process: Guarded,
}

fn world_pid(world: &World) -> u32 {
    world.process.pid()
}

fn scratch(name: &str) -> PathBuf {
    trunkguard::sip_world::scratch("sip", name)
}

/// The demo world of issue 4 on free ports, served by the real binary.
fn start_ingress(name: &str) -> World {
    start_ingress_with(name, ROOMY_POLICY)
}

/// A policy deadline for debug builds on a loaded machine: the deadline is wall-clock time, and
/// these tests are about calls, not deadlines (`tests/policy.rs` tests those).
const ROOMY_POLICY: &str = "[policy]\ndeadline_ms = 500\n";

/// The demo world with `extra` configuration text (placed before the tenants; it should set
/// `[policy] deadline_ms` as [`ROOMY_POLICY`] does).
fn start_ingress_with(name: &str, extra: &str) -> World {
    start_world(name, "", extra)
}

/// As [`start_ingress_with`], with `sip_extra` added to the `[sip]` table.
fn start_world(name: &str, sip_extra: &str, extra: &str) -> World {
    let ingress_v6_port = std::net::UdpSocket::bind("[::1]:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("IPv6 loopback");
    let metrics_port = trunkguard::free_port();
    let tcp_agent_port = trunkguard::free_port();
    let (ingress_port, agent_port, proxy_port) = (
        trunkguard::free_sip_port(),
        trunkguard::free_udp_port(),
        trunkguard::free_udp_port(),
    );
    // Beside the demo's agents: one over TCP, one at a name the system resolves, two at names
    // `[sip.hosts]` gives several addresses, and one at a name that does not resolve.
    let extra_agents = [
        (
            "tcpdesk",
            format!("127.0.0.1:{tcp_agent_port};transport=tcp"),
        ),
        ("namedesk", format!("localhost:{agent_port}")),
        (
            "pooldesk",
            format!("agent-pool:{tcp_agent_port};transport=tcp"),
        ),
        ("pairdesk", format!("agent-pair:{agent_port}")),
        ("lostdesk", format!("agent.invalid:{agent_port}")),
    ];
    let mut tenants = demo_tenants(agent_port, proxy_port);
    tenants[0] = extra_agents
        .iter()
        .fold(tenants[0].clone(), |demo, (id, hop)| {
            demo.agent(Agent::named(id, &format!("sip:{id}@{hop}")))
        });
    let tenants = tenants_toml(&tenants);
    let config = format!(
        r#"
[sip]
udp = ["127.0.0.1:{ingress_port}", "[::1]:{ingress_v6_port}"]
tcp = ["127.0.0.1:{ingress_port}"]
tcp_connections_per_source = 4
{sip_extra}

[sip.hosts]
# Nothing listens at 127.0.0.9: a TCP connection there is refused.
"agent-pool" = ["127.0.0.9", "127.0.0.1"]
"agent-pair" = ["127.0.0.1", "127.0.0.2"]

[metrics]
listen = "127.0.0.1:{metrics_port}"

{extra}

{tenants}
"#
    );
    let dir = scratch(name);
    let path = dir.join("ingress.toml");
    std::fs::write(&path, config).expect("config written");
    let process = Guarded::spawn(
        "sip-ingress",
        Command::new(env!("CARGO_BIN_EXE_sip-ingress"))
            .arg("--config")
            .arg(&path),
        &dir.join("ingress.log"),
    );
    let ingress = SocketAddr::from(([127, 0, 0, 1], ingress_port));
    let ready = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(dir.join("ingress.log")).is_ok_and(|l| {
            l.matches("listening on udp").count() == 2
                && l.contains("listening on tcp")
                && l.contains("serving /metrics")
        })
    });
    assert!(
        ready,
        "sip-ingress did not start: {}",
        log(&dir.join("ingress.log"))
    );
    World {
        ingress,
        ingress_v6: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, ingress_v6_port)),
        metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        agent_port,
        proxy_port,
        tcp_agent_port,
        dir,
        process,
    }
}

/// The ingress's `/metrics` text, which must hold each of `lines` as a whole line.
fn metrics_with(world: &World, lines: &[&str]) -> String {
    let text = metrics(world);
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "{line} missing from\n{text}"
        );
    }
    text
}

/// Checks, after a call that failed, that `/metrics` has `series`, no dialog is left, and the
/// caller's ACK for its final answer was absorbed, not answered 481.
fn ended_cleanly(world: &World, series: &str) {
    let text = metrics_with(
        world,
        &[
            series,
            &format!("sip_ingress_dialogs{{socket=\"{}\"}} 0", world.ingress),
        ],
    );
    assert!(
        !text.contains("code=\"481\""),
        "the caller's ACK for its final answer is absorbed:\n{text}"
    );
}

/// The ingress's `/metrics` text.
fn metrics(world: &World) -> String {
    let response = trunkguard::http::request(world.metrics, "GET", "/metrics", &[], None);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    String::from_utf8(response.body).expect("utf8")
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Starts SIPp for one call.
fn sipp(dir: &Path, label: &str, args: &[&str]) -> Guarded {
    sipp_calls(dir, label, 1, args)
}

/// Starts SIPp for `calls` calls, within 60 s.
fn sipp_calls(dir: &Path, label: &str, calls: u32, args: &[&str]) -> Guarded {
    let log = dir.join(format!("{label}.log"));
    Guarded::spawn(
        "sipp",
        Command::new("sipp")
            .arg("-m")
            .arg(calls.to_string())
            .args([
                "-timeout",
                "60s",
                "-timeout_error",
                "-nostdin",
                "-trace_err",
            ])
            .arg("-error_file")
            .arg(dir.join(format!("{label}-errors.log")))
            .args(args)
            .current_dir(dir),
        &log,
    )
}

fn finished_ok(process: &mut Guarded, dir: &Path, label: &str) {
    let status = process.wait_exit(Duration::from_secs(70));
    assert!(
        status.is_some_and(|s| s.success()),
        "{label} failed ({status:?}):\n{}\n{}",
        log(&dir.join(format!("{label}.log"))),
        log(&dir.join(format!("{label}-errors.log")))
    );
}

/// Starts a SIPp caller running `scenario`, calling `called` with From user `from`, with
/// `extra` SIPp arguments (such as `-t t1` for TCP).
fn start_caller(
    world: &World,
    scenario_name: &str,
    called: &str,
    from: &str,
    extra: &[&str],
) -> Guarded {
    let caller_scenario = scenario(&world.dir, scenario_name, "");
    let target = world.ingress.to_string();
    let mut args = vec![
        "-sf",
        caller_scenario.to_str().expect("utf8"),
        "-s",
        called,
        "-set",
        "from",
        from,
        "-i",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    args.push(&target);
    sipp(&world.dir, "caller", &args)
}

/// A SIPp agent running `agent_scenario` (with `checks`) on `port`, with `extra` SIPp arguments
/// (such as `-t t1` for TCP), given time to start listening.
fn start_agent(
    world: &World,
    agent_scenario: &str,
    checks: &str,
    port: u16,
    extra: &[&str],
) -> Guarded {
    start_agent_at(
        world,
        ("agent", "127.0.0.1"),
        agent_scenario,
        checks,
        port,
        extra,
    )
}

/// As [`start_agent`], named `name` (its log and scenario files), listening on `ip`.
fn start_agent_at(
    world: &World,
    (name, ip): (&str, &str),
    agent_scenario: &str,
    checks: &str,
    port: u16,
    extra: &[&str],
) -> Guarded {
    let agent_scenario = scenario(&world.dir, agent_scenario, checks);
    let port = port.to_string();
    let mut args = vec![
        "-sf",
        agent_scenario.to_str().expect("utf8"),
        "-i",
        ip,
        "-p",
        &port,
    ];
    args.extend_from_slice(extra);
    let agent = sipp(&world.dir, name, &args);
    std::thread::sleep(Duration::from_millis(300));
    agent
}

/// One call: a SIPp agent running `agent_scenario` (with `checks`) on `agent_port`, and a caller
/// running `caller_scenario`, calling `called` from `from`, each with its extra SIPp arguments;
/// both must succeed.
fn call(
    world: &World,
    (agent_scenario, checks, agent_port, agent_extra): (&str, &str, u16, &[&str]),
    (caller_scenario, called, from, extra): (&str, &str, &str, &[&str]),
) {
    let mut agent = start_agent(world, agent_scenario, checks, agent_port, agent_extra);
    let mut caller = start_caller(world, caller_scenario, called, from, extra);
    finished_ok(&mut caller, &world.dir, "caller");
    finished_ok(&mut agent, &world.dir, "agent");
}

#[test]
fn a_whole_call_reaches_the_agent_with_x_dest_user() {
    let world = start_ingress("call");
    let checks = r#"<ereg regexp="^INVITE sip:sales@127\.0\.0\.1:[0-9]+ SIP/2\.0" search_in="msg" check_it="true" assign_to="seen"/>
      <ereg regexp="X-Dest-User: sales\.desk" search_in="msg" check_it="true" assign_to="seen"/>
      <ereg regexp="X-Pbx-Trunk: trunk 7;kept=as-is" search_in="msg" check_it="true" assign_to="seen"/>
      <ereg regexp="Record-Route: &lt;sip:127\.0\.0\.1:[0-9]+;lr&gt;" search_in="msg" check_it="true" assign_to="seen"/>"#;
    call(
        &world,
        ("agent.xml", checks, world.agent_port, &[]),
        ("caller.xml", "sales", CALLER, &[]),
    );
    assert!(log(&world.dir.join("ingress.log")).contains("invite admitted"));
    metrics_with(
        &world,
        &[
            "sip_ingress_admission_total{decision=\"forward\",reason=\"admitted\"} 1",
            &format!("sip_ingress_dialogs{{socket=\"{}\"}} 0", world.ingress),
        ],
    );
}

#[test]
fn an_agent_whose_uri_says_tcp_gets_the_whole_call_over_a_connection_the_ingress_opens() {
    let world = start_ingress("agent-tcp");
    // Our Via says TCP, and the Record-Route is doubled: TCP towards the agent (top), UDP
    // towards the caller.
    let checks = r#"<ereg regexp="^INVITE sip:tcpdesk@127\.0\.0\.1:[0-9]+;transport=tcp SIP/2\.0" search_in="msg" check_it="true" assign_to="seen"/>
      <ereg regexp="Via: SIP/2\.0/TCP 127\.0\.0\.1:[0-9]+;branch=z9hG4bK" search_in="msg" check_it="true" assign_to="seen"/>
      <ereg regexp="Record-Route: &lt;sip:127\.0\.0\.1:[0-9]+;transport=tcp;lr&gt;, &lt;sip:127\.0\.0\.1:[0-9]+;lr&gt;" search_in="msg" check_it="true" assign_to="seen"/>"#;
    call(
        &world,
        ("agent.xml", checks, world.tcp_agent_port, &["-t", "t1"]),
        ("caller.xml", "tcpdesk", CALLER, &[]),
    );
    let text = metrics(&world);
    assert!(
        text.lines()
            .any(|l| l.starts_with("sip_ingress_messages_total{transport=\"tcp\"}")),
        "the agent's answers came back over TCP:\n{text}"
    );
    assert!(
        !text.contains("timer=\"A\""),
        "nothing is retransmitted over TCP:\n{text}"
    );
}

#[test]
fn a_whole_call_over_tcp_reaches_the_agent_over_udp() {
    let world = start_ingress("tcp");
    let checks = r#"<ereg regexp="X-Dest-User: sales\.desk" search_in="msg" check_it="true" assign_to="seen"/>
      <ereg regexp="Via: SIP/2\.0/TCP [^;]*;[^[:cntrl:]]*received=127\.0\.0\.1;rport=[0-9]+" search_in="msg" check_it="true" assign_to="seen"/>"#;
    call(
        &world,
        ("agent.xml", checks, world.agent_port, &[]),
        ("caller.xml", "sales", CALLER, &["-t", "t1"]),
    );
    assert!(
        metrics(&world)
            .lines()
            .any(|l| l.starts_with("sip_ingress_messages_total{transport=\"tcp\"}")),
        "{}",
        metrics(&world)
    );
}

#[test]
fn the_proxy_route_is_honoured_and_no_x_dest_user_is_sent_when_unset() {
    let world = start_ingress("route");
    // The "proxy" receives the INVITE with the agent URI as Request-URI and a Route to itself.
    let checks = format!(
        r#"<ereg regexp="^INVITE sip:support@127\.0\.0\.1:{} SIP/2\.0" search_in="msg" check_it="true" assign_to="seen"/>
      <ereg regexp="Route: &lt;sip:127\.0\.0\.1:{};lr&gt;" search_in="msg" check_it="true" assign_to="seen"/>
      <ereg regexp="X-Dest-User" search_in="msg" check_it_inverse="true" assign_to="seen"/>"#,
        world.agent_port, world.proxy_port
    );
    // Called by number this time.
    call(
        &world,
        ("agent.xml", &checks, world.proxy_port, &[]),
        ("caller.xml", "+15550100002", CALLER, &[]),
    );
}

#[test]
fn a_call_to_an_agent_whose_tcp_port_refuses_connections_gets_500_without_waiting_for_timer_b() {
    // With T1 at 10 s, Timer B would answer only after 640 s, far beyond SIPp's 60 s: the
    // 500 can only come from the refused connection.
    let world = start_world("agent-refused", "t1_ms = 10000", ROOMY_POLICY);
    // Nothing listens on the agent's TCP port.
    let mut caller = start_caller(&world, "caller_failed.xml", "tcpdesk", CALLER, &[]);
    finished_ok(&mut caller, &world.dir, "caller");
    let ingress_log = log(&world.dir.join("ingress.log"));
    assert!(
        ingress_log.contains("tcp connection to agent failed")
            && ingress_log.contains("invite could not be sent to its agent"),
        "{ingress_log}"
    );
    ended_cleanly(
        &world,
        "sip_ingress_invite_send_failures_total{action=\"answered_500\"} 1",
    );
}

#[test]
fn a_non_e164_from_gets_404() {
    let world = start_ingress("404");
    let mut caller = start_caller(&world, "caller_refused.xml", "sales", "alice", &[]);
    finished_ok(&mut caller, &world.dir, "caller");
}

fn invite(from_port: u16, called: &str, max_forwards: u32) -> Vec<u8> {
    format!(
        "INVITE sip:{called}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bK-raw-{called}\r\n\
         From: <sip:{CALLER}@pbx>;tag=1\r\nTo: <sip:{called}@127.0.0.1>\r\nCall-ID: raw-{called}-{from_port}\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: {max_forwards}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `bytes` from `source` to the ingress listener of the same address family and returns
/// the first answer within one second.
fn exchange(world: &World, source: &str, bytes: &[u8]) -> Option<String> {
    let socket = UdpSocket::bind((source, 0)).expect("loopback source address");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let target = if source.contains(':') {
        world.ingress_v6
    } else {
        world.ingress
    };
    socket.send_to(bytes, target).expect("sent");
    let mut buffer = [0u8; 4096];
    socket
        .recv_from(&mut buffer)
        .ok()
        .map(|(n, _)| String::from_utf8_lossy(&buffer[..n]).into_owned())
}

#[test]
fn disallowed_sources_and_other_tenants_callers_get_no_answer() {
    let world = start_ingress("silence");
    // A source in no list, and acme's source calling demo's agent: nothing comes back.
    assert_eq!(
        exchange(&world, "127.0.0.2", &invite(5999, "sales", 70)),
        None
    );
    assert_eq!(
        exchange(&world, "127.0.0.4", &invite(5998, "sales", 70)),
        None
    );
    // Control: the same INVITE from an allowed source is answered at once.
    let answer = exchange(&world, "127.0.0.1", &invite(5997, "sales", 70)).expect("answered");
    assert!(answer.starts_with("SIP/2.0 100 Trying"), "{answer}");
    metrics_with(
        &world,
        &["sip_ingress_admission_total{decision=\"refuse\",reason=\"source_not_allowed\"} 2"],
    );
    // And acme's own agent is reachable from acme's source.
    let answer =
        exchange(&world, "127.0.0.4", &invite(5996, "+15550100003", 70)).expect("answered");
    assert!(answer.starts_with("SIP/2.0 100 Trying"), "{answer}");
}

#[test]
fn ipv6_callers_in_the_access_list_are_served() {
    let world = start_ingress("ipv6");
    let invite = String::from_utf8(invite(5993, "sales", 70))
        .expect("utf8")
        .replace("127.0.0.1:5993", "[::1]:5993");
    let answer = exchange(&world, "::1", invite.as_bytes()).expect("answered over IPv6");
    assert!(answer.starts_with("SIP/2.0 100 Trying"), "{answer}");
    assert!(answer.contains("Via: SIP/2.0/UDP [::1]:5993;"), "{answer}");
}

#[test]
fn max_forwards_zero_gets_483_and_options_to_the_ingress_gets_200() {
    let world = start_ingress("483");
    let answer = exchange(&world, "127.0.0.1", &invite(5995, "sales", 0)).expect("answered");
    assert!(answer.starts_with("SIP/2.0 483 Too Many Hops"), "{answer}");
    let options = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5994;branch=z9hG4bK-o1\r\nFrom: <sip:{CALLER}@pbx>;tag=1\r\n\
         To: <sip:{}>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        world.ingress, world.ingress
    );
    let answer = exchange(&world, "127.0.0.1", options.as_bytes()).expect("answered");
    assert!(answer.starts_with("SIP/2.0 200 OK"), "{answer}");
    assert!(answer.contains("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS"));
}

#[test]
fn a_cancelled_call_ends_with_487_on_both_sides() {
    let world = start_ingress("cancel");
    // The agent's last step is receiving the ACK the proxy itself sends for the 487.
    call(
        &world,
        ("agent_cancelled.xml", "", world.agent_port, &[]),
        ("caller_cancel.xml", "sales", CALLER, &[]),
    );
}

#[test]
fn an_agent_that_rings_past_timer_c_is_cancelled_and_the_caller_gets_its_487() {
    // Timer C at 2 s: the ingress cancels the ringing agent itself, and the caller, who never
    // cancels, gets the 487 the agent answers.
    let world = start_world("timer-c", "timer_c_seconds = 2", ROOMY_POLICY);
    call(
        &world,
        ("agent_cancelled.xml", "", world.agent_port, &[]),
        ("caller_rings_out.xml", "sales", CALLER, &[]),
    );
    ended_cleanly(
        &world,
        "sip_ingress_invite_timers_total{timer=\"C\",action=\"cancelled\"} 1",
    );
}

#[test]
fn an_invite_whose_first_agent_address_refuses_tcp_goes_to_the_next_address() {
    let world = start_ingress("pool");
    // The INVITE that reaches the agent is the second attempt: a branch of its own.
    let checks = r#"<ereg regexp="Via: SIP/2\.0/TCP 127\.0\.0\.1:[0-9]+;branch=z9hG4bK[0-9a-f]{16}\.1" search_in="msg" check_it="true" assign_to="seen"/>"#;
    call(
        &world,
        ("agent.xml", checks, world.tcp_agent_port, &["-t", "t1"]),
        ("caller.xml", "pooldesk", CALLER, &[]),
    );
    let text = metrics_with(
        &world,
        &[
            "sip_ingress_invite_next_address_total{after=\"transport_error\"} 1",
            &format!("sip_ingress_dialogs{{socket=\"{}\"}} 0", world.ingress),
        ],
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("sip_ingress_invite_send_failures_total{")),
        "no call failed:\n{text}"
    );
}

#[test]
fn an_invite_whose_first_agent_address_answers_503_goes_to_the_next_address() {
    let world = start_ingress("pair");
    let mut unavailable = start_agent_at(
        &world,
        ("unavailable", "127.0.0.1"),
        "agent_unavailable.xml",
        "",
        world.agent_port,
        &[],
    );
    let checks = r#"<ereg regexp="Via: SIP/2\.0/UDP 127\.0\.0\.1:[0-9]+;branch=z9hG4bK[0-9a-f]{16}\.1" search_in="msg" check_it="true" assign_to="seen"/>"#;
    let mut agent = start_agent_at(
        &world,
        ("agent", "127.0.0.2"),
        "agent.xml",
        checks,
        world.agent_port,
        &[],
    );
    // The caller never sees the 503: its scenario takes 180 and 200 only.
    let mut caller = start_caller(&world, "caller.xml", "pairdesk", CALLER, &[]);
    finished_ok(&mut caller, &world.dir, "caller");
    finished_ok(&mut agent, &world.dir, "agent");
    finished_ok(&mut unavailable, &world.dir, "unavailable");
    metrics_with(
        &world,
        &["sip_ingress_invite_next_address_total{after=\"503\"} 1"],
    );
}

fn options_to(world: &World, branch: &str) -> String {
    format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5992;branch=z9hG4bK-{branch}\r\n\
         From: <sip:{CALLER}@pbx>;tag=1\r\nTo: <sip:{}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        world.ingress, world.ingress
    )
}

/// Whether the ingress closed the connection (a read returns end of stream within 2 s).
fn closed_by_peer(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn tcp_answers_on_the_connection_and_enforces_its_limits() {
    use std::io::{Read, Write};
    let world = start_ingress("tcp-limits");
    // Four connections from one source are served, each answered on its own connection.
    let mut open: Vec<std::net::TcpStream> = (0..4)
        .map(|i| {
            let mut stream = std::net::TcpStream::connect(world.ingress).expect("connects");
            stream
                .write_all(options_to(&world, &format!("t{i}")).as_bytes())
                .expect("sent");
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut buffer = [0u8; 2048];
            let n = stream
                .read(&mut buffer)
                .expect("answered on the connection");
            assert!(buffer[..n].starts_with(b"SIP/2.0 200 OK"));
            stream
        })
        .collect();
    // A double CRLF is a keep-alive ping, answered with a CRLF pong (RFC 5626 section 4.4.1),
    // also when it comes in two parts, and the connection goes on serving requests.
    let keepalive = &mut open[0];
    let mut pong = [0u8; 2];
    keepalive.write_all(b"\r\n").expect("half a ping");
    std::thread::sleep(Duration::from_millis(100));
    keepalive.write_all(b"\r\n").expect("its other half");
    keepalive.read_exact(&mut pong).expect("a pong");
    assert_eq!(&pong, b"\r\n");
    let pinged_request = format!("\r\n\r\n{}", options_to(&world, "after-ping"));
    keepalive
        .write_all(pinged_request.as_bytes())
        .expect("a ping and a request");
    keepalive.read_exact(&mut pong).expect("a pong");
    assert_eq!(&pong, b"\r\n");
    let mut buffer = [0u8; 2048];
    let n = keepalive.read(&mut buffer).expect("the request answered");
    assert!(
        buffer[..n].starts_with(b"SIP/2.0 200 OK"),
        "{}",
        String::from_utf8_lossy(&buffer[..n])
    );
    // A fifth from the same source is closed at once.
    let mut fifth = std::net::TcpStream::connect(world.ingress).expect("accepted, then closed");
    assert!(closed_by_peer(&mut fifth), "the fifth connection was kept");
    // A stream that cannot be framed (no end of headers within 64 KiB) is closed.
    let mut garbage = open.pop().expect("a connection");
    let _ = garbage.write_all(&vec![b'a'; 70 * 1024]);
    assert!(
        closed_by_peer(&mut garbage),
        "an unframeable stream was kept open"
    );
}

#[test]
fn a_response_for_a_caller_whose_tcp_connection_closed_goes_over_a_new_one() {
    use std::io::{Read, Write};
    let world = start_ingress("tcp-reconnect");
    let agent = std::net::UdpSocket::bind(("127.0.0.1", world.agent_port)).expect("agent");
    agent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // Where the caller's Via says it listens: RFC 3261 section 18.2.2 reconnects there.
    let listening = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listening.local_addr().expect("address").port();
    let ingress = world.ingress;
    let invite = format!(
        "INVITE sip:sales@{ingress} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK-reconnect\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{CALLER}@pbx>;tag=1\r\nTo: <sip:sales@{ingress}>\r\n\
         Call-ID: reconnect\r\nCSeq: 1 INVITE\r\nContact: <sip:{CALLER}@127.0.0.1:{port};transport=tcp>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let mut caller = std::net::TcpStream::connect(ingress).expect("connects");
    caller
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    caller.write_all(invite.as_bytes()).expect("sent");
    let mut buffer = [0u8; 4096];
    let n = caller.read(&mut buffer).expect("100 Trying");
    assert!(buffer[..n].starts_with(b"SIP/2.0 100 Trying"));
    // The caller closes its connection, and the ingress closes its side.
    caller.shutdown(std::net::Shutdown::Write).expect("shut");
    assert!(
        closed_by_peer(&mut caller),
        "the ingress kept the connection"
    );

    let (n, from) = agent.recv_from(&mut buffer).expect("the INVITE");
    let forwarded = String::from_utf8_lossy(&buffer[..n]).into_owned();
    let mut busy = "SIP/2.0 486 Busy Here\r\n".to_owned();
    for line in forwarded.lines() {
        if ["Via:", "From:", "Call-ID:", "CSeq:"]
            .iter()
            .any(|name| line.starts_with(name))
        {
            busy.push_str(&format!("{line}\r\n"));
        } else if line.starts_with("To:") {
            busy.push_str(&format!("{line};tag=agent\r\n"));
        }
    }
    busy.push_str("Content-Length: 0\r\n\r\n");
    agent.send_to(busy.as_bytes(), from).expect("answered");

    listening.set_nonblocking(true).expect("nonblocking");
    let mut reconnected = None;
    wait_until(Duration::from_secs(5), || {
        reconnected = listening.accept().ok().map(|(stream, _)| stream);
        reconnected.is_some()
    });
    let mut reconnected = reconnected.expect("the ingress connected to the caller's sent-by");
    reconnected.set_nonblocking(false).expect("blocking");
    reconnected
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = reconnected.read(&mut buffer).expect("the 486");
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(answer.starts_with("SIP/2.0 486 Busy Here\r\n"), "{answer}");
    assert!(answer.contains("Call-ID: reconnect\r\n"), "{answer}");
}

/// The value of the series `line_start` (`name{labels}`) in the ingress's metrics, 0 if absent.
fn series(world: &World, line_start: &str) -> u64 {
    metrics(world)
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn ten_reloads_under_load_fail_no_call() {
    let dir = scratch("reload-config");
    let wasm = trunkguard::wasm_dir();
    let policy = |module: &str, generation: u32| {
        format!(
            "[policy]\nmodule = \"{}\"\ncache_dir = \"{}\"\ndeadline_ms = 500\n\n[policy.settings]\n\
             allowed_prefixes = \"+1\"\ngeneration = \"{generation}\"\n",
            wasm.join(module).display(),
            dir.join("cache").display()
        )
    };
    let world = start_ingress_with("reload", &policy("ingress_policy.wasm", 0));
    let config = world.dir.join("ingress.toml");
    let original = std::fs::read_to_string(&config).expect("config");
    // /metrics names the module in force by the SHA-256 of its file.
    let in_force = |module: &str| {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(wasm.join(module)).expect("module"));
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sip_ingress_policy_info{{sha256=\"{hex}\"}} 1")
    };
    metrics_with(&world, &[&in_force("ingress_policy.wasm")]);
    let has_line = |line: &str| metrics(&world).lines().any(|l| l == line);

    // 150 calls at 15 per second: about ten seconds of load, through every reload below.
    let checks = r#"<ereg regexp="X-Dest-User: sales\.desk" search_in="msg" check_it="true" assign_to="seen"/>"#;
    let agent_scenario = scenario(&world.dir, "agent.xml", checks);
    let agent_port = world.agent_port.to_string();
    let mut agent = sipp_calls(
        &world.dir,
        "agent",
        150,
        &[
            "-sf",
            agent_scenario.to_str().expect("utf8"),
            "-i",
            "127.0.0.1",
            "-p",
            &agent_port,
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let caller_scenario = scenario(&world.dir, "caller.xml", "");
    let target = world.ingress.to_string();
    let mut caller = sipp_calls(
        &world.dir,
        "caller",
        150,
        &[
            "-sf",
            caller_scenario.to_str().expect("utf8"),
            "-s",
            "sales",
            "-set",
            "from",
            CALLER,
            "-i",
            "127.0.0.1",
            "-r",
            "15",
            &target,
        ],
    );

    let applied = "sip_ingress_policy_reloads_total{result=\"applied\"}";
    for reload in 1..=10u32 {
        // Odd reloads rewrite the configuration (noticed by the file check), switching between
        // the default and the country policy; even ones are SIGHUPs.
        if reload % 2 == 1 {
            let module = if reload % 4 == 1 {
                "country_policy.wasm"
            } else {
                "ingress_policy.wasm"
            };
            let text = original.replace(&policy("ingress_policy.wasm", 0), &policy(module, reload));
            std::fs::write(&config, text).expect("config rewritten");
        } else {
            let sent = Command::new("kill")
                .args(["-HUP", &world_pid(&world).to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success());
        }
        assert!(
            wait_until(Duration::from_secs(5), || series(&world, applied)
                == u64::from(reload)),
            "reload {reload} not applied: {}",
            log(&world.dir.join("ingress.log"))
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The ninth reload put the country policy in force, and only it is shown.
    assert!(
        has_line(&in_force("country_policy.wasm")),
        "{}",
        metrics(&world)
    );
    assert!(
        !has_line(&in_force("ingress_policy.wasm")),
        "{}",
        metrics(&world)
    );

    // A broken module is refused and the policy in force keeps serving.
    let broken = world.dir.join("broken.wasm");
    std::fs::write(&broken, b"not a component").expect("written");
    let text = original.replace(
        &wasm.join("ingress_policy.wasm").display().to_string(),
        &broken.display().to_string(),
    );
    std::fs::write(&config, text).expect("config rewritten");
    assert!(
        wait_until(Duration::from_secs(5), || {
            series(
                &world,
                "sip_ingress_policy_reloads_total{result=\"refused\"}",
            ) == 1
        }),
        "the broken module was not refused"
    );
    assert!(log(&world.dir.join("ingress.log")).contains("reload refused"));
    // So is a broken configuration.
    std::fs::write(&config, original.replace("[sip]", "[sip]\nnot_a_key = 1")).expect("written");
    assert!(
        wait_until(Duration::from_secs(5), || {
            series(
                &world,
                "sip_ingress_policy_reloads_total{result=\"refused\"}",
            ) == 2
        }),
        "the broken configuration was not refused"
    );
    assert!(log(&world.dir.join("ingress.log")).contains("not_a_key"));
    assert!(
        has_line(&in_force("country_policy.wasm")),
        "{}",
        metrics(&world)
    );

    finished_ok(&mut caller, &world.dir, "caller");
    finished_ok(&mut agent, &world.dir, "agent");
    assert_eq!(
        series(
            &world,
            "sip_ingress_admission_total{decision=\"forward\",reason=\"admitted\"}"
        ),
        150
    );
    assert_eq!(
        series(&world, "sip_ingress_policy_failures_total{kind=\"trap\"}"),
        0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The next datagram on `socket` within `wait`.
fn next_datagram(socket: &UdpSocket, wait: Duration) -> Option<(String, Instant)> {
    socket.set_read_timeout(Some(wait)).expect("timeout");
    let mut buffer = [0u8; 8192];
    let (n, _) = socket.recv_from(&mut buffer).ok()?;
    Some((
        String::from_utf8_lossy(&buffer[..n]).into_owned(),
        Instant::now(),
    ))
}

#[test]
fn a_silent_agent_gets_the_invite_again_at_doubling_intervals_and_the_caller_408() {
    // T1 = 100 ms: retransmissions 0.1, 0.3, 0.7, 1.5, 3.1 and 6.3 s after the first send, and
    // Timer B at 64 x T1 = 6.4 s.
    let world = start_world("timers", "t1_ms = 100", ROOMY_POLICY);
    let agent = UdpSocket::bind(("127.0.0.1", world.agent_port)).expect("the agent's port");
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller socket");
    let caller_port = caller.local_addr().expect("addr").port();
    caller
        .send_to(&invite(caller_port, "sales", 70), world.ingress)
        .expect("sent");
    let (trying, _) = next_datagram(&caller, Duration::from_secs(2)).expect("100 Trying");
    assert!(trying.starts_with("SIP/2.0 100 Trying\r\n"), "{trying}");

    // The longest gap is 32 x T1 = 3.2 s.
    let copies: Vec<(String, Instant)> = (0..7)
        .map_while(|_| next_datagram(&agent, Duration::from_secs(5)))
        .collect();
    assert_eq!(copies.len(), 7, "the INVITE and six retransmissions");
    assert!(copies.iter().all(|(text, _)| *text == copies[0].0));
    assert!(copies[0].0.starts_with("INVITE sip:sales@127.0.0.1:"));
    // Retransmission k is due (2^k - 1) x T1 after the first send, never earlier: Timer A
    // doubling, not a fixed resend.
    let offsets: Vec<Duration> = copies.iter().map(|(_, at)| *at - copies[0].1).collect();
    for (k, offset) in offsets.iter().enumerate().skip(1) {
        let due = Duration::from_millis(100 * ((1 << k) - 1)) - Duration::from_millis(10);
        assert!(
            *offset >= due,
            "retransmission {k} at {offset:?}: {offsets:?}"
        );
    }

    let (answer, _) = next_datagram(&caller, Duration::from_secs(2)).expect("408");
    assert!(
        answer.starts_with("SIP/2.0 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("branch=z9hG4bK-raw-sales"), "{answer}");
    assert_eq!(
        next_datagram(&agent, Duration::from_millis(500)),
        None,
        "nothing is sent to the agent after Timer B"
    );
    let text = metrics(&world);
    assert!(
        text.contains("sip_ingress_invite_timers_total{timer=\"A\",action=\"retransmitted\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("sip_ingress_invite_timers_total{timer=\"B\",action=\"answered_408\"} 1"),
        "{text}"
    );
}

#[test]
fn an_agent_at_a_host_name_gets_the_call_at_the_address_the_name_resolves_to() {
    let world = start_ingress("agent-name");
    // The Request-URI keeps the name; the packet went to 127.0.0.1, where the agent listens.
    let checks = r#"<ereg regexp="^INVITE sip:namedesk@localhost:[0-9]+ SIP/2\.0" search_in="msg" check_it="true" assign_to="seen"/>"#;
    call(
        &world,
        ("agent.xml", checks, world.agent_port, &[]),
        ("caller.xml", "namedesk", CALLER, &[]),
    );
    metrics_with(
        &world,
        &[
            "sip_ingress_invites_awaiting_name_total 1",
            "sip_ingress_admission_total{decision=\"forward\",reason=\"admitted\"} 1",
        ],
    );
}

#[test]
fn a_caller_of_an_agent_whose_host_name_does_not_resolve_gets_100_then_503() {
    let world = start_ingress("agent-lost");
    let agent = UdpSocket::bind(("127.0.0.1", world.agent_port)).expect("the agent's port");
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller socket");
    let caller_port = caller.local_addr().expect("addr").port();
    caller
        .send_to(&invite(caller_port, "lostdesk", 70), world.ingress)
        .expect("sent");
    let answers: Vec<String> =
        std::iter::from_fn(|| next_datagram(&caller, Duration::from_secs(8)))
            .take(2)
            .map(|(text, _)| text.lines().next().unwrap_or_default().to_owned())
            .collect();
    assert_eq!(
        answers,
        ["SIP/2.0 100 Trying", "SIP/2.0 503 Service Unavailable"],
        "{}",
        log(&world.dir.join("ingress.log"))
    );
    assert!(
        next_datagram(&agent, Duration::from_millis(200)).is_none(),
        "nothing reached any agent"
    );
    metrics_with(
        &world,
        &["sip_ingress_admission_total{decision=\"refuse\",reason=\"agent_unreachable\"} 1"],
    );
}
