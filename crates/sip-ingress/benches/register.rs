//! `cargo xtask bench register`: the registration client with 10,000 bindings against a
//! Kamailio 5.6 registrar (the end-to-end tests' `tests/kamailio/pbx.cfg`, without its
//! per-REGISTER log line) granting 60 s.
//!
//! The bindings are seeded into the ingress's store directly (agents `agent-N` of tenant `demo`,
//! extension `N` at `pbx.test`, through Kamailio's address as proxy, one password), then the
//! ingress starts cold with the default `[registration]` settings: every binding registers at
//! the default start rate (200 per second), answering Kamailio's MD5 challenge, and refreshes
//! at half of each 60 s grant. The ingress runs on one core, Kamailio on the other.
//!
//! Measured:
//! * cold start: the time from the ingress's start until its gauge counts every binding online
//!   (the gauge is written every second, so this is late by up to one), and that no binding
//!   failed on the way (every registrar answer a 401 or a 200, no retry);
//! * steady refreshing, after every binding is online: the ingress's CPU seconds per minute
//!   (user + system of all its threads), and its CPU per REGISTER transaction next to
//!   Kamailio's CPU (all its processes) per REGISTER it answered over the same window.
//!
//! Goals (issue 21): all online within 60 s with no failure; steady refreshing at most 5% of
//! one core. With `TRUNKGUARD_BENCH_SECONDS` below 3 (as `cargo xtask test` runs benchmarks)
//! it is a smoke run: 200 bindings, a short steady window, every binding must come online, the
//! goals are reported but not enforced. `TRUNKGUARD_BENCH_BINDINGS` sets the number of bindings.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sip_ingress::store::Store;
use trunkguard::process::{Guarded, tree_cpu_time, wait_until};
use trunkguard::sip_world::{Tenant, answers_options, tenants_toml};

/// The core the ingress runs on, and the one Kamailio runs on.
const INGRESS_CORE: &str = "1";
const REGISTRAR_CORE: &str = "0";

const BINDINGS: u32 = 10_000;
const SMOKE_BINDINGS: u32 = 200;
/// The registrar's grant, in seconds.
const GRANT: u32 = 60;
/// How long steady refreshing is measured (a full run; a smoke run measures its seconds).
const STEADY: Duration = Duration::from_secs(60);
/// Every binding's password at the registrar.
const PASSWORD: &str = "bench-password";
/// The first extension; binding `n` registers `FIRST_EXTENSION + n`.
const FIRST_EXTENSION: u32 = 100_000;

/// Kamailio as the registrar on `port` for `bindings` extensions, pinned to its core.
fn start_registrar(dir: &Path, port: u16, bindings: u32) -> Guarded {
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("kamailio")
        .join("pbx.cfg");
    // One loop, not one line per user: Kamailio caches every `$sht(...)` name the
    // configuration spells out, and 10,000 of them overflow that cache.
    let users = format!(
        "\t$var(user) = {FIRST_EXTENSION};\n\twhile ($var(user) < {end}) {{\n\t\t$sht(users=>$var(user)) = \"{PASSWORD}\";\n\t\t$var(user) = $var(user) + 1;\n\t}}\n",
        end = FIRST_EXTENSION + bindings
    );
    let config = std::fs::read_to_string(template)
        .expect("pbx.cfg")
        .replace("@PORT@", &port.to_string())
        .replace("@ALGORITHM@", "MD5")
        .replace("@MIN_EXPIRES@", "0")
        .replace("@MAX_EXPIRES@", &GRANT.to_string())
        .replace("@USERS@", &users);
    std::fs::write(dir.join("pbx.cfg"), config).expect("pbx.cfg written");
    let log = dir.join("pbx.log");
    let process = Guarded::spawn(
        "kamailio",
        Command::new("taskset")
            .args(["-c", REGISTRAR_CORE])
            .args([
                "kamailio", "-f", "pbx.cfg", "-DD", "-E", "-m", "256", "-M", "16",
            ])
            // Without the line it logs for every REGISTER, as a production registrar runs.
            .args(["-A", "QUIET"])
            .arg("-Y")
            .arg(dir)
            .arg("-P")
            .arg(dir.join("pbx.pid"))
            .current_dir(dir),
        &log,
    );
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_until(Duration::from_secs(30), || answers_options(target)),
        "the registrar did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    process
}

