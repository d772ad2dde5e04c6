//! The admission policy in wasmtime, through the ingress's own host: the default policy decides
//! as the native rules do (the native implementation is the oracle), deliberately faulty
//! policies fail closed and are replaced while other calls keep being served, broken modules and
//! configurations are refused, compiled modules are cached, and `sip-ingress policy test` runs
//! case files.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use policy::admission::DeniedSource;
use sip_ingress::admission::config::AdmissionConfig;
use sip_ingress::admission::live::{Generation, LivePolicy, POLICY_FAILURE};
use sip_ingress::admission::oracle::NativeRules;
use sip_ingress::admission::registrars::Registrars;
use sip_ingress::admission::wasm::{PolicyEngine, PolicyError};
use sip_ingress::admission::{Admit, Facts, Text, Verdict};
use sip_ingress::config::{Config, DEMO};
use sip_ingress::metrics::Metrics;
use sip_ingress::reload;
use sip_ingress::sip::Transport;
use tokio::sync::watch;

fn scratch(name: &str) -> PathBuf {
    trunkguard::sip_world::scratch("policy", name)
}

/// The deadline of tests that are not about deadlines: it is wall-clock time, and a debug build
/// on a loaded 2-core machine can be descheduled for longer than the default 5 ms.
const ROOMY_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);

fn config(extra: &str, module: &str) -> AdmissionConfig {
    let mut config = Config::parse(&format!("{DEMO}\n{extra}"))
        .expect("valid configuration")
        .admission;
    if !extra.contains("deadline_ms") {
        config.policy.limits.deadline = ROOMY_DEADLINE;
    }
    config.policy.module = trunkguard::wasm_artifact(module);
    config.policy.cache_dir = None;
    config
}

fn live(config: &AdmissionConfig) -> (LivePolicy, Arc<Metrics>) {
    live_trusting(config, Registrars::default())
}

fn live_trusting(config: &AdmissionConfig, registrars: Registrars) -> (LivePolicy, Arc<Metrics>) {
    let engine = PolicyEngine::new(None).expect("engine");
    let generation = reload::build(&engine, config).expect("the policy loads");
    let metrics = Arc::new(Metrics::default());
    let (publish, updates) = watch::channel(Arc::new(generation));
    // The channel stays open for the test's life.
    std::mem::forget(publish);
    (
        LivePolicy::new(updates, registrars, Arc::clone(&metrics)),
        metrics,
    )
}

fn facts(source: &str, from: &str, called: &str) -> Facts {
    let request_uri = format!("sip:{called}@127.0.0.1:5060");
    let text = Text {
        request_uri: &request_uri,
        request_user: called,
        from_user: from,
        from_display_name: Some("PBX"),
        to_user: called,
        to_display_name: None,
    };
    Facts::new(
        SocketAddr::new(source.parse().expect("ip"), 5070),
        Transport::Udp,
        text,
        [],
    )
}

/// A verdict in a line, for the few checks that need only its gist.
fn wasm(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Forward(forward) => {
            let dest_user = forward
                .headers
                .iter()
                .find(|(n, _)| n == "X-Dest-User")
                .map(|(_, v)| v.clone());
            format!(
                "forward {} {} {dest_user:?} {}",
                forward.tenant,
                forward.agent_uri,
                forward.headers.iter().any(|(n, _)| n == "Route")
            )
        }
        Verdict::Reject { code, reason } => format!("reject {code} {reason}"),
        Verdict::Drop { reason } => format!("drop {reason}"),
    }
}

