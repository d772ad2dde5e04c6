//! What the registration client reports of each binding, in seed 002's words, for the API to
//! read: written by the client after every change to a binding, read by the status and errors
//! endpoints. Nothing here is guessed: a binding the client has not taken up yet has no report,
//! which the API tells as `Pending`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::binding::{RegistrationError, SipStatus};

/// Which stored binding, as the API names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BindingKey {
    /// An agent's SIP registration (seed 000).
    Registration {
        /// The tenant.
        tenant: String,
        /// The agent.
        agent_id: String,
    },
    /// A SIP connection (seed 002).
    Connection {
        /// The tenant.
        tenant: String,
        /// The connection's id.
        id: String,
    },
}

/// Whether the registration client runs the binding (seed 002 `lifecycleStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// Stored, not yet taken up by the client.
    Pending,
    /// The client runs it: REGISTERs go out (or wait for their turn).
    Running,
    /// The client cannot run it (see the message).
    Failed,
}

impl Lifecycle {
    /// Seed 002's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Pending => "Pending",
            Lifecycle::Running => "Running",
            Lifecycle::Failed => "Failed",
        }
    }
}

/// Seed 002's word for a SIP status.
pub fn sip_status_word(status: SipStatus) -> &'static str {
    match status {
        SipStatus::Registering => "registering",
        SipStatus::Online => "online",
        SipStatus::Unregistered => "unregistered",
    }
}

/// One binding's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether the client runs it.
    pub lifecycle: Lifecycle,
    /// Where it stands with its registrar; None unless running.
    pub sip: Option<SipStatus>,
    /// The last problem in words, None while online.
    pub message: Option<String>,
    /// The unix time of the registrar's last 2xx.
    pub last_refreshed: Option<u64>,
    /// The recent errors, newest first.
    pub errors: Vec<RegistrationError>,
}

/// The reports of every binding, shared by the registration client and the API.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<HashMap<BindingKey, Report>>>);

impl Board {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<BindingKey, Report>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `report` for `key`.
    pub fn set(&self, key: &BindingKey, report: Report) {
        self.table().insert(key.clone(), report);
    }

    /// Forgets `key` (its binding was deleted).
    pub fn remove(&self, key: &BindingKey) {
        self.table().remove(key);
    }

    /// The report of `key`, if the client has taken it up.
    pub fn get(&self, key: &BindingKey) -> Option<Report> {
        self.table().get(key).cloned()
    }

    /// How many bindings stand where, by lifecycle and SIP status, for the gauges.
    pub fn counts(&self) -> HashMap<(Lifecycle, Option<SipStatus>), usize> {
        let mut counts = HashMap::new();
        for report in self.table().values() {
            *counts.entry((report.lifecycle, report.sip)).or_default() += 1;
        }
        counts
    }
}
