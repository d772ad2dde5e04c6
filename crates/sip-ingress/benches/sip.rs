//! `cargo xtask bench sip`: the SIP ingress against Kamailio 5.6 running the same admission
//! rules (`benches/kamailio/kamailio.cfg`), both in front of the same world and driven by the
//! same SIPp scenarios as the end-to-end tests.
//!
//! For each proxy and each call rate of a rising ladder: a fresh proxy pinned to one core, a
//! SIPp agent and a SIPp caller on the other, `rate x seconds` whole calls (INVITE, 100, 180,
//! 200, ACK and BYE along the Record-Route, 200) from an allowed PBX to agent `sales`, whose
//! INVITE must carry `X-Dest-User: sales.desk` or the agent fails the call. Measured: calls that
//! succeeded, and the proxy's CPU time (user + system of every process and thread it has) over
//! the run, per 1000 admitted calls. A proxy's ladder stops at its first rate with a failed
//! call. Both log warnings only (the ingress with `RUST_LOG=warn`, Kamailio with `debug=0`).
//!
//! Goal: less CPU per call than Kamailio, compared at the rates both served without a failure.
//!
//! `TRUNKGUARD_BENCH_RATES=200,400` picks the rates. With `TRUNKGUARD_BENCH_SECONDS` below 3 (as `cargo xtask test` runs benchmarks) it is a smoke
//! run: one low rate, every call must succeed through both proxies, the goal is reported but not
//! enforced.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use trunkguard::process::{Guarded, tree_cpu_time, wait_until};
use trunkguard::sip_world::{answers_options, demo_tenants, tenants_toml};

/// The core the proxy runs on, and the one SIPp runs on.
const PROXY_CORE: &str = "1";
const LOAD_CORE: &str = "0";

/// Calls per second, rising.
const RATES: [u32; 6] = [100, 200, 400, 800, 1200, 1600];
const SMOKE_RATE: u32 = 50;

/// The PBX's From user (E.164, as the rules demand).
const CALLER: &str = "+15551230000";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proxy {
    Ingress,
    Kamailio,
}

impl Proxy {
    const ALL: [Proxy; 2] = [Proxy::Ingress, Proxy::Kamailio];

    fn name(self) -> &'static str {
        match self {
            Proxy::Ingress => "sip-ingress",
            Proxy::Kamailio => "kamailio 5.6",
        }
    }

    /// Starts the proxy on `port`, pinned, forwarding to agents on `agent_port`, and waits until
    /// it answers OPTIONS.
    fn start(self, dir: &Path, port: u16, agent_port: u16) -> Guarded {
        let mut command = Command::new("taskset");
        command.args(["-c", PROXY_CORE]);
        match self {
            Proxy::Ingress => {
                let config = dir.join("ingress.toml");
                std::fs::write(&config, ingress_config(dir, port, agent_port))
                    .expect("ingress configuration written");
                command
                    .arg(env!("CARGO_BIN_EXE_sip-ingress"))
                    .arg("--config")
                    .arg(&config)
                    .env("RUST_LOG", "warn");
            }
            Proxy::Kamailio => {
                let template = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("benches")
                    .join("kamailio")
                    .join("kamailio.cfg");
                std::fs::copy(&template, dir.join("kamailio.cfg")).expect("kamailio.cfg copied");
                std::fs::write(dir.join("world.cfg"), kamailio_world(agent_port))
                    .expect("world.cfg written");
                // Shared memory for every transaction of the highest rate (64 MB, the default,
                // runs out at 800 calls/s).
                command
                    .args(["kamailio", "-f", "kamailio.cfg", "-DD", "-E"])
                    .args(["-m", "512", "-M", "16"])
                    .arg("-l")
                    .arg(format!("udp:127.0.0.1:{port}"))
                    .arg("-Y")
                    .arg(dir)
                    .arg("-P")
                    .arg(dir.join("kamailio.pid"))
                    .current_dir(dir);
            }
        }
        let log = dir.join(format!("{}.log", self.log_name()));
        let process = Guarded::spawn(self.name(), &mut command, &log);
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_until(Duration::from_secs(20), || answers_options(target)),
            "{} did not start: {}",
            self.name(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        process
    }

    fn log_name(self) -> &'static str {
        match self {
            Proxy::Ingress => "ingress",
            Proxy::Kamailio => "kamailio",
        }
    }
}

