//! The policy in force.
//!
//! A [`Generation`] is one compiled policy with one configuration snapshot, checked by building
//! and loading an instance before it is published. The ingress publishes generations through a
//! `watch` channel; each proxy core's [`LivePolicy`] switches to the newest one before its next
//! decision, so a reload never interrupts a decision and transactions in flight (proxy state,
//! not policy state) carry on. A failed call makes that decision fail closed (the configured
//! 500 or 503) and the instance is rebuilt for the next one.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use policy::AccessList;
use tokio::sync::watch;

use super::config::AdmissionConfig;
use super::registrars::Registrars;
use super::wasm::{CompiledPolicy, Limits, PolicyError, PolicyInstance, wit};
use super::{Admit, Facts, Verdict};
use crate::metrics::Metrics;

/// The reason label of a decision that failed closed.
pub const POLICY_FAILURE: &str = "policy_failure";

/// A compiled policy with its configuration snapshot.
pub struct Generation {
    policy: Arc<CompiledPolicy>,
    snapshot: wit::Snapshot,
    known_sources: AccessList,
    limits: Limits,
    failure_status: u16,
    headers: Vec<String>,
    /// The instance built while checking this generation, for the first core to take.
    checked: Mutex<Option<PolicyInstance>>,
}

impl Generation {
    /// Checks `config` against `policy` by loading its snapshot into a new instance.
    pub fn new(policy: Arc<CompiledPolicy>, config: &AdmissionConfig) -> Result<Self, PolicyError> {
        let snapshot = config.snapshot();
        let limits = config.policy.limits;
        let instance = policy.instantiate(&snapshot, limits)?;
        Ok(Self {
            policy,
            snapshot,
            known_sources: config.known_sources(),
            limits,
            failure_status: config.policy.failure_status,
            headers: config.policy.headers.clone(),
            checked: Mutex::new(Some(instance)),
        })
    }

    /// The policy module's SHA-256.
    pub fn sha256(&self) -> &str {
        self.policy.sha256()
    }

    fn instance(&self) -> Result<PolicyInstance, PolicyError> {
        let checked = self
            .checked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match checked {
            Some(instance) => Ok(instance),
            None => self.policy.instantiate(&self.snapshot, self.limits),
        }
    }
}

/// A proxy core's view of the policy in force.
pub struct LivePolicy {
    updates: watch::Receiver<Arc<Generation>>,
    current: Arc<Generation>,
    instance: Option<PolicyInstance>,
    registrars: Registrars,
    metrics: Arc<Metrics>,
}

impl LivePolicy {
    /// Follows the generations published on `updates`, trusting calls through registration
    /// bindings from their `registrars`.
    pub fn new(
        mut updates: watch::Receiver<Arc<Generation>>,
        registrars: Registrars,
        metrics: Arc<Metrics>,
    ) -> Self {
        let current = Arc::clone(&updates.borrow_and_update());
        Self {
            updates,
            current,
            instance: None,
            registrars,
            metrics,
        }
    }

    fn fail_closed(&self, error: &PolicyError) -> Verdict {
        tracing::error!(
            sha256 = self.current.sha256(),
            "admission failed closed: {error}"
        );
        self.metrics.policy_failure(error.kind());
        Verdict::Reject {
            code: self.current.failure_status,
            reason: POLICY_FAILURE.into(),
        }
    }
}

impl Admit for LivePolicy {
    fn decide(&mut self, facts: Facts) -> Verdict {
        if self.updates.has_changed().unwrap_or(false) {
            self.current = Arc::clone(&self.updates.borrow_and_update());
            self.instance = None;
        }
        let mut instance = match self.instance.take() {
            Some(instance) => instance,
            None => match self.current.instance() {
                Ok(instance) => instance,
                Err(e) => return self.fail_closed(&e),
            },
        };
        let from_registrar = self
            .registrars
            .trusts(facts.request_user(), facts.source().ip());
        match instance.decide(facts.with_from_registrar(from_registrar)) {
            Ok(verdict) => {
                self.instance = Some(instance);
                verdict
            }
            // The instance is dropped: after a trap its state cannot be trusted.
            Err(e) => self.fail_closed(&e),
        }
    }

    fn knows_source(&self, source: IpAddr) -> bool {
        self.current.known_sources.contains(source) || self.registrars.knows(source)
    }

    fn wants_header(&self, name: &str) -> bool {
        self.current.headers.iter().any(|wanted| wanted == name)
    }
}