/// Stores `bindings` registrations to the registrar at `registrar_port`.
fn seed(database: &Path, registrar_port: u16, bindings: u32) {
    let store = Store::open(database).expect("the store opens");
    for n in 0..bindings {
        let body = format!(
            r#"{{"domain":"pbx.test","username":"{}","password":"{PASSWORD}","proxy":"127.0.0.1:{registrar_port}"}}"#,
            FIRST_EXTENSION + n
        );
        let registration = policy::parse_body(body.as_bytes()).expect("a valid registration");
        store
            .put_registration("demo", &format!("agent-{n}"), &registration)
            .expect("stored");
    }
}

/// The ingress on `sip_port`, serving metrics on `metrics_port`, pinned to its core.
fn start_ingress(dir: &Path, sip_port: u16, api_port: u16, metrics_port: u16) -> Guarded {
    let module = trunkguard::wasm_artifact("ingress_policy.wasm");
    let gateway_port = trunkguard::free_udp_port();
    let config = format!(
        r#"
[sip]
udp = ["127.0.0.1:{sip_port}"]

[policy]
module = "{module}"
cache_dir = "{cache}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[api]
listen = "127.0.0.1:{api_port}"
database = "trunkguard.db"
agent_gateway = "sip:{{username}}@127.0.0.1:{gateway_port}"

{tenants}
"#,
        module = module.display(),
        cache = dir.join("policy-cache").display(),
        tenants = tenants_toml(&[Tenant::new("demo", &["127.0.0.3/32"])]),
    );
    let path = dir.join("ingress.toml");
    std::fs::write(&path, config).expect("ingress configuration written");
    Guarded::spawn(
        "sip-ingress",
        Command::new("taskset")
            .args(["-c", INGRESS_CORE])
            .arg(env!("CARGO_BIN_EXE_sip-ingress"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn"),
        &dir.join("ingress.log"),
    )
}

/// Whether the ingress accepts connections for its metrics at `at`.
fn serving(at: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&at, Duration::from_millis(200)).is_ok()
}

/// The ingress's metrics.
fn metrics(at: SocketAddr) -> String {
    let response = trunkguard::http::request(at, "GET", "/metrics", &[], None);
    String::from_utf8(response.body).unwrap_or_default()
}

/// The value of the sample `name` (with its labels) in `text`, 0 when absent.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

const ONLINE: &str = r#"sip_ingress_registrations{lifecycle="Running",sip_status="online"}"#;
const REQUESTS: &str = "sip_ingress_register_requests_total";
const RETRIES: &str = "sip_ingress_register_retries_total";

/// The registrars' answers by code other than 401 and 200: each a binding that failed.
fn failures(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.starts_with("sip_ingress_register_answers_total{"))
        .filter(|line| !line.contains("code=\"401\"") && !line.contains("code=\"200\""))
        .map(str::to_owned)
        .collect()
}

/// Every answer the registrar gave, by the counters of the ingress.
fn answers(text: &str) -> u64 {
    ["401", "200"]
        .iter()
        .map(|code| {
            sample(
                text,
                &format!("sip_ingress_register_answers_total{{code=\"{code}\"}}"),
            )
        })
        .sum()
}

fn cpu(pid: u32) -> Duration {
    let (user, system) = tree_cpu_time(pid);
    user + system
}

