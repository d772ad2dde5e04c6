//! Registrations end to end, over loopback: the real `sip-ingress` registers an agent saved
//! through its API to a real PBX (Kamailio 5.6 with `registrar`, `usrloc` and `auth`, plain-text
//! passwords in an htable; `tests/kamailio/pbx.cfg`), and the PBX's calls to the extension reach
//! a SIPp agent through the ingress. Every process is started here and stopped by pid when the
//! test ends (Kamailio by SIGTERM, so that its workers stop with it); every SIPp run is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use trunkguard::process::{Guarded, wait_until};
use trunkguard::sip_world::{Tenant, answers_options, sipp_scenario as scenario, tenants_toml};

const AGENT: &str = "/v1/agents/3fa85f64-5717-4562-b3fc-2c963f66afa6/sip-registration";
const CALLER: &str = "+15551230000";

fn scratch(name: &str) -> PathBuf {
    trunkguard::sip_world::scratch("registration", name)
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A Kamailio registrar and PBX on a free loopback port, UDP and TCP.
struct Pbx {
    port: u16,
    log: PathBuf,
    process: Option<Guarded>,
}

impl Pbx {
    /// A PBX challenging with `algorithm` (MD5 or SHA-256), granting from `grants.start()`
    /// seconds (asking for less gets 423) to `grants.end()`, with one extension `user` whose
    /// password is `password`.
    fn start(
        dir: &Path,
        algorithm: &str,
        grants: std::ops::RangeInclusive<u32>,
        user: &str,
        password: &str,
    ) -> Self {
        let port = trunkguard::free_sip_port();
        let template = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("kamailio")
            .join("pbx.cfg");
        let config = std::fs::read_to_string(template)
            .expect("pbx.cfg")
            .replace("@PORT@", &port.to_string())
            .replace("@ALGORITHM@", algorithm)
            .replace("@MIN_EXPIRES@", &grants.start().to_string())
            .replace("@MAX_EXPIRES@", &grants.end().to_string())
            .replace(
                "@USERS@",
                &format!("\t$sht(users=>{user}) = \"{password}\";"),
            );
        std::fs::write(dir.join("pbx.cfg"), config).expect("pbx.cfg written");
        let log = dir.join("pbx.log");
        let process = Guarded::spawn(
            "kamailio",
            Command::new("kamailio")
                .args(["-f", "pbx.cfg", "-DD", "-E", "-m", "64", "-M", "8"])
                .arg("-Y")
                .arg(dir)
                .arg("-P")
                .arg(dir.join("pbx.pid"))
                .current_dir(dir),
            &log,
        );
        let pbx = Self {
            port,
            log,
            process: Some(process),
        };
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_until(Duration::from_secs(20), || answers_options(target)),
            "the PBX did not start: {}",
            self::log(&pbx.log)
        );
        pbx
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The REGISTERs the PBX received, as its log lines.
    fn registers(&self) -> Vec<String> {
        log(&self.log)
            .lines()
            .filter(|l| l.contains("pbx: REGISTER"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            // SIGTERM: Kamailio's main process then stops the workers it forked.
            let _ = Command::new("kill")
                .args(["-TERM", &process.pid().to_string()])
                .status();
            let _ = process.wait_exit(Duration::from_secs(10));
        }
    }
}

struct Ingress {
    sip: SocketAddr,
    api: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
    process: Guarded,
}

/// The ingress with its API, agents registered through it reached at 127.0.0.1:`gateway_port`.
/// The tenant allows callers from 127.0.0.3 only, so a PBX's call through a binding is admitted
/// because it comes from the binding's registrar, not by the access list.
fn start_ingress(dir: &Path, gateway_port: u16) -> Ingress {
    let ports = (
        trunkguard::free_sip_port(),
        trunkguard::free_port(),
        trunkguard::free_port(),
    );
    start_ingress_on(dir, gateway_port, ports, "")
}

/// As [`start_ingress`], on the given SIP, API and metrics ports, with `sip_extra` in `[sip]`.
fn start_ingress_on(
    dir: &Path,
    gateway_port: u16,
    (sip_port, api_port, metrics_port): (u16, u16, u16),
    sip_extra: &str,
) -> Ingress {
    let tenants = tenants_toml(&[Tenant::new("demo", &["127.0.0.3/32"])]);
    let config = format!(
        r#"
[sip]
udp = ["127.0.0.1:{sip_port}"]
tcp = ["127.0.0.1:{sip_port}"]
{sip_extra}

[policy]
# Wall-clock time; roomy for debug builds on a loaded machine.
deadline_ms = 500

[metrics]
listen = "127.0.0.1:{metrics_port}"

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
            .arg(&path)
            .env("RUST_LOG", "info,sip_ingress=debug"),
        &log,
    );
    let ready = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("serving the control-plane API"))
    });
    assert!(ready, "sip-ingress did not start: {}", self::log(&log));
    Ingress {
        sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
        api: SocketAddr::from(([127, 0, 0, 1], api_port)),
        metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        log,
        process,
    }
}

