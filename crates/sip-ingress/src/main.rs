//! `sip-ingress`: the SIP ingress sidecar.
//!
//! ```text
//! sip-ingress [--config FILE] [--log-json]   serve (the embedded demo world without --config)
//! sip-ingress check-config FILE              check a configuration and exit
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sip_ingress::config::{Config, DEMO};
use sip_ingress::metrics::Metrics;
use sip_ingress::proxy::{Event, Proxy};
use sip_ingress::tcp::{self, Connections, Inbound};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

/// How many received TCP messages wait for the proxy core before readers wait.
const CORE_QUEUE: usize = 1024;

const USAGE: &str =
    "usage: sip-ingress [--config FILE] [--log-json]\n       sip-ingress check-config FILE";

/// The largest datagram read (IPv4 UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

enum Command {
    Serve { config: Option<String>, json: bool },
    Check(String),
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    match args {
        [check, file] if check == "check-config" => Ok(Command::Check(file.clone())),
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
    let text = match path {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
        None => DEMO.to_owned(),
    };
    Config::parse(&text)
        .map_err(|e| format!("{}: {e}", path.unwrap_or("embedded demo configuration")))
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
                Ok(config) => match serve(config).await {
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

async fn serve(config: Config) -> Result<(), String> {
    let metrics = Arc::new(Metrics::default());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = config.metrics {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        tracing::info!(%addr, "serving /metrics");
        tasks.spawn(serve_metrics(listener, Arc::clone(&metrics)));
    }
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
                core,
                config.tcp_idle,
                config.tcp_connections_per_source,
            ));
        }
        let proxy = Proxy::new(config.world.clone(), local, config.flood);
        let transports = Transports {
            socket,
            connections,
            inbound,
        };
        tasks.spawn(run_core(transports, proxy, Arc::clone(&metrics)));
    }
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
}

impl Transports {
    /// Sends over the connection to `to` when there is one, else as a UDP datagram.
    async fn send(&self, to: SocketAddr, bytes: Vec<u8>) {
        if self.connections.send(to, bytes.clone()) {
            return;
        }
        if let Err(e) = self.socket.send_to(&bytes, to).await {
            tracing::warn!(%to, "udp send failed: {e}");
        }
    }
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
                Ok((length, source)) => (buffer[..length].to_vec(), source, "udp"),
                Err(e) => {
                    tracing::warn!("udp receive failed: {e}");
                    continue;
                }
            },
            Some(message) = transports.inbound.recv() => (message.bytes, message.source, "tcp"),
            _ = expiry.tick() => {
                proxy.expire(Instant::now());
                metrics.live(&socket_label, proxy.live());
                continue;
            }
        };
        let (outgoing, event) = proxy.on_datagram(&bytes, source, Instant::now());
        metrics.message(transport);
        metrics.event(event);
        metrics.live(&socket_label, proxy.live());
        log_event(event, source);
        for out in outgoing {
            transports.send(out.to, out.bytes).await;
        }
    }
}

fn log_event(event: Event, source: SocketAddr) {
    match event {
        Event::Admitted => tracing::info!(%source, "invite admitted"),
        Event::Refused(reason) => tracing::info!(%source, reason, "invite refused"),
        Event::Answered(code) => tracing::debug!(%source, code, "answered"),
        other => tracing::debug!(%source, event = ?other, "handled"),
    }
}
