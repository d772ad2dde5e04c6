//! `sip-ingress`: the SIP ingress sidecar.
//!
//! ```text
//! sip-ingress [--config FILE] [--log-json]   serve (the embedded demo world without --config)
//! sip-ingress check-config FILE              check a configuration and exit
//! sip-ingress policy test --module M.wasm [--config C.toml] CASES
//!                                            run a policy against a case file
//! ```
//!
//! The command line and the wiring only: the sockets and proxy cores are `transport`'s, the
//! policy engine and its reloads `admission` and `reload`'s, the API `api`'s.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use sip_ingress::admission::live::LivePolicy;
use sip_ingress::admission::registrars::Registrars;
use sip_ingress::admission::wasm::PolicyEngine;
use sip_ingress::api::Api;
use sip_ingress::config::{Config, DEMO};
use sip_ingress::metrics::Metrics;
use sip_ingress::proxy::Proxy;
use sip_ingress::register::bindings::Bindings;
use sip_ingress::register::service::{STOP_WITHIN, Service};
use sip_ingress::register::status::Board;
use sip_ingress::reload::{self, Reloader};
use sip_ingress::store::Store;
use sip_ingress::transport;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

const USAGE: &str = "usage: sip-ingress [--config FILE] [--log-json]
       sip-ingress check-config FILE
       sip-ingress policy test --module M.wasm [--config C.toml] CASES";

enum Command {
    Serve {
        config: Option<String>,
        json: bool,
    },
    Check(String),
    PolicyTest {
        module: String,
        config: Option<String>,
        cases: String,
    },
}

fn parse_policy_test(args: &[String]) -> Result<Command, String> {
    let (mut module, mut config, mut cases) = (None, None, None);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--module" => module = Some(rest.next().ok_or("--module needs a FILE")?.clone()),
            "--config" => config = Some(rest.next().ok_or("--config needs a FILE")?.clone()),
            other if cases.is_none() && !other.starts_with("--") => cases = Some(other.to_owned()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Command::PolicyTest {
        module: module.ok_or("policy test needs --module M.wasm")?,
        config,
        cases: cases.ok_or("policy test needs a CASES file")?,
    })
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    match args {
        [check, file] if check == "check-config" => Ok(Command::Check(file.clone())),
        [policy, test, rest @ ..] if policy == "policy" && test == "test" => {
            parse_policy_test(rest)
        }
        _ => {
            let (mut config, mut json) = (None, false);
            let mut rest = args.iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--config" => {
                        config = Some(rest.next().ok_or("--config needs a FILE")?.clone())
                    }
                    "--log-json" => json = true,
                    other => return Err(format!("unknown argument {other:?}")),
                }
            }
            Ok(Command::Serve { config, json })
        }
    }
}

fn load(path: Option<&str>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(Path::new(path)).map_err(|e| format!("{path}: {e}")),
        None => Config::parse(DEMO).map_err(|e| format!("embedded demo configuration: {e}")),
    }
}