#[test]
fn the_wasm_policy_decides_as_the_native_rules() {
    let sources = [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.4",
        "::1",
        "::2",
        "10.0.0.1",
    ];
    let froms = [
        "+15551230000",
        "+442071838750",
        "alice",
        "+0123",
        "+1",
        "",
        "15551230000",
    ];
    let called = [
        "sales",
        "support",
        "+15550100001",
        "+15550100002",
        "+15550100003",
        "acme-bot",
        "nobody",
        "",
    ];
    for denied in [DeniedSource::Drop, DeniedSource::Forbid] {
        let mut config = config("", "ingress_policy.wasm");
        config.denied = denied;
        let mut oracle = NativeRules::new(&config).expect("rules");
        let (mut policy, _) = live(&config);
        let mut compared = 0;
        for source in sources {
            for from in froms {
                for user in called {
                    let facts = facts(source, from, user);
                    assert_eq!(
                        policy.decide(facts.clone()),
                        oracle.decide(facts),
                        "{source} {from:?} -> {user:?} ({denied:?})"
                    );
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, sources.len() * froms.len() * called.len());
        for source in sources {
            let ip: IpAddr = source.parse().expect("ip");
            assert_eq!(policy.knows_source(ip), oracle.knows_source(ip), "{ip}");
        }
    }
}

#[test]
fn a_larger_generated_world_decides_as_the_native_rules() {
    // 40 tenants, each with 3 networks and 25 agents; callers from inside and outside them.
    let mut text = String::from("[sip]\nudp = [\"127.0.0.1:5060\"]\n");
    for t in 0..40u32 {
        text.push_str(&format!(
            "[[tenants]]\nid = \"t{t}\"\naccess = [\"10.{t}.0.0/16\", \"192.0.2.{t}/32\", \"2001:db8:{t:x}::/48\"]\n"
        ));
        for a in 0..25u32 {
            text.push_str(&format!(
                "[[tenants.agents]]\nid = \"a{t}-{a}\"\nusername = \"agent{t}x{a}\"\nnumber = \"+1555{t:03}{a:04}\"\nuri = \"sip:agent{t}x{a}@127.0.0.1:5090\"\n"
            ));
            if a % 3 == 0 {
                text.push_str(&format!("dest_user = \"desk.{a}\"\n"));
            }
            if a % 5 == 0 {
                text.push_str("route = \"127.0.0.1:5090;proxyAddress=127.0.0.1:5091\"\n");
            }
        }
    }
    let mut config = Config::parse(&text)
        .expect("generated configuration")
        .admission;
    config.policy.limits.deadline = ROOMY_DEADLINE;
    config.policy.module = trunkguard::wasm_artifact("ingress_policy.wasm");
    config.policy.cache_dir = None;
    let mut oracle = NativeRules::new(&config).expect("rules");
    let (mut policy, _) = live(&config);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |bound: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % u64::from(bound)) as u32
    };
    for _ in 0..2000 {
        let (t, a, u) = (next(42), next(27), next(3));
        let source = match next(4) {
            0 => format!("10.{t}.{}.{}", next(256), next(256)),
            1 => format!("192.0.2.{t}"),
            2 => format!("2001:db8:{t:x}::{:x}", next(65536)),
            _ => format!("203.0.113.{}", next(256)),
        };
        let user = match u {
            0 => format!("agent{t}x{a}"),
            1 => format!("+1555{t:03}{a:04}"),
            _ => format!("unknown{a}"),
        };
        let from = if next(10) == 0 {
            "anonymous"
        } else {
            "+15551230000"
        };
        let facts = facts(&source, from, &user);
        assert_eq!(
            policy.decide(facts.clone()),
            oracle.decide(facts),
            "{source} {from} -> {user}"
        );
    }
}

