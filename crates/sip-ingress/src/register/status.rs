//! What the registration client reports of each binding, in seed 002's words, for the API to
//! read: written by the client after every change to a binding, read by the status and errors
//! endpoints. Nothing here is guessed: a binding the client has not taken up yet has no report,
//! which the API tells as `Pending`.
//!
//! The proxy cores add the calls up through each binding's contact ([`Board::call_answered`],
//! [`Board::call_ended`]): a binding that is online with a call up is `calling` (seed 002),
//! and only after the agent's 2xx was relayed, never while the call only rings.

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
    /// The user part of the binding's Contact, which the PBX's calls name; None when the client
    /// cannot run it.
    pub contact: Option<String>,
    /// The calls up through the contact as the board was read; the client writes 0.
    pub calls_up: usize,
}

impl Report {
    /// Seed 002's `sipStatus`, None unless the client runs the binding: `calling` when it is
    /// online with a call up.
    pub fn sip_word(&self) -> Option<&'static str> {
        sip_word(self.sip, self.calls_up)
    }
}

/// Seed 002's `sipStatus` of a binding at `sip` with `calls_up` calls through it.
fn sip_word(sip: Option<SipStatus>, calls_up: usize) -> Option<&'static str> {
    sip.map(|status| match status {
        SipStatus::Online if calls_up > 0 => "calling",
        SipStatus::Registering => "registering",
        SipStatus::Online => "online",
        SipStatus::Unregistered => "unregistered",
    })
}

/// The reports of every binding, shared by the registration client, the proxy cores and the
/// API.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<Table>>);

#[derive(Debug, Default)]
struct Table {
    reports: HashMap<BindingKey, Report>,
    /// The calls up through each reported binding's contact: an entry exists exactly while a
    /// report names the contact, so calls to anything else are not counted.
    calls_up: HashMap<String, usize>,
}

impl Table {
    /// The calls up through the contact of `report`.
    fn calls_up(&self, report: &Report) -> usize {
        report
            .contact
            .as_ref()
            .and_then(|contact| self.calls_up.get(contact).copied())
            .unwrap_or(0)
    }
}

impl Board {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `report` for `key`.
    pub fn set(&self, key: &BindingKey, report: Report) {
        let mut table = self.table();
        let contact = report.contact.clone();
        let previous = table.reports.insert(key.clone(), report);
        if let Some(old) = previous.and_then(|old| old.contact)
            && Some(&old) != contact.as_ref()
        {
            table.calls_up.remove(&old);
        }
        if let Some(contact) = contact {
            table.calls_up.entry(contact).or_default();
        }
    }

    /// Forgets `key` (its binding was deleted).
    pub fn remove(&self, key: &BindingKey) {
        let mut table = self.table();
        if let Some(contact) = table.reports.remove(key).and_then(|old| old.contact) {
            table.calls_up.remove(&contact);
        }
    }

    /// The report of `key`, if the client has taken it up.
    pub fn get(&self, key: &BindingKey) -> Option<Report> {
        let table = self.table();
        table.reports.get(key).map(|report| Report {
            calls_up: table.calls_up(report),
            ..report.clone()
        })
    }

    /// Counts a call to `contact` that its agent answered. False, counting nothing, when no
    /// binding has that contact.
    pub fn call_answered(&self, contact: &str) -> bool {
        match self.table().calls_up.get_mut(contact) {
            Some(calls) => {
                *calls += 1;
                true
            }
            None => false,
        }
    }

    /// Uncounts a call [`Board::call_answered`] counted (its BYE, or its dialog forgotten).
    pub fn call_ended(&self, contact: &str) {
        if let Some(calls) = self.table().calls_up.get_mut(contact) {
            *calls = calls.saturating_sub(1);
        }
    }

    /// How many bindings stand where, by lifecycle and seed 002's `sipStatus` ("none" when the
    /// client does not run them), for the gauges.
    pub fn counts(&self) -> HashMap<(Lifecycle, &'static str), usize> {
        let table = self.table();
        let mut counts = HashMap::new();
        for report in table.reports.values() {
            // Read for every binding each second: no report is copied.
            let word = sip_word(report.sip, table.calls_up(report)).unwrap_or("none");
            *counts.entry((report.lifecycle, word)).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(contact: &str) -> Report {
        Report {
            lifecycle: Lifecycle::Running,
            sip: Some(SipStatus::Online),
            message: None,
            last_refreshed: Some(1),
            errors: Vec::new(),
            contact: Some(contact.to_owned()),
            calls_up: 0,
        }
    }

    fn agent(id: &str) -> BindingKey {
        BindingKey::Registration {
            tenant: "acme".into(),
            agent_id: id.into(),
        }
    }

    #[test]
    fn an_online_binding_is_calling_while_an_answered_call_is_up() {
        let board = Board::default();
        board.set(&agent("sales"), online("c1"));
        assert_eq!(
            board.get(&agent("sales")).expect("reported").sip_word(),
            Some("online")
        );
        assert!(board.call_answered("c1"));
        assert!(board.call_answered("c1"));
        let report = board.get(&agent("sales")).expect("reported");
        assert_eq!((report.calls_up, report.sip_word()), (2, Some("calling")));
        assert_eq!(board.counts()[&(Lifecycle::Running, "calling")], 1);
        board.call_ended("c1");
        assert_eq!(
            board.get(&agent("sales")).expect("reported").sip_word(),
            Some("calling")
        );
        board.call_ended("c1");
        board.call_ended("c1");
        assert_eq!(
            board.get(&agent("sales")).expect("reported").sip_word(),
            Some("online")
        );
    }

    #[test]
    fn a_refresh_keeps_the_calls_and_a_new_contact_or_a_removal_drops_them() {
        let board = Board::default();
        board.set(&agent("sales"), online("c1"));
        board.call_answered("c1");
        board.set(&agent("sales"), online("c1"));
        assert_eq!(board.get(&agent("sales")).expect("reported").calls_up, 1);
        board.set(&agent("sales"), online("c2"));
        assert_eq!(board.get(&agent("sales")).expect("reported").calls_up, 0);
        assert!(
            !board.call_answered("c1"),
            "c1 is no binding's contact any more"
        );
        board.remove(&agent("sales"));
        assert!(!board.call_answered("c2"));
    }

    #[test]
    fn calls_to_no_binding_are_not_counted_and_only_online_bindings_are_calling() {
        let board = Board::default();
        assert!(!board.call_answered("+15550100"));
        let registering = Report {
            sip: Some(SipStatus::Registering),
            ..online("c1")
        };
        board.set(&agent("sales"), registering);
        assert!(board.call_answered("c1"));
        assert_eq!(
            board.get(&agent("sales")).expect("reported").sip_word(),
            Some("registering")
        );
    }
}