fn main() {
    let (seconds, smoke) = trunkguard::bench_seconds();
    let bindings = std::env::var("TRUNKGUARD_BENCH_BINDINGS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if smoke { SMOKE_BINDINGS } else { BINDINGS });
    let steady = if smoke {
        Duration::from_secs(seconds.max(1))
    } else {
        STEADY
    };
    let dir = trunkguard::sip_world::scratch("register-bench", "run");
    let (registrar_port, sip_port) = (trunkguard::free_sip_port(), trunkguard::free_sip_port());
    let (api_port, metrics_port) = (trunkguard::free_port(), trunkguard::free_port());
    println!(
        "register benchmark: {bindings} bindings, {GRANT} s grants, MD5 digest over UDP; ingress on core {INGRESS_CORE}, Kamailio 5.6 on core {REGISTRAR_CORE}\n"
    );
    let registrar = start_registrar(&dir, registrar_port, bindings);
    seed(&dir.join("trunkguard.db"), registrar_port, bindings);

    let started = Instant::now();
    let ingress = start_ingress(&dir, sip_port, api_port, metrics_port);
    let metrics_at = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    assert!(
        wait_until(Duration::from_secs(30), || serving(metrics_at)),
        "the ingress did not start: {}",
        std::fs::read_to_string(dir.join("ingress.log")).unwrap_or_default()
    );
    let cold_limit = Duration::from_secs(u64::from(bindings / 200) + 60);
    let all_online = wait_until(cold_limit, || {
        sample(&metrics(metrics_at), ONLINE) >= u64::from(bindings)
    });
    let cold = started.elapsed();
    let text = metrics(metrics_at);
    let online = sample(&text, ONLINE);
    let failed = failures(&text);
    let retries = sample(&text, RETRIES);
    println!(
        "cold start: {online} of {bindings} online after {:.1} s; failed answers {failed:?}, retries {retries}",
        cold.as_secs_f64()
    );

    let (ingress_before, registrar_before) = (cpu(ingress.pid()), cpu(registrar.pid()));
    let (requests_before, answers_before) = (sample(&text, REQUESTS), answers(&text));
    std::thread::sleep(steady);
    let (ingress_cpu, registrar_cpu) = (
        cpu(ingress.pid()).saturating_sub(ingress_before),
        cpu(registrar.pid()).saturating_sub(registrar_before),
    );
    let text = metrics(metrics_at);
    let requests = sample(&text, REQUESTS) - requests_before;
    let answered = answers(&text) - answers_before;
    let per_minute = ingress_cpu.as_secs_f64() * 60.0 / steady.as_secs_f64();
    let share = per_minute / 60.0 * 100.0;
    let per_transaction = |cpu: Duration| match answered {
        0 => "no REGISTER answered in the window: n/a".to_owned(),
        n => format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / n as f64),
    };
    println!(
        "steady refreshing over {} s: {requests} REGISTERs sent, {answered} answered",
        steady.as_secs()
    );
    println!(
        "  sip-ingress: {per_minute:.2} CPU s per minute ({share:.2}% of one core), CPU per REGISTER transaction {}",
        per_transaction(ingress_cpu)
    );
    println!(
        "  kamailio 5.6 answering them: CPU per REGISTER {}",
        per_transaction(registrar_cpu)
    );
    let still_online = sample(&text, ONLINE);
    let failed_after = failures(&text);
    let cold_met =
        all_online && cold <= Duration::from_secs(60) && failed.is_empty() && retries == 0;
    let steady_met = share <= 5.0 && still_online == u64::from(bindings) && failed_after.is_empty();
    println!();
    println!(
        "goal: all {bindings} online within 60 s with no binding failing: {}",
        if cold_met { "met" } else { "NOT met" }
    );
    println!(
        "goal: steady refreshing at most 5% of one core: {} ({still_online} online at the end)",
        if steady_met { "met" } else { "NOT met" }
    );
    stop(ingress);
    stop(registrar);
    if smoke {
        assert!(
            all_online && failed.is_empty() && failed_after.is_empty(),
            "smoke run: every binding must come online; logs in {}",
            dir.display()
        );
    }
    if cold_met && steady_met {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("the logs are kept in {}", dir.display());
    }
}

/// Stops a process with SIGTERM, as its operator would: the ingress unregisters its bindings,
/// Kamailio's main process stops the workers it forked.
fn stop(mut process: Guarded) {
    let stopped = Command::new("kill")
        .args(["-TERM", &process.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if stopped {
        let _ = process.wait_exit(Duration::from_secs(10));
    }
}
