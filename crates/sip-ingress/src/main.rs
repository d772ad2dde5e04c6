//! `sip-ingress`: the SIP ingress sidecar.
//!
//! ```text
//! sip-ingress [--config FILE] [--log-json]   serve (the embedded demo world without --config)
//! sip-ingress check-config FILE              check a configuration and exit
//! sip-ingress policy test --module M.wasm [--config C.toml] CASES
//!                                            run a policy against a case file
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sip_ingress::admission::Transport;
use sip_ingress::admission::host::PolicyEngine;
use sip_ingress::admission::live::LivePolicy;
use sip_ingress::api::Api;
use sip_ingress::config::{Config, DEMO};
use sip_ingress::metrics::Metrics;
use sip_ingress::proxy::{Event, Outgoing, Proxy};
use sip_ingress::reload::{self, Reloader};
use sip_ingress::sip::response;
use sip_ingress::store::Store;
use sip_ingress::tcp::{self, Connections, Inbound};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

/// How many received TCP messages wait for the proxy core before readers wait.
const CORE_QUEUE: usize = 1024;

const USAGE: &str = "usage: sip-ingress [--config FILE] [--log-json]
       sip-ingress check-config FILE
       sip-ingress policy test --module M.wasm [--config C.toml] CASES";

/// The largest datagram read (IPv4 UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// How long a host name lookup may take before the INVITEs waiting for it are answered 503.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

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
    let mut config = load(config)?;
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
    let engine =
        Arc::new(PolicyEngine::new(config.policy.cache_dir.clone()).map_err(|e| e.to_string())?);
    let store = match &config.api {
        Some(api) => Some(Arc::new(
            Store::open(&api.database).map_err(|e| format!("api.database: {e}"))?,
        )),
        None => None,
    };
    let generation = reload::build_with_store(&engine, &config, store.as_deref())?;
    tracing::info!(
        module = %config.policy.module.display(),
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
        tasks.spawn(serve_metrics(listener, Arc::clone(&metrics)));
    }
    let hosts = Arc::new(config.hosts.clone());
    for addr in &config.udp {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on udp {addr}: {e}"))?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%local, "listening on udp");
        let connections = Arc::new(Connections::default());
        let (core, inbound) = mpsc::channel(CORE_QUEUE);
        if config.tcp.contains(addr) {
            let listener = TcpListener::bind(local)
                .await
                .map_err(|e| format!("cannot listen on tcp {local}: {e}"))?;
            tracing::info!(%local, "listening on tcp");
            tasks.spawn(tcp::accept(
                listener,
                Arc::clone(&connections),
                core.clone(),
                config.tcp_idle,
                config.tcp_connections_per_source,
            ));
        }
        let policy = LivePolicy::new(updates.clone(), Arc::clone(&metrics));
        let proxy = Proxy::new(Box::new(policy), local, config.flood, config.timers);
        let (lookups, resolved) = mpsc::channel(CORE_QUEUE);
        let transports = Transports {
            socket,
            connections,
            inbound,
            core,
            tcp_idle: config.tcp_idle,
            hosts: Arc::clone(&hosts),
            lookups,
            resolved,
        };
        tasks.spawn(run_core(transports, proxy, Arc::clone(&metrics)));
    }
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
        let router = sip_ingress::api::router(Arc::new(Api::new(Arc::clone(&store), apply)));
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("API server stopped: {e}");
            }
        });
        reloader = reloader.with_store(store, applies);
    }
    tasks.spawn(reloader.run());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("stopping");
            Ok(())
        }
        Some(result) = tasks.join_next() => {
            Err(format!("a transport stopped: {result:?}"))
        }
    }
}

/// `GET /metrics`: Prometheus text.
async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics server stopped: {e}");
    }
}