/// Stops a proxy with SIGTERM, as its operator would: Kamailio's main process then stops the
/// workers it forked (a SIGKILL would leave them running).
fn stop(mut process: Guarded) {
    let stopped = Command::new("kill")
        .args(["-TERM", &process.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if stopped {
        let _ = process.wait_exit(Duration::from_secs(10));
    }
}

/// The world both proxies serve: the demo's tenants, agents at `agent_port`.
fn ingress_config(dir: &Path, port: u16, agent_port: u16) -> String {
    let module = trunkguard::wasm_artifact("ingress_policy.wasm");
    format!(
        r#"
[sip]
udp = ["127.0.0.1:{port}"]

[flood]
rate = 100000
burst = 100000

[policy]
module = "{module}"
cache_dir = "{cache}"

{tenants}
"#,
        module = module.display(),
        cache = dir.join("policy-cache").display(),
        tenants = tenants_toml(&demo_tenants(agent_port, agent_port + 1)),
    )
}

/// The same world as Kamailio htable entries (see kamailio.cfg for the tables).
fn kamailio_world(agent_port: u16) -> String {
    let proxy_port = agent_port + 1;
    format!(
        r#"event_route[htable:mod-init] {{
	$sht(access=>*) = "127.0.0.1/32,::1/128,127.0.0.4/32";
	$sht(access=>demo) = "127.0.0.1/32,::1/128";
	$sht(access=>acme) = "127.0.0.4/32";
	$sht(agents=>sales) = "sales";
	$sht(agents=>+15550100001) = "sales";
	$sht(agent=>sales::tenant) = "demo";
	$sht(agent=>sales::uri) = "sip:sales@127.0.0.1:{agent_port}";
	$sht(agent=>sales::dest) = "sales.desk";
	$sht(agents=>support) = "support";
	$sht(agents=>+15550100002) = "support";
	$sht(agent=>support::tenant) = "demo";
	$sht(agent=>support::uri) = "sip:support@127.0.0.1:{agent_port}";
	$sht(agent=>support::hop) = "127.0.0.1:{proxy_port}";
	$sht(agent=>support::route) = "<sip:127.0.0.1:{proxy_port};lr>";
	$sht(agents=>+15550100003) = "acme-bot";
	$sht(agent=>acme-bot::tenant) = "acme";
	$sht(agent=>acme-bot::uri) = "sip:acme-bot@127.0.0.1:{agent_port}";
}}
"#
    )
}

/// A scenario of the end-to-end tests, with the agent's check of what it receives.
fn scenario(dir: &Path, name: &str) -> PathBuf {
    let checks = r#"<ereg regexp="X-Dest-User: sales\.desk" search_in="msg" check_it="true" assign_to="seen"/>"#;
    trunkguard::sip_world::sipp_scenario(dir, name, checks)
}

/// SIPp pinned to the load core, `calls` calls, within `limit`.
fn sipp(dir: &Path, label: &str, calls: u32, limit: Duration, args: &[&str]) -> Guarded {
    Guarded::spawn(
        "sipp",
        Command::new("taskset")
            .args(["-c", LOAD_CORE, "sipp", "-m"])
            .arg(calls.to_string())
            .arg("-timeout")
            .arg(format!("{}s", limit.as_secs()))
            .args(["-nostdin", "-trace_err", "-error_file"])
            .arg(dir.join(format!("{label}-errors.log")))
            .args(args)
            .current_dir(dir),
        &dir.join(format!("{label}.log")),
    )
}

/// The cumulative count of successful calls in SIPp's statistics file (`-trace_stat`, written
/// every second, so it is there even when SIPp had to be killed).
fn successful_calls(stats: &str) -> u64 {
    let mut lines = stats.lines();
    let column = lines.next().and_then(|header| {
        header
            .split(';')
            .position(|name| name == "SuccessfulCall(C)")
    });
    let last = lines.rfind(|line| !line.trim().is_empty());
    column
        .zip(last)
        .and_then(|(column, line)| line.split(';').nth(column)?.trim().parse().ok())
        .unwrap_or(0)
}

/// One rung of the ladder.
#[derive(Clone, Copy)]
struct Step {
    rate: u32,
    calls: u32,
    successful: u64,
    cpu: Duration,
}

impl Step {
    fn failed(&self) -> u64 {
        u64::from(self.calls).saturating_sub(self.successful)
    }

    fn cpu_seconds_per_1000(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.successful.max(1) as f64
    }
}