#[test]
fn a_call_through_a_binding_is_admitted_from_the_registrar_it_registered_to() {
    const CONTACT: &str = "5f0c3a9d1b2e4f60718293a4b5c6d7e8";
    let mut config = config("", "ingress_policy.wasm");
    config.tenants[0].agents[0]
        .contacts
        .push(CONTACT.to_owned());
    let registrars = Registrars::default();
    let (mut policy, _) = live_trusting(&config, registrars.clone());
    let pbx = "192.0.2.7";
    let pbx_ip = pbx.parse().expect("ip");
    assert!(!policy.knows_source(pbx_ip));
    let unknown_yet = policy.decide(facts(pbx, "+15551230000", CONTACT));
    assert!(
        matches!(unknown_yet, Verdict::Drop { .. }),
        "{}",
        wasm(&unknown_yet)
    );

    registrars.add(CONTACT, pbx_ip);
    assert!(policy.knows_source(pbx_ip));
    assert_eq!(
        wasm(&policy.decide(facts(pbx, "+15551230000", CONTACT))),
        "forward demo sip:sales@127.0.0.1:5090 Some(\"sales.desk\") false"
    );
    // The registrar is trusted for its own binding's contact, not for the agent's names.
    let by_name = policy.decide(facts(pbx, "+15551230000", "sales"));
    assert!(
        matches!(by_name, Verdict::Drop { .. }),
        "{}",
        wasm(&by_name)
    );
    // Another address is not the registrar; the tenant's access list still admits its own.
    let stranger = policy.decide(facts("192.0.2.8", "+15551230000", CONTACT));
    assert!(
        matches!(stranger, Verdict::Drop { .. }),
        "{}",
        wasm(&stranger)
    );
    assert!(matches!(
        policy.decide(facts("127.0.0.1", "+15551230000", CONTACT)),
        Verdict::Forward(_)
    ));
    // Calls through a binding still need an E.164 caller.
    let bad_from = policy.decide(facts(pbx, "alice", CONTACT));
    assert!(
        matches!(bad_from, Verdict::Reject { code: 404, .. }),
        "{}",
        wasm(&bad_from)
    );

    registrars.remove(CONTACT);
    let removed = policy.decide(facts(pbx, "+15551230000", CONTACT));
    assert!(
        matches!(removed, Verdict::Drop { .. }),
        "{}",
        wasm(&removed)
    );
}

