//! The registration client (RFC 3261 section 10.2): the ingress registers agents to customers'
//! PBXs and SIP providers as extensions, as Kamailio's `uac_reg` and every SIP phone do, so the
//! PBX sends the extension's calls to the ingress.
//!
//! * [`binding`]: one binding's REGISTER transactions, without sockets: the request built, the
//!   registrar's answers handled (2xx, digest challenges, 423, failures), the refresh before the
//!   grant ends, retries with backoff, and the status that only a registrar's answer proves.
//! * [`spec`]: what the store asks to be registered, read from its records.
//! * [`bindings`]: every binding at once, without sockets: started at a bounded rate, changed
//!   and deleted ones unregistered before their successors register, registrars' names looked
//!   up, responses matched to their binding, all unregistered on stop.
//! * [`service`]: the task that drives [`bindings::Bindings`] over the first listening
//!   address's transports, so the PBX's calls come back to that address.
//! * [`status`]: what the client reports of each binding, for the API and the gauges.
//!
//! Calls arriving through a binding's contact are admitted by the policy (`policy::admission`),
//! trusted from the addresses in `admission::registrars`, which the client fills as it sends.

pub mod binding;
pub mod bindings;
pub mod service;
pub mod spec;
pub mod status;

use std::time::Duration;

/// The registration client's settings (`[registration]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// The interval each REGISTER asks for, in seconds (the registrar may grant less).
    pub expires: u32,
    /// The most bindings started per second, so that a restart with 10,000 bindings does not
    /// send them to one PBX at once.
    pub max_per_second: u32,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            expires: 3600,
            max_per_second: 200,
        }
    }
}

impl RegistrationConfig {
    /// The time between two binding starts.
    pub fn start_spacing(&self) -> Duration {
        Duration::from_secs(1) / self.max_per_second.max(1)
    }
}
