//! Looking up agents' host names for the proxy cores: the addresses `[sip.hosts]` gives a name,
//! else the system resolver's A/AAAA answer. Each lookup runs in its own task and reports to the
//! core that asked, so a core never waits. This is where RFC 3263 (NAPTR, SRV) will grow.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

/// How long a host name lookup may take before the INVITEs waiting for it are answered 503.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

/// A host name and its addresses in the resolver's order: none when it did not resolve.
pub type Resolved = (String, Vec<IpAddr>);

/// Looks up names for one proxy core.
pub struct Resolver {
    /// The addresses the configuration gives host names, by lower-case name.
    hosts: Arc<BTreeMap<String, Vec<IpAddr>>>,
    /// Where the answers go.
    answers: mpsc::Sender<Resolved>,
}

impl Resolver {
    /// A resolver with `hosts` as overrides, answering to `answers`.
    pub fn new(hosts: Arc<BTreeMap<String, Vec<IpAddr>>>, answers: mpsc::Sender<Resolved>) -> Self {
        Self { hosts, answers }
    }

    /// Looks up each of `names` in a task of its own.
    pub fn look_up(&self, names: Vec<String>) {
        for name in names {
            let given = self.hosts.get(&name.to_ascii_lowercase()).cloned();
            tokio::spawn(look_up(name, given, self.answers.clone()));
        }
    }
}

/// Reports the addresses of `name`: those `given` by the configuration, else the system
/// resolver's (none on failure).
async fn look_up(name: String, given: Option<Vec<IpAddr>>, answers: mpsc::Sender<Resolved>) {
    if let Some(addresses) = given {
        let _ = answers.send((name, addresses)).await;
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
    let _ = answers.send((name, addresses)).await;
}