/// What one listening address receives from and sends through.
struct Transports {
    socket: UdpSocket,
    connections: Arc<Connections>,
    inbound: mpsc::Receiver<Inbound>,
    /// Where messages from connections the ingress opens go (the core's own inbound queue).
    core: mpsc::Sender<Inbound>,
    /// How long a connection to an agent may stay silent.
    tcp_idle: Duration,
    /// The addresses the configuration gives host names, used instead of the system resolver.
    hosts: Arc<BTreeMap<String, Vec<IpAddr>>>,
    /// Where lookups of agents' host names report, and where the core reads their answers.
    lookups: mpsc::Sender<(String, Vec<IpAddr>)>,
    resolved: mpsc::Receiver<(String, Vec<IpAddr>)>,
}

impl Transports {
    /// Looks up the names the proxy asked for, each in its own task, so the core never waits;
    /// a name the configuration gives addresses is answered with them.
    fn look_up(&self, names: Vec<String>) {
        for name in names {
            let given = self.hosts.get(&name.to_ascii_lowercase()).cloned();
            tokio::spawn(look_up(name, given, self.lookups.clone()));
        }
    }

    /// Sends over the connection to the destination when there is one, else as the message
    /// asks: a UDP datagram, or over a new TCP connection; a response to a request that came
    /// over TCP on a connection that has closed goes over a new one (RFC 3261 section 18.2.2).
    /// Gives the bytes back when they cannot be sent now; a connection that cannot be opened
    /// gives its messages back later, as [`Inbound::Undeliverable`].
    async fn send(&self, out: Outgoing) -> Result<(), Vec<u8>> {
        let Outgoing {
            to,
            transport,
            bytes,
        } = out;
        if transport == Transport::Tcp {
            return self.send_or_connect(to, bytes);
        }
        let Err(bytes) = self.connections.send(to, bytes) else {
            return Ok(());
        };
        if let Some(target) = response::reconnect_target(&bytes, to.ip()) {
            return self.send_or_connect(target, bytes);
        }
        match self.socket.send_to(&bytes, to).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(%to, "udp send failed: {e}");
                Err(bytes)
            }
        }
    }

    /// Queues `bytes` on the TCP connection to `to`, opening one when there is none; gives them
    /// back when its queue is full.
    fn send_or_connect(&self, to: SocketAddr, bytes: Vec<u8>) -> Result<(), Vec<u8>> {
        self.connections
            .send_or_connect(to, bytes, &self.core, self.tcp_idle)
            .inspect_err(|_| tracing::warn!(%to, "tcp send failed: the connection's queue is full"))
    }

    /// Sends what the proxy core gave to send. What cannot be sent goes back to the core
    /// ([`Proxy::on_undeliverable`]), and the answers it gives for that are sent in turn.
    async fn deliver(&self, proxy: &mut Proxy, metrics: &Metrics, outgoing: Vec<Outgoing>) {
        let mut batch = outgoing;
        // Only an unanswered INVITE gives something back: an answer once, or itself for its
        // agent's next address, of which there are at most MOST_ADDRESSES_TRIED. This ends.
        while !batch.is_empty() {
            let mut answers = Vec::new();
            for out in batch {
                let to = out.to;
                if let Err(bytes) = self.send(out).await {
                    answers.extend(undeliverable(proxy, metrics, &bytes, to));
                }
            }
            batch = answers;
        }
    }
}

/// Tells the proxy core that `bytes` could not be sent to `to`; returns its answers to send.
fn undeliverable(
    proxy: &mut Proxy,
    metrics: &Metrics,
    bytes: &[u8],
    to: SocketAddr,
) -> Vec<Outgoing> {
    let (answers, event) = proxy.on_undeliverable(bytes, to, Instant::now());
    if let Some(event) = event {
        metrics.event(&event);
        log_event(&event, to);
    }
    answers
}