/// A request to the API as tenant `demo`: the status and the body.
fn call(ingress: &Ingress, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let headers = [
        ("content-type", "application/json"),
        ("x-tenant-id", "demo"),
    ];
    let response =
        trunkguard::http::request(ingress.api, method, path, &headers, body.map(str::as_bytes));
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

/// The registration's status once `done` holds for it (within `limit`); fails with the last
/// one seen and the logs otherwise.
fn status_when(
    ingress: &Ingress,
    pbx: &Pbx,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let reached = wait_until(limit, || {
        let (status, text) = call(ingress, "GET", &format!("{AGENT}/status"), None);
        assert_eq!(status, 200, "{text}");
        last = serde_json::from_str(&text).expect("json");
        done(&last)
    });
    assert!(
        reached,
        "status never reached: {last}\n--- ingress\n{}\n--- pbx\n{}",
        log(&ingress.log),
        log(&pbx.log)
    );
    last
}

fn metrics(ingress: &Ingress) -> String {
    let response = trunkguard::http::request(ingress.metrics, "GET", "/metrics", &[], None);
    String::from_utf8(response.body).expect("utf8")
}

/// The contact user the ingress registered, from the PBX's log.
fn contact_user(pbx: &Pbx, ingress: &Ingress) -> String {
    let registers = pbx.registers();
    let line = registers.last().expect("a REGISTER");
    let prefix = "contact=<sip:";
    let at = line.find(prefix).expect("a contact") + prefix.len();
    let (user, rest) = line[at..].split_once('@').expect("a user part");
    assert!(
        rest.starts_with(&ingress.sip.to_string()),
        "the contact is at the ingress: {line}"
    );
    assert_eq!(user.len(), 32, "an unguessable token: {line}");
    user.to_owned()
}

/// SIPp for one call, within 30 s.
fn sipp(dir: &Path, label: &str, args: &[&str]) -> Guarded {
    Guarded::spawn(
        "sipp",
        Command::new("sipp")
            .args(["-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.join(format!("{label}-errors.log")))
            .args(args)
            .current_dir(dir),
        &dir.join(format!("{label}.log")),
    )
}

fn finished_ok(process: &mut Guarded, dir: &Path, label: &str, context: &[&Path]) {
    let status = process.wait_exit(Duration::from_secs(40));
    let logs: Vec<String> = context
        .iter()
        .map(|p| format!("--- {}\n{}", p.display(), log(p)))
        .collect();
    assert!(
        status.is_some_and(|s| s.success()),
        "{label} failed ({status:?}):\n{}\n{}\n{}",
        log(&dir.join(format!("{label}.log"))),
        log(&dir.join(format!("{label}-errors.log"))),
        logs.join("\n")
    );
}

/// A SIPp agent answering one call on `port`, holding the INVITE to `checks`, given time to
/// start listening.
fn start_agent(dir: &Path, port: u16, checks: &str) -> Guarded {
    let agent_scenario = scenario(dir, "agent.xml", checks);
    let port = port.to_string();
    let agent = sipp(
        dir,
        "agent",
        &[
            "-sf",
            agent_scenario.to_str().expect("utf8"),
            "-i",
            "127.0.0.1",
            "-p",
            &port,
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    agent
}

/// A SIPp caller running `scenario_name`, calling extension `called` at the PBX.
fn call_the_pbx(dir: &Path, pbx: &Pbx, scenario_name: &str, called: &str) -> Guarded {
    let caller = scenario(dir, scenario_name, "");
    caller_at_pbx(dir, pbx, &caller, called)
}

/// A SIPp caller calling extension `called` at the PBX with `caller.xml`, holding the answered
/// call for `hold` before its BYE.
fn call_the_pbx_holding(dir: &Path, pbx: &Pbx, called: &str, hold: Duration) -> Guarded {
    let caller = scenario(dir, "caller.xml", "");
    let brief = std::fs::read_to_string(&caller).expect("scenario");
    let pause = r#"<pause milliseconds="100"/>"#;
    assert!(brief.contains(pause), "caller.xml pauses before its BYE");
    let held = dir.join("caller-holding.xml");
    let holding = format!(r#"<pause milliseconds="{}"/>"#, hold.as_millis());
    std::fs::write(&held, brief.replace(pause, &holding)).expect("scenario written");
    caller_at_pbx(dir, pbx, &held, called)
}

/// A SIPp caller running the scenario at `caller`, calling extension `called` at the PBX.
fn caller_at_pbx(dir: &Path, pbx: &Pbx, caller: &Path, called: &str) -> Guarded {
    let target = pbx.addr().to_string();
    sipp(
        dir,
        "caller",
        &[
            "-sf",
            caller.to_str().expect("utf8"),
            "-s",
            called,
            "-set",
            "from",
            CALLER,
            "-i",
            "127.0.0.1",
            &target,
        ],
    )
}

/// Sends an INVITE for `user` at the ingress from `source`; the first answer within a second.
fn invite_from(ingress: &Ingress, source: &str, user: &str) -> Option<String> {
    let socket = UdpSocket::bind((source, 0)).expect("loopback source");
    let port = socket.local_addr().expect("addr").port();
    let message = format!(
        "INVITE sip:{user}@{ingress} SIP/2.0\r\nVia: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-st-{port}\r\n\
         From: <sip:{CALLER}@pbx>;tag=1\r\nTo: <sip:{user}@{ingress}>\r\nCall-ID: stranger-{port}\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ingress = ingress.sip
    );
    socket
        .send_to(message.as_bytes(), ingress.sip)
        .expect("sent");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buffer = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

fn online(status: &serde_json::Value) -> bool {
    status["sipStatus"] == "online"
}

#[test]
fn an_agent_registered_to_a_kamailio_pbx_takes_its_calls_until_it_is_deleted() {
    let dir = scratch("md5-udp");
    let pbx = Pbx::start(&dir, "MD5", 0..=20, "1001", "pw-1001");
    let gateway_port = trunkguard::free_udp_port();
    let ingress = start_ingress(&dir, gateway_port);

    // Through the PBX's proxy address, for the domain pbx.test.
    let body = format!(
        r#"{{"domain":"pbx.test","username":"1001","password":"pw-1001","proxy":"127.0.0.1:{}","xDestUser":"desk.1001"}}"#,
        pbx.port
    );
    let (status, text) = call(&ingress, "PUT", AGENT, Some(&body));
    assert_eq!(status, 201, "{text}");
    let registered = status_when(&ingress, &pbx, Duration::from_secs(15), online);
    assert_eq!(registered["lifecycleStatus"], "Running");
    assert_eq!(registered["message"], serde_json::Value::Null);
    assert!(
        registered["lastRefreshed"].as_u64().is_some(),
        "{registered}"
    );

    // The PBX challenged the first REGISTER and accepted the answer to it.
    let registers = pbx.registers();
    assert!(registers.len() >= 2, "{registers:?}");
    assert!(registers[0].contains("sip:1001@pbx.test from 127.0.0.1:"));
    assert!(
        registers[0].contains("credentials=<null>"),
        "{}",
        registers[0]
    );
    assert!(
        registers[1].contains("credentials=1001 "),
        "{}",
        registers[1]
    );
    assert!(registers[1].contains("algorithm=MD5"), "{}", registers[1]);
    assert!(registers[1].contains("expires=3600"), "{}", registers[1]);
    let token = contact_user(&pbx, &ingress);
    let text = metrics(&ingress);
    for line in [
        "sip_ingress_register_answers_total{code=\"401\"} 1",
        "sip_ingress_register_answers_total{code=\"200\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(
        wait_until(Duration::from_secs(3), || metrics(&ingress).lines().any(
            |l| l == "sip_ingress_registrations{lifecycle=\"Running\",sip_status=\"online\"} 1"
        )),
        "{}",
        metrics(&ingress)
    );

    // A call to the extension at the PBX reaches the agent through the ingress. While it is
    // up (answered, before its BYE) the binding is `calling`, then online again.
    let checks = r#"<ereg regexp="^INVITE sip:1001@127\.0\.0\.1:[0-9]+ SIP/2\.0" search_in="msg" check_it="true" assign_to="seen"/>
      <ereg regexp="X-Dest-User: desk\.1001" search_in="msg" check_it="true" assign_to="seen"/>"#;
    let mut agent = start_agent(&dir, gateway_port, checks);
    let mut caller = call_the_pbx_holding(&dir, &pbx, "1001", Duration::from_secs(5));
    let calling = status_when(&ingress, &pbx, Duration::from_secs(5), |status| {
        status["sipStatus"] == "calling"
    });
    assert_eq!(calling["lifecycleStatus"], "Running");
    let calling_gauge = "sip_ingress_registrations{lifecycle=\"Running\",sip_status=\"calling\"} 1";
    assert!(
        wait_until(Duration::from_secs(3), || metrics(&ingress)
            .lines()
            .any(|l| l == calling_gauge)),
        "{}",
        metrics(&ingress)
    );
    finished_ok(&mut caller, &dir, "caller", &[&ingress.log, &pbx.log]);
    finished_ok(&mut agent, &dir, "agent", &[&ingress.log, &pbx.log]);
    status_when(&ingress, &pbx, Duration::from_secs(2), online);

    // The binding's contact from anyone but its registrar (or the tenant's list) is dropped.
    assert_eq!(invite_from(&ingress, "127.0.0.2", &token), None);

    let (status, text) = call(&ingress, "GET", &format!("{AGENT}/errors"), None);
    assert_eq!((status, text.as_str()), (200, "[]"));

    // Deleting the registration removes the binding at the PBX, whose next call gets its 404.
    let (status, text) = call(&ingress, "DELETE", AGENT, None);
    assert_eq!(status, 204, "{text}");
    assert!(
        wait_until(Duration::from_secs(5), || pbx
            .registers()
            .iter()
            .any(|l| l.contains(&token) && l.contains("expires=0"))),
        "no removal reached the PBX: {:?}",
        pbx.registers()
    );
    let mut refused = call_the_pbx(&dir, &pbx, "caller_refused.xml", "1001");
    finished_ok(&mut refused, &dir, "caller", &[&ingress.log, &pbx.log]);
    assert_eq!(
        call(&ingress, "GET", &format!("{AGENT}/status"), None).0,
        404
    );
}

#[test]
fn sha256_over_tcp_refreshes_short_grants_and_sigterm_unregisters_at_once() {
    let dir = scratch("sha256-tcp");
    let pbx = Pbx::start(&dir, "SHA-256", 0..=4, "2002", "pw-2002");
    let mut ingress = start_ingress(&dir, trunkguard::free_udp_port());
    let body = format!(
        r#"{{"domain":"127.0.0.1","username":"2002","password":"pw-2002","port":{},"transport":"tcp"}}"#,
        pbx.port
    );
    let (status, text) = call(&ingress, "PUT", AGENT, Some(&body));
    assert_eq!(status, 201, "{text}");
    let first = status_when(&ingress, &pbx, Duration::from_secs(15), online);
    let first_refreshed = first["lastRefreshed"].as_u64().expect("a refresh time");

    // A 4 s grant is refreshed at half of it: several times, never lapsing.
    let refreshed = status_when(&ingress, &pbx, Duration::from_secs(15), |status| {
        online(status) && status["lastRefreshed"].as_u64() >= Some(first_refreshed + 4)
    });
    assert_eq!(refreshed["lifecycleStatus"], "Running");
    let registers = pbx.registers();
    assert!(registers.len() >= 4, "{registers:?}");
    assert!(
        registers.iter().all(|l| l.contains(" over tcp ")),
        "{registers:?}"
    );
    assert!(
        registers[1..]
            .iter()
            .all(|l| l.contains("algorithm=SHA-256") && l.contains("qop=auth")),
        "answered with SHA-256: {registers:?}"
    );
    let token = contact_user(&pbx, &ingress);
    assert!(
        registers[1..].iter().all(|l| l.contains(&token)),
        "one binding, one contact: {registers:?}"
    );
    let (status, text) = call(&ingress, "GET", &format!("{AGENT}/errors"), None);
    assert_eq!((status, text.as_str()), (200, "[]"));

    // SIGTERM: the binding is removed at the PBX and the process ends, within 2 s.
    let stopped = Command::new("kill")
        .args(["-TERM", &ingress.process.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(stopped);
    let exit = ingress.process.wait_exit(Duration::from_secs(3));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        log(&ingress.log)
    );
    assert!(
        pbx.registers()
            .iter()
            .any(|l| l.contains(&token) && l.contains("expires=0")),
        "no removal reached the PBX: {:?}\n{}",
        pbx.registers(),
        log(&ingress.log)
    );
}

#[test]
fn a_wrong_password_stays_registering_with_the_401_in_its_errors() {
    let dir = scratch("wrong-password");
    let pbx = Pbx::start(&dir, "MD5", 0..=20, "3003", "the-right-one");
    let ingress = start_ingress(&dir, trunkguard::free_udp_port());
    let body = format!(
        r#"{{"domain":"127.0.0.1","username":"3003","password":"not-the-secret","port":{}}}"#,
        pbx.port
    );
    let (status, text) = call(&ingress, "PUT", AGENT, Some(&body));
    assert_eq!(status, 201, "{text}");
    let status = status_when(&ingress, &pbx, Duration::from_secs(15), |status| {
        status["message"].is_string()
    });
    assert_eq!(status["lifecycleStatus"], "Running");
    assert_eq!(status["sipStatus"], "registering");
    assert_eq!(status["lastRefreshed"], serde_json::Value::Null);
    let message = status["message"].as_str().expect("a message");
    assert!(message.contains("refused the credentials"), "{message}");

    let (code, text) = call(&ingress, "GET", &format!("{AGENT}/errors"), None);
    assert_eq!(code, 200, "{text}");
    let errors: serde_json::Value = serde_json::from_str(&text).expect("json");
    let errors = errors.as_array().expect("a list");
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0]["code"], 401);
    assert_eq!(errors[0]["message"], message);
    let timestamp = errors[0]["timestamp"].as_str().expect("a timestamp");
    assert!(
        timestamp.len() == 20 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "RFC 3339: {timestamp}"
    );

    // The retry waits for the backoff (15 s at least): the PBX saw the REGISTER and the one
    // answering its challenge, nothing more.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pbx.registers().len(), 2, "{:?}", pbx.registers());
    for path in [
        AGENT.to_owned(),
        format!("{AGENT}/status"),
        format!("{AGENT}/errors"),
    ] {
        let (_, text) = call(&ingress, "GET", &path, None);
        assert!(!text.contains("not-the-secret"), "{path}: {text}");
    }
    assert!(!log(&ingress.log).contains("not-the-secret"));
}

#[test]
fn a_sip_connection_registers_takes_its_calls_for_its_agent_and_unregisters_when_deleted() {
    let dir = scratch("connection");
    let pbx = Pbx::start(&dir, "MD5", 0..=20, "4004", "pw-4004");
    let gateway_port = trunkguard::free_udp_port();
    let ingress = start_ingress(&dir, gateway_port);
    let body = format!(
        r#"{{"agentId":"agent_abc123","name":"Main Support Line","settings":{{"server":"127.0.0.1",
            "port":{},"domain":"pbx.test","username":"4004","password":"pw-4004","transport":"UDP"}}}}"#,
        pbx.port
    );
    let (status, text) = call(&ingress, "POST", "/v1/sip-connections", Some(&body));
    assert_eq!(status, 201, "{text}");
    assert!(!text.contains("pw-4004"), "{text}");
    let created: serde_json::Value = serde_json::from_str(&text).expect("json");
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["agentId"], "agent_abc123");
    assert_eq!(created["settings"]["server"], "127.0.0.1");
    assert!(created["settings"].get("password").is_none(), "{text}");
    assert!(created["created"].as_u64().is_some(), "{text}");

    let status_path = format!("/v1/sip-connections/{id}/status");
    let mut last = String::new();
    let online = wait_until(Duration::from_secs(15), || {
        let (code, text) = call(&ingress, "POST", &status_path, None);
        assert_eq!(code, 200, "{text}");
        last = text;
        last.contains(r#""sipStatus":"online""#)
    });
    assert!(online, "{last}\n{}\n{}", log(&ingress.log), log(&pbx.log));
    assert!(last.contains(r#""lifecycleStatus":"Running""#), "{last}");
    let (code, listed) = call(&ingress, "GET", "/v1/sip-connections", None);
    assert_eq!(code, 200);
    assert!(
        listed.contains(&id) && !listed.contains("pw-4004"),
        "{listed}"
    );
    let (code, errors) = call(
        &ingress,
        "GET",
        &format!("/v1/sip-connections/{id}/errors"),
        None,
    );
    assert_eq!((code, errors.as_str()), (200, "[]"));

    // The PBX's call for the connection's extension goes to the gateway for its agent.
    let checks = r#"<ereg regexp="^INVITE sip:agent_abc123@127\.0\.0\.1:[0-9]+ SIP/2\.0" search_in="msg" check_it="true" assign_to="seen"/>"#;
    let mut agent = start_agent(&dir, gateway_port, checks);
    let mut caller = call_the_pbx(&dir, &pbx, "caller.xml", "4004");
    finished_ok(&mut caller, &dir, "caller", &[&ingress.log, &pbx.log]);
    finished_ok(&mut agent, &dir, "agent", &[&ingress.log, &pbx.log]);

    // Another tenant sees nothing of it.
    let acme = [("x-tenant-id", "acme")];
    let response = trunkguard::http::request(ingress.api, "POST", &status_path, &acme, None);
    assert_eq!(response.status, 404);

    let token = contact_user(&pbx, &ingress);
    let (code, text) = call(
        &ingress,
        "DELETE",
        &format!("/v1/sip-connections/{id}"),
        None,
    );
    assert_eq!(code, 204, "{text}");
    assert!(
        wait_until(Duration::from_secs(5), || pbx
            .registers()
            .iter()
            .any(|l| l.contains(&token) && l.contains("expires=0"))),
        "no removal reached the PBX: {:?}",
        pbx.registers()
    );
    assert_eq!(call(&ingress, "POST", &status_path, None).0, 404);
}

#[test]
fn a_changed_registration_is_removed_first_and_a_restart_registers_the_stored_one_again() {
    let dir = scratch("change-restart");
    let pbx = Pbx::start(&dir, "MD5", 0..=20, "5005", "pw-5005");
    let gateway_port = trunkguard::free_udp_port();
    let ports = (
        trunkguard::free_sip_port(),
        trunkguard::free_port(),
        trunkguard::free_port(),
    );
    let ingress = start_ingress_on(&dir, gateway_port, ports, "");
    let body = |dest: &str| {
        format!(
            r#"{{"domain":"127.0.0.1","username":"5005","password":"pw-5005","port":{},"xDestUser":"{dest}"}}"#,
            pbx.port
        )
    };
    assert_eq!(call(&ingress, "PUT", AGENT, Some(&body("desk.a"))).0, 201);
    status_when(&ingress, &pbx, Duration::from_secs(15), online);
    let first = contact_user(&pbx, &ingress);

    // A changed registration is a new binding: the old contact is removed, then the new one
    // registers.
    assert_eq!(call(&ingress, "PUT", AGENT, Some(&body("desk.b"))).0, 200);
    let moved = wait_until(Duration::from_secs(10), || {
        let registers = pbx.registers();
        let removed = registers
            .iter()
            .position(|l| l.contains(&first) && l.contains("expires=0"));
        let successor = registers
            .iter()
            .rposition(|l| !l.contains(&first) && l.contains("expires=3600"));
        matches!((removed, successor), (Some(r), Some(s)) if r < s)
    });
    assert!(moved, "{:?}", pbx.registers());
    status_when(&ingress, &pbx, Duration::from_secs(15), online);
    let second = contact_user(&pbx, &ingress);
    assert_ne!(first, second);

    // Killed without a chance to unregister, then started again on the same store: the stored
    // binding registers again with its own contact.
    drop(ingress);
    let before = pbx.registers().len();
    let ingress = start_ingress_on(&dir, gateway_port, ports, "");
    let again = status_when(&ingress, &pbx, Duration::from_secs(15), online);
    assert_eq!(again["lifecycleStatus"], "Running");
    assert!(pbx.registers().len() > before);
    assert_eq!(contact_user(&pbx, &ingress), second);
}

#[test]
fn a_registrar_that_never_answers_is_an_error_408_after_timer_f() {
    let dir = scratch("silent");
    let silent = UdpSocket::bind("127.0.0.1:0").expect("a silent registrar");
    let silent_port = silent.local_addr().expect("addr").port();
    let ports = (
        trunkguard::free_sip_port(),
        trunkguard::free_port(),
        trunkguard::free_port(),
    );
    // T1 of 20 ms: Timer F (64xT1) ends the attempt after 1.28 s.
    let ingress = start_ingress_on(&dir, trunkguard::free_udp_port(), ports, "t1_ms = 20");
    let body = format!(
        r#"{{"domain":"127.0.0.1","username":"6006","password":"pw","port":{silent_port}}}"#
    );
    assert_eq!(call(&ingress, "PUT", AGENT, Some(&body)).0, 201);
    let mut last = String::new();
    let failed = wait_until(Duration::from_secs(10), || {
        last = call(&ingress, "GET", &format!("{AGENT}/errors"), None).1;
        last.contains("408")
    });
    assert!(failed, "{last}\n{}", log(&ingress.log));
    let errors: serde_json::Value = serde_json::from_str(&last).expect("json");
    assert_eq!(errors[0]["code"], 408);
    assert_eq!(errors[0]["message"], "the registrar did not answer");
    let (_, status) = call(&ingress, "GET", &format!("{AGENT}/status"), None);
    assert!(status.contains(r#""sipStatus":"registering""#), "{status}");

    // It was sent again and again meanwhile (Timer E), and not after the attempt ended.
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut received = 0;
    let mut buffer = [0u8; 4096];
    while silent.recv(&mut buffer).is_ok() {
        received += 1;
    }
    assert!(received >= 4, "retransmitted: {received}");
    assert!(
        silent.recv(&mut buffer).is_err(),
        "nothing more until the backoff"
    );
}

#[test]
fn a_423_is_answered_with_the_registrars_min_expires() {
    let dir = scratch("interval-too-brief");
    // The PBX grants no less than 7200 s; the ingress asks for 3600 by default.
    let pbx = Pbx::start(&dir, "MD5", 7200..=7200, "7007", "pw-7007");
    let ingress = start_ingress(&dir, trunkguard::free_udp_port());
    let body = format!(
        r#"{{"domain":"127.0.0.1","username":"7007","password":"pw-7007","port":{}}}"#,
        pbx.port
    );
    assert_eq!(call(&ingress, "PUT", AGENT, Some(&body)).0, 201);
    status_when(&ingress, &pbx, Duration::from_secs(15), online);
    let registers = pbx.registers();
    assert!(
        registers.iter().any(|l| l.contains("expires=3600")),
        "{registers:?}"
    );
    assert!(
        registers.last().is_some_and(|l| l.contains("expires=7200")),
        "{registers:?}"
    );
    let text = metrics(&ingress);
    assert!(
        text.lines()
            .any(|l| l == "sip_ingress_register_answers_total{code=\"423\"} 1"),
        "{text}"
    );
    let (_, errors) = call(&ingress, "GET", &format!("{AGENT}/errors"), None);
    assert_eq!(errors, "[]", "a 423 answered is not an error");
}
