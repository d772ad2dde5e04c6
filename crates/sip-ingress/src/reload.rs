//! Hot reload of the admission policy and the configuration, on SIGHUP, when the policy module
//! or the configuration file changes (checked every second), and when the control-plane API
//! changes the store (the API waits until the change is in force).
//!
//! A reload builds a new [`Generation`] (read, compile, instantiate, load) off the proxy cores,
//! and publishes it only if all of that worked; otherwise the error is logged and the policy in
//! force stays. What a reload applies: the policy module and `[policy]`, `[admission]` and the
//! tenants; with a store, also the registration bindings it holds (published to the
//! registration client). The `[sip]` settings (listening addresses, timers, host names), the
//! flood limit, metrics, the API and `[registration]` need a restart; a reload that changes them
//! says so in the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use tokio::sync::mpsc;

use crate::admission::config::AdmissionConfig;
use crate::admission::live::Generation;
use crate::admission::wasm::PolicyEngine;
use crate::api::{Apply, DEFAULT_GATEWAY};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::register::spec::{self, Desired};
use crate::store::Store;

/// How often the files are checked for changes.
const POLL: Duration = Duration::from_secs(1);

/// Builds the generation for `config`: its policy module compiled, its snapshot loaded.
pub fn build(engine: &PolicyEngine, config: &AdmissionConfig) -> Result<Generation, String> {
    let path = &config.policy.module;
    let module = std::fs::read(path).map_err(|e| {
        format!(
            "policy module {}: {e} (`cargo xtask wasm` builds the default one; `[policy] module` \
             names another)",
            path.display()
        )
    })?;
    let compiled = engine
        .compile(&module)
        .map_err(|e| format!("policy module {}: {e}", path.display()))?;
    Generation::new(Arc::new(compiled), config)
        .map_err(|e| format!("policy module {}: {e}", path.display()))
}

/// Builds the generation for `config` with what the store holds added to it.
pub fn build_with_store(
    engine: &PolicyEngine,
    config: &Config,
    store: Option<&Store>,
) -> Result<Generation, String> {
    match store {
        Some(store) => {
            let mut effective = config.clone();
            let gateway = config
                .api
                .as_ref()
                .map_or(DEFAULT_GATEWAY, |api| api.agent_gateway.as_str());
            store
                .merge_into(&mut effective.admission.tenants, gateway)
                .map_err(|e| e.to_string())?;
            build(engine, &effective.admission)
        }
        None => build(engine, &config.admission),
    }
}

/// The registration bindings `store` holds.
pub fn desired_bindings(store: &Store) -> Result<Vec<Desired>, String> {
    let records = store.all_registrations().map_err(|e| e.to_string())?;
    let connections = store.all_connections().map_err(|e| e.to_string())?;
    Ok(spec::desired(&records, &connections))
}

/// What identifies a file's version without reading it.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The settings a reload cannot change.
fn fixed(config: &Config) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?}",
        config.transport,
        config.timers,
        config.flood,
        config.metrics,
        config.api,
        config.registration
    )
}