/// The proxy core of one listening address: it owns the proxy state, and handles what arrives
/// on the UDP socket and on the TCP connections of that address.
async fn run_core(mut transports: Transports, mut proxy: Proxy, metrics: Arc<Metrics>) {
    let socket_label = transports
        .socket
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (bytes, source, transport) = tokio::select! {
            received = transports.socket.recv_from(&mut buffer) => match received {
                Ok((length, source)) => (buffer[..length].to_vec(), source, Transport::Udp),
                Err(e) => {
                    tracing::warn!("udp receive failed: {e}");
                    continue;
                }
            },
            Some(inbound) = transports.inbound.recv() => match inbound {
                Inbound::Message { bytes, source } => (bytes, source, Transport::Tcp),
                Inbound::Undeliverable { bytes, peer } => {
                    let answers = undeliverable(&mut proxy, &metrics, &bytes, peer);
                    transports.deliver(&mut proxy, &metrics, answers).await;
                    continue;
                }
            },
            _ = expiry.tick() => {
                proxy.expire(Instant::now());
                metrics.live(&socket_label, proxy.live());
                continue;
            }
            () = until(proxy.next_timer()) => {
                let (outgoing, events) = proxy.on_timers(Instant::now());
                for event in &events {
                    metrics.event(event);
                }
                transports.deliver(&mut proxy, &metrics, outgoing).await;
                continue;
            }
            Some((name, addresses)) = transports.resolved.recv() => {
                tracing::debug!(%name, ?addresses, "agent host name looked up");
                let (outgoing, events) = proxy.on_resolved(&name, addresses, Instant::now());
                for event in &events {
                    metrics.event(event);
                    log_resolved_event(event, &name);
                }
                metrics.live(&socket_label, proxy.live());
                transports.deliver(&mut proxy, &metrics, outgoing).await;
                continue;
            }
        };
        let (outgoing, event) = proxy.on_message(&bytes, source, transport, Instant::now());
        metrics.message(transport.as_str());
        metrics.event(&event);
        metrics.live(&socket_label, proxy.live());
        log_event(&event, source);
        transports.look_up(proxy.take_lookups());
        transports.deliver(&mut proxy, &metrics, outgoing).await;
    }
}

/// Reports the addresses of `name`: those `given` by the configuration, else the system
/// resolver's (none on failure).
async fn look_up(
    name: String,
    given: Option<Vec<IpAddr>>,
    results: mpsc::Sender<(String, Vec<IpAddr>)>,
) {
    if let Some(addresses) = given {
        let _ = results.send((name, addresses)).await;
        return;
    }
    let lookup = tokio::net::lookup_host((name.as_str(), 0));
    let addresses = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
        Ok(Ok(found)) => found.map(|address| address.ip()).collect(),
        Ok(Err(e)) => {
            tracing::warn!(%name, "cannot resolve an agent's host name: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(%name, "looking up an agent's host name timed out");
            Vec::new()
        }
    };
    // The core is gone only when the ingress stops.
    let _ = results.send((name, addresses)).await;
}

/// Completes at `deadline`, never when there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

fn log_resolved_event(event: &Event, name: &str) {
    match event {
        Event::Admitted => tracing::info!(agent_host = name, "invite admitted"),
        Event::Refused(reason) => {
            tracing::info!(agent_host = name, reason = %reason, "invite refused");
        }
        other => tracing::debug!(agent_host = name, event = ?other, "handled"),
    }
}

fn log_event(event: &Event, source: SocketAddr) {
    match event {
        Event::Admitted => tracing::info!(%source, "invite admitted"),
        Event::Refused(reason) => tracing::info!(%source, reason = %reason, "invite refused"),
        Event::Answered(code) => tracing::debug!(%source, code, "answered"),
        Event::Undeliverable(code) => {
            tracing::info!(agent = %source, code, "invite could not be sent to its agent");
        }
        Event::NextAddress(after) => {
            let after = after.label();
            tracing::info!(agent = %source, after, "invite sent on to its agent's next address");
        }
        other => tracing::debug!(%source, event = ?other, "handled"),
    }
}