fn run_step(proxy: Proxy, rate: u32, seconds: u64, dir: &Path) -> Step {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("step directory");
    let (port, agent_port) = (trunkguard::free_udp_port(), trunkguard::free_udp_port());
    let calls = rate * u32::try_from(seconds).unwrap_or(u32::MAX);
    let limit = Duration::from_secs(seconds + 40);
    let proxy_process = proxy.start(dir, port, agent_port);
    let agent_scenario = scenario(dir, "agent.xml");
    let caller_scenario = scenario(dir, "caller.xml");
    let agent_port_text = agent_port.to_string();
    let mut agent = sipp(
        dir,
        "agent",
        calls,
        limit,
        &[
            "-sf",
            agent_scenario.to_str().expect("utf8"),
            "-i",
            "127.0.0.1",
            "-p",
            &agent_port_text,
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (user, system) = tree_cpu_time(proxy_process.pid());
    let target = format!("127.0.0.1:{port}");
    let rate_text = rate.to_string();
    let stats = dir.join("caller-stats.csv");
    let mut caller = sipp(
        dir,
        "caller",
        calls,
        limit,
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
            &rate_text,
            // Kamailio relays responses from several worker processes, so a 180 may arrive
            // after the 200 (UDP does not keep order either): an unexpected message must not
            // abort the call.
            "-default_behaviors",
            "all,-abortunexp",
            "-trace_stat",
            "-stf",
            stats.to_str().expect("utf8"),
            "-fd",
            "1",
            &target,
        ],
    );
    let _ = caller.wait_exit(limit + Duration::from_secs(10));
    let (user_after, system_after) = tree_cpu_time(proxy_process.pid());
    let _ = agent.wait_exit(Duration::from_secs(5));
    stop(proxy_process);
    let caller_stats = std::fs::read_to_string(&stats).unwrap_or_default();
    Step {
        rate,
        calls,
        successful: successful_calls(&caller_stats),
        cpu: (user_after + system_after).saturating_sub(user + system),
    }
}

/// The mean CPU seconds per 1000 calls over `steps` at `rates`.
fn mean_cpu(steps: &[Step], rates: &[u32]) -> f64 {
    let chosen: Vec<f64> = steps
        .iter()
        .filter(|s| rates.contains(&s.rate))
        .map(Step::cpu_seconds_per_1000)
        .collect();
    chosen.iter().sum::<f64>() / chosen.len().max(1) as f64
}

fn main() {
    let (seconds, smoke) = trunkguard::bench_seconds();
    let chosen: Option<Vec<u32>> = std::env::var("TRUNKGUARD_BENCH_RATES").ok().map(|list| {
        list.split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect()
    });
    let rates: Vec<u32> = match chosen {
        Some(rates) => rates,
        None if smoke => vec![SMOKE_RATE],
        None => RATES.to_vec(),
    };
    let root = std::env::temp_dir().join(format!("trunkguard-sip-bench-{}", std::process::id()));
    println!(
        "sip benchmark: proxy on core {PROXY_CORE}, SIPp caller and agent on core {LOAD_CORE}, {seconds} s per rate, whole calls to an agent with X-Dest-User\n"
    );
    println!(
        "{:<14} {:>8} {:>8} {:>10} {:>8} {:>18}",
        "proxy", "rate/s", "calls", "succeeded", "failed", "CPU s / 1000 calls"
    );
    let mut ladders: Vec<(Proxy, Vec<Step>)> = Vec::new();
    for proxy in Proxy::ALL {
        let mut steps = Vec::new();
        for &rate in &rates {
            let step = run_step(proxy, rate, seconds, &root.join(proxy.log_name()));
            println!(
                "{:<14} {:>8} {:>8} {:>10} {:>8} {:>18.3}",
                proxy.name(),
                step.rate,
                step.calls,
                step.successful,
                step.failed(),
                step.cpu_seconds_per_1000()
            );
            steps.push(step);
            if step.failed() > 0 {
                break;
            }
        }
        ladders.push((proxy, steps));
    }
    println!();
    let clean = |steps: &[Step]| -> Vec<u32> {
        steps
            .iter()
            .filter(|s| s.failed() == 0)
            .map(|s| s.rate)
            .collect()
    };
    let (ingress, kamailio) = (&ladders[0].1, &ladders[1].1);
    for (proxy, steps) in &ladders {
        let highest = clean(steps).last().copied();
        println!(
            "{:<14} highest rate with zero failed calls: {}",
            proxy.name(),
            highest.map_or_else(|| "none".to_owned(), |r| format!("{r}/s"))
        );
    }
    let common: Vec<u32> = clean(ingress)
        .into_iter()
        .filter(|rate| clean(kamailio).contains(rate))
        .collect();
    let (ours, theirs) = (mean_cpu(ingress, &common), mean_cpu(kamailio, &common));
    let met = !common.is_empty() && ours < theirs;
    println!(
        "CPU s per 1000 calls at {common:?}/s: sip-ingress {ours:.3}, kamailio {theirs:.3}, ratio {:.2}x",
        ours / theirs.max(f64::MIN_POSITIVE)
    );
    println!(
        "goal: less CPU per call than Kamailio: {}",
        if met { "met" } else { "NOT met" }
    );
    let failed = ladders
        .iter()
        .any(|(_, steps)| steps.iter().any(|s| s.failed() > 0));
    if failed {
        println!(
            "the logs of each proxy's last rate (SIPp's, the proxy's) are kept in {}",
            root.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    if smoke {
        assert!(
            ladders
                .iter()
                .all(|(_, steps)| steps.iter().all(|s| s.failed() == 0)),
            "smoke run: every call must succeed through both proxies"
        );
    } else if !met {
        println!("sip benchmark: goal not met");
    }
}
