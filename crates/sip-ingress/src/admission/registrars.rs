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
pub struct Registrars(Arc<RwLock<Table>>);

#[derive(Debug, Default)]
struct Table {
    by_contact: HashMap<String, Vec<IpAddr>>,
    /// How many bindings registered to each address: [`Registrars::knows`] answers flooded
    /// sources, so it must not walk every binding.
    bindings_at: HashMap<IpAddr, usize>,
}

impl Registrars {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that the binding whose Contact user is `contact` sends its REGISTERs to
    /// `address`.
    pub fn add(&self, contact: &str, address: IpAddr) {
        let mut table = self.write();
        let addresses = table.by_contact.entry(contact.to_owned()).or_default();
        if !addresses.contains(&address) {
            addresses.push(address);
            *table.bindings_at.entry(address).or_default() += 1;
        }
    }

    /// Forgets the binding whose Contact user is `contact`.
    pub fn remove(&self, contact: &str) {
        let mut table = self.write();
        for address in table.by_contact.remove(contact).unwrap_or_default() {
            if let Some(count) = table.bindings_at.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    table.bindings_at.remove(&address);
                }
            }
        }
    }

    /// Whether `source` is an address the binding whose Contact user is `contact` registered
    /// to.
    pub fn trusts(&self, contact: &str, source: IpAddr) -> bool {
        self.read()
            .by_contact
            .get(contact)
            .is_some_and(|addresses| addresses.contains(&source))
    }

    /// Whether any binding registered to `source`.
    pub fn knows(&self, source: IpAddr) -> bool {
        self.read().bindings_at.contains_key(&source)
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
        registrars.add("cccc", pbx);
        assert!(registrars.trusts("aaaa", pbx));
        assert!(!registrars.trusts("bbbb", pbx));
        assert!(!registrars.trusts("aaaa", "192.0.2.8".parse().expect("ip")));
        assert!(registrars.knows(pbx));
        registrars.remove("aaaa");
        assert!(!registrars.trusts("aaaa", pbx));
        assert!(registrars.knows(pbx), "cccc still registers there");
        registrars.remove("cccc");
        assert!(!registrars.knows(pbx));
    }
}