/// `policy test`: prints a line per case and a summary.
fn policy_test(module: &str, config: Option<&str>, cases: &str) -> Result<bool, String> {
    let mut config = load(config)?.admission;
    config.policy.module = PathBuf::from(module);
    let engine = PolicyEngine::new(config.policy.cache_dir.clone()).map_err(|e| e.to_string())?;
    let generation = reload::build(&engine, &config)?;
    let text = std::fs::read_to_string(cases).map_err(|e| format!("{cases}: {e}"))?;
    let outcomes =
        sip_ingress::policy_cases::run(generation, &text).map_err(|e| format!("{cases}: {e}"))?;
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    for outcome in &outcomes {
        match &outcome.failure {
            None => println!("pass  {}", outcome.name),
            Some(why) => println!("FAIL  {}: {why}", outcome.name),
        }
    }
    println!(
        "{} cases: {} passed, {failed} failed",
        outcomes.len(),
        outcomes.len() - failed
    );
    Ok(failed == 0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("sip-ingress: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Check(path) => match load(Some(&path)) {
            Ok(_) => {
                println!("{path}: ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::PolicyTest {
            module,
            config,
            cases,
        } => match policy_test(&module, config.as_deref(), &cases) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("sip-ingress: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve { config, json } => {
            let subscriber = tracing_subscriber::fmt().with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            );
            if json {
                subscriber.json().init();
            } else {
                subscriber.init();
            }
            match load(config.as_deref()) {
                Ok(loaded) => match serve(loaded, config.map(PathBuf::from)).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e}");
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: Config, config_path: Option<PathBuf>) -> Result<(), String> {
    let metrics = Arc::new(Metrics::default());
    let mut tasks = tokio::task::JoinSet::new();
    let policy = &config.admission.policy;
    let engine = Arc::new(PolicyEngine::new(policy.cache_dir.clone()).map_err(|e| e.to_string())?);
    let store = match &config.api {
        Some(api) => Some(Arc::new(
            Store::open(&api.database).map_err(|e| format!("api.database: {e}"))?,
        )),
        None => None,
    };
    let generation = reload::build_with_store(&engine, &config, store.as_deref())?;
    tracing::info!(
        module = %policy.module.display(),
        sha256 = generation.sha256(),
        "admission policy loaded"
    );
    metrics.policy_in_force(generation.sha256());
    let (publish, updates) = watch::channel(Arc::new(generation));
    if let Some(addr) = config.metrics {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        tracing::info!(%addr, "serving /metrics");
        tasks.spawn(sip_ingress::metrics::serve(listener, Arc::clone(&metrics)));
    }
    let registrars = Registrars::default();
    let board = Board::default();
    let proxy_for = |local| {
        let policy = LivePolicy::new(updates.clone(), registrars.clone(), Arc::clone(&metrics));
        Proxy::new(Box::new(policy), local, config.flood, config.timers)
            .counting_calls_on(board.clone())
    };
    let link = transport::listen(&config.transport, proxy_for, &metrics, &mut tasks).await?;
    let initial = match store.as_deref() {
        Some(store) => reload::desired_bindings(store)?,
        None => Vec::new(),
    };
    let (publish_bindings, desired) = watch::channel(Arc::new(initial));
    let (stop, stopping) = watch::channel(false);
    let bindings = Bindings::new(
        link.local,
        config.registration,
        config.timers.t1,
        Box::new(sip_ingress::random::u64),
        registrars.clone(),
        board.clone(),
    );
    let client =
        tokio::spawn(Service::new(bindings, link, desired, stopping, Arc::clone(&metrics)).run());
    let mut reloader = Reloader::new(
        engine,
        config_path,
        config.clone(),
        publish,
        Arc::clone(&metrics),
    );
    if let (Some(api), Some(store)) = (&config.api, store) {
        let listener = TcpListener::bind(api.listen)
            .await
            .map_err(|e| format!("cannot serve the API on {}: {e}", api.listen))?;
        tracing::info!(addr = %api.listen, database = %api.database.display(), "serving the control-plane API");
        let (apply, applies) = mpsc::channel(16);
        let api_state = Api::new(Arc::clone(&store), apply, board);
        let router = sip_ingress::api::router(Arc::new(api_state));
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("API server stopped: {e}");
            }
        });
        reloader = reloader.with_store(store, applies, publish_bindings);
    }
    tasks.spawn(reloader.run());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok("SIGINT"),
        _ = terminate.recv() => Ok("SIGTERM"),
        Some(result) = tasks.join_next() => Err(format!("a transport stopped: {result:?}")),
    };
    let signal = outcome?;
    tracing::info!(signal, "stopping");
    let _ = stop.send(true);
    // The client bounds its own removals by STOP_WITHIN; this only keeps a stuck one from
    // holding the process.
    let grace = STOP_WITHIN + std::time::Duration::from_millis(500);
    if tokio::time::timeout(grace, client).await.is_err() {
        tracing::warn!("the registration client did not stop in time");
    }
    Ok(())
}