/// Reloads the policy in force.
pub struct Reloader {
    engine: Arc<PolicyEngine>,
    /// The configuration file; `None` for the embedded demo world.
    config_path: Option<PathBuf>,
    config: Config,
    store: Option<Arc<Store>>,
    applies: Option<mpsc::Receiver<Apply>>,
    /// Where the registration bindings the store holds are published.
    bindings: Option<watch::Sender<Arc<Vec<Desired>>>>,
    publish: watch::Sender<Arc<Generation>>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// A reloader for the ingress serving `config`, read from `config_path`.
    pub fn new(
        engine: Arc<PolicyEngine>,
        config_path: Option<PathBuf>,
        config: Config,
        publish: watch::Sender<Arc<Generation>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            config_path,
            config,
            store: None,
            applies: None,
            bindings: None,
            publish,
            metrics,
        }
    }

    /// Also puts `store`'s content in force, initially and on each request from `applies`: the
    /// admission snapshot, and the registration bindings published to `bindings`.
    pub fn with_store(
        mut self,
        store: Arc<Store>,
        applies: mpsc::Receiver<Apply>,
        bindings: watch::Sender<Arc<Vec<Desired>>>,
    ) -> Self {
        self.store = Some(store);
        self.applies = Some(applies);
        self.bindings = Some(bindings);
        self
    }

    fn stamps(&self) -> (Stamp, Stamp) {
        (
            self.config_path.as_deref().and_then(stamp),
            stamp(&self.config.admission.policy.module),
        )
    }

    /// Reloads on SIGHUP and on file changes, until the process ends.
    pub async fn run(mut self) {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => Some(signal),
                Err(e) => {
                    tracing::warn!("cannot listen for SIGHUP, reloading on file changes only: {e}");
                    None
                }
            };
        let mut seen = self.stamps();
        let mut poll = tokio::time::interval(POLL);
        loop {
            let cause = tokio::select! {
                Some(done) = async { self.applies.as_mut()?.recv().await } => {
                    let applied = self.apply_store().await;
                    let _ = done.send(applied);
                    continue;
                }
                Some(()) = async { hangups.as_mut()?.recv().await } => "SIGHUP",
                _ = poll.tick() => {
                    if self.stamps() == seen {
                        continue;
                    }
                    "a file changed"
                }
            };
            seen = self.stamps();
            self = self.reload(cause).await;
            // The module path may have changed with the configuration.
            seen = (seen.0, stamp(&self.config.admission.policy.module));
        }
    }

    /// Puts the configuration in force with the store's current content.
    async fn apply_store(&mut self) -> Result<(), String> {
        let engine = Arc::clone(&self.engine);
        let store = self.store.clone();
        let config = self.config.clone();
        let built = tokio::task::spawn_blocking(move || {
            let generation = build_with_store(&engine, &config, store.as_deref())?;
            let bindings = store.as_deref().map(desired_bindings).transpose()?;
            Ok::<_, String>((generation, bindings))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
        match built {
            Ok((generation, bindings)) => {
                self.metrics.policy_reload(true);
                self.publish.send_replace(Arc::new(generation));
                if let (Some(publish), Some(bindings)) = (&self.bindings, bindings) {
                    publish.send_replace(Arc::new(bindings));
                }
                Ok(())
            }
            Err(e) => {
                self.metrics.policy_reload(false);
                tracing::error!("a control-plane change could not be put in force: {e}");
                Err(e)
            }
        }
    }

    async fn reload(mut self, cause: &'static str) -> Self {
        let path = self.config_path.clone();
        let engine = Arc::clone(&self.engine);
        let store = self.store.clone();
        let current = fixed(&self.config);
        let built = tokio::task::spawn_blocking(move || {
            let config = match &path {
                Some(path) => Config::load(path).map_err(|e| format!("{}: {e}", path.display()))?,
                None => Config::parse(crate::config::DEMO).map_err(|e| e.to_string())?,
            };
            let generation = build_with_store(&engine, &config, store.as_deref())?;
            Ok::<_, String>((config, generation))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
        match built {
            Ok((config, generation)) => {
                if fixed(&config) != current {
                    tracing::warn!(
                        "reload: [sip], [flood], [metrics], [api] and [registration] changes apply only after a restart"
                    );
                }
                let sha256 = generation.sha256().to_owned();
                self.metrics.policy_in_force(&sha256);
                self.metrics.policy_reload(true);
                self.publish.send_replace(Arc::new(generation));
                tracing::info!(cause, %sha256, "policy and configuration reloaded");
                self.config = config;
            }
            Err(e) => {
                self.metrics.policy_reload(false);
                tracing::error!(cause, "reload refused, the policy in force stays: {e}");
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sip_setting_counts_as_one_a_reload_cannot_change() {
        let base = "[sip]\nudp = [\"127.0.0.1:5060\"]\n";
        let fixed_of = |extra: &str| {
            fixed(&Config::parse(&format!("{base}{extra}")).expect("valid configuration"))
        };
        let unchanged = fixed_of("");
        for change in [
            "t1_ms = 400\n",
            "timer_c_seconds = 120\n",
            "tcp_idle_seconds = 5\n",
            "[sip.hosts]\n\"a.example\" = [\"192.0.2.7\"]\n",
        ] {
            assert_ne!(fixed_of(change), unchanged, "{change}");
        }
    }
}