#[test]
fn a_misbehaving_policy_fails_closed_and_is_replaced() {
    // A deadline long enough for the memory hog to reach its limit first.
    for (failure_status, extra) in [
        (503, "[policy]\nmemory_limit_mib = 16\ndeadline_ms = 200\n"),
        (
            500,
            "[policy]\nmemory_limit_mib = 16\ndeadline_ms = 200\nfailure_status = 500\n",
        ),
    ] {
        let config = config(extra, "misbehaving_policy.wasm");
        let (mut policy, metrics) = live(&config);
        let served = facts("127.0.0.1", "+15551230000", "sales");
        for fault in ["trap", "spin", "hog", "stray", "unprepared", "trap"] {
            assert_eq!(
                policy.decide(facts("127.0.0.1", "+15551230000", fault)),
                Verdict::Reject {
                    code: failure_status,
                    reason: POLICY_FAILURE.into()
                },
                "{fault}"
            );
            // The next call gets a fresh instance and is served.
            assert_eq!(
                wasm(&policy.decide(served.clone())),
                "forward demo sip:sales@127.0.0.1:5090 Some(\"sales.desk\") false",
                "after {fault}"
            );
        }
        let text = metrics.render();
        for line in [
            "sip_ingress_policy_failures_total{kind=\"trap\"} 3",
            "sip_ingress_policy_failures_total{kind=\"deadline\"} 1",
            "sip_ingress_policy_failures_total{kind=\"invalid_verdict\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}

#[test]
fn broken_modules_and_configurations_are_refused() {
    let engine = PolicyEngine::new(None).expect("engine");
    let compile_error = |bytes: &[u8]| match engine.compile(bytes) {
        Err(PolicyError::Compile(e)) => e,
        Err(other) => panic!("not a compile error: {other}"),
        Ok(_) => panic!("compiled"),
    };
    compile_error(b"not wasm at all");
    // A core module is not a component, and a proxy-wasm filter is not an ingress policy.
    compile_error(b"\0asm\x01\0\0\0");
    let filter = std::fs::read(trunkguard::wasm_artifact("noop_filter.wasm")).expect("filter");
    compile_error(&filter);

    let refusing = config(
        "[policy.settings]\nfail_load = \"yes\"\n",
        "misbehaving_policy.wasm",
    );
    let error = reload::build(&engine, &refusing).err().expect("refused");
    assert!(
        error.contains("refused the configuration: fail_load is set"),
        "{error}"
    );
    // What a policy prepares at load is checked then, and a bad forward refuses the load.
    let forging = config(
        "[policy.settings]\nforge_load = \"yes\"\n",
        "misbehaving_policy.wasm",
    );
    let error = reload::build(&engine, &forging).err().expect("refused");
    assert!(
        error.contains("prepared forward 3: header Via may not be set by a policy"),
        "{error}"
    );

    // The example country policy refuses to load without its setting.
    let error = reload::build(&engine, &config("", "country_policy.wasm"))
        .err()
        .expect("refused");
    assert!(error.contains("allowed_prefixes is required"), "{error}");
}

#[test]
fn compiled_policies_are_cached_on_disk() {
    let dir = scratch("cache");
    let module = std::fs::read(trunkguard::wasm_artifact("ingress_policy.wasm")).expect("module");
    let first = PolicyEngine::new(Some(dir.clone()))
        .expect("engine")
        .compile(&module)
        .expect("compiles");
    let cached: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let name = cached[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with(first.sha256()), "{name}");
    assert!(name.ends_with(".cwasm"), "{name}");

    // A second engine (a restart) loads the artifact, and the policy works from it.
    let mut config = config("", "ingress_policy.wasm");
    config.policy.cache_dir = Some(dir.clone());
    let engine = PolicyEngine::new(Some(dir.clone())).expect("engine");
    let generation = reload::build(&engine, &config).expect("from the cache");
    assert_eq!(generation.sha256(), first.sha256());
    let (_publish, updates) = watch::channel(Arc::new(generation));
    let mut policy = LivePolicy::new(updates, Registrars::default(), Arc::new(Metrics::default()));
    assert!(matches!(
        policy.decide(facts("127.0.0.1", "+15551230000", "sales")),
        Verdict::Forward(_)
    ));

    // A damaged cache file is ignored and replaced, not trusted.
    std::fs::write(&cached[0], b"damaged").expect("damaged");
    let recompiled = PolicyEngine::new(Some(dir.clone()))
        .expect("engine")
        .compile(&module)
        .expect("recompiles");
    assert_eq!(recompiled.sha256(), first.sha256());
    assert_ne!(std::fs::read(&cached[0]).expect("cache"), b"damaged");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_generation_is_checked_before_it_is_published() {
    let engine = PolicyEngine::new(None).expect("engine");
    let good = reload::build(&engine, &config("", "ingress_policy.wasm")).expect("loads");
    let sha = good.sha256().to_owned();
    let (publish, updates) = watch::channel(Arc::new(good));
    let mut policy = LivePolicy::new(updates, Registrars::default(), Arc::new(Metrics::default()));
    let call = facts("127.0.0.1", "+15551230000", "sales");
    assert!(matches!(policy.decide(call.clone()), Verdict::Forward(_)));
    // A new generation with the country policy allowing only +44: the next call sees it.
    let country = config(
        "[policy.settings]\nallowed_prefixes = \"+44\"\n",
        "country_policy.wasm",
    );
    let swapped = Generation::new(
        Arc::new(
            engine
                .compile(&std::fs::read(&country.policy.module).expect("module"))
                .expect("compiles"),
        ),
        &country,
    )
    .expect("loads");
    assert_ne!(swapped.sha256(), sha);
    publish.send_replace(Arc::new(swapped));
    assert_eq!(
        policy.decide(call.clone()),
        Verdict::Reject {
            code: 403,
            reason: "country_not_allowed".into()
        }
    );
}

fn policy_test(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sip-ingress"))
        .args(["policy", "test"])
        .args(args)
        .current_dir(trunkguard::workspace_root())
        .output()
        .expect("sip-ingress runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn the_shipped_case_files_pass_and_a_wrong_expectation_fails() {
    let default = trunkguard::wasm_artifact("ingress_policy.wasm");
    let country = trunkguard::wasm_artifact("country_policy.wasm");
    let (status, out) = policy_test(&[
        "--module",
        default.to_str().expect("utf8"),
        "crates/ingress-policy/cases.toml",
    ]);
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    let (status, out) = policy_test(&[
        "--module",
        country.to_str().expect("utf8"),
        "--config",
        "crates/country-policy/country.toml",
        "crates/country-policy/cases.toml",
    ]);
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");

    // The default policy against the country cases: the country rule's cases fail.
    let (status, out) = policy_test(&[
        "--module",
        default.to_str().expect("utf8"),
        "--config",
        "crates/country-policy/country.toml",
        "crates/country-policy/cases.toml",
    ]);
    assert_eq!(status, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("expected reject 403")),
        "{out}"
    );

    let (status, out) = policy_test(&["crates/ingress-policy/cases.toml"]);
    assert_eq!(status, Some(2), "{out}");
    assert!(out.contains("--module"), "{out}");
}
