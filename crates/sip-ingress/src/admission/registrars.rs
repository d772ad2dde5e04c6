//! Where each registration binding registered: the addresses its REGISTERs went to (the
//! registrar, or the registrar's proxy), by the binding's contact token. The registration
//! client writes them as it sends; admission reads them to say whether an INVITE through a
//! binding comes from its registrar ([`super::Facts::from_registrar`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// The registrars of the live bindings, shared by the registration client and every proxy
/// core.
#[derive(Debug, Clone, Default)]
pub struct Registrars(Arc<RwLock<HashMap<String, Vec<IpAddr>>>>);

impl Registrars {
    /// Records that the binding whose Contact user is `contact` sends its REGISTERs to
    /// `address`.
    pub fn add(&self, contact: &str, address: IpAddr) {
        let mut table = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let addresses = table.entry(contact.to_owned()).or_default();
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }

    /// Forgets the binding whose Contact user is `contact`.
    pub fn remove(&self, contact: &str) {
        let mut table = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        table.remove(contact);
    }

    /// Whether `source` is an address the binding whose Contact user is `contact` registered
    /// to.
    pub fn trusts(&self, contact: &str, source: IpAddr) -> bool {
        let table = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        table
            .get(contact)
            .is_some_and(|addresses| addresses.contains(&source))
    }

    /// Whether any binding registered to `source`.
    pub fn knows(&self, source: IpAddr) -> bool {
        let table = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        table.values().any(|addresses| addresses.contains(&source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registrar_is_trusted_for_its_own_binding_only_until_it_is_removed() {
        let registrars = Registrars::default();
        let pbx: IpAddr = "192.0.2.7".parse().expect("ip");
        registrars.add("aaaa", pbx);
        registrars.add("aaaa", pbx);
        assert!(registrars.trusts("aaaa", pbx));
        assert!(!registrars.trusts("bbbb", pbx));
        assert!(!registrars.trusts("aaaa", "192.0.2.8".parse().expect("ip")));
        assert!(registrars.knows(pbx));
        registrars.remove("aaaa");
        assert!(!registrars.trusts("aaaa", pbx));
        assert!(!registrars.knows(pbx));
    }
}
