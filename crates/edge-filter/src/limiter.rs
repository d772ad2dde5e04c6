//! Exact rate limits across Envoy worker threads: GCRA state per (API key, route class) in the
//! shared store, updated by compare-and-swap.
//!
//! Every worker thread runs its own VM; counting per VM would multiply each limit by the number
//! of workers. The state of one (key, class) pair is one `u64` (see [`policy::gcra`]), read with
//! its version and written back only if nobody wrote in between; a lost race re-reads and decides
//! again.
//!
//! State exists only for configured keys and classes (unknown keys are refused before rate
//! limiting), so the store holds at most keys × classes entries. [`sweep_idle`] empties the ones
//! whose limit has fully replenished.

use policy::{Decision, Gcra};

use crate::config::Config;
use crate::store::{SharedStore, StoreError};

/// How many times a decision is retried after losing a compare-and-swap race.
pub const MAX_ATTEMPTS: u32 = 32;

fn decode(value: &[u8]) -> u64 {
    value.try_into().map(u64::from_le_bytes).unwrap_or_default()
}

/// Decides one request for `key` at `now_ns`, updating the shared state.
pub fn check(
    store: &dyn SharedStore,
    key: &str,
    limit: &Gcra,
    now_ns: u64,
) -> Result<Decision, StoreError> {
    for _ in 0..MAX_ATTEMPTS {
        let (state, version) = match store.get(key)? {
            Some((value, version)) => (decode(&value), Some(version)),
            None => (0, None),
        };
        let decision = limit.decide(state, now_ns);
        let Decision::Allow { state: next, .. } = decision else {
            return Ok(decision);
        };
        match store.set(key, &next.to_le_bytes(), version) {
            Ok(()) => return Ok(decision),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// Creates the state of every (key, class) pair that has none, so that every later write is a
/// compare-and-swap against a known version.
pub fn initialise(config: &Config, store: &dyn SharedStore) -> Result<(), StoreError> {
    for key in 0..config.keys.len() {
        for class in 0..config.classes.len() {
            let Some(name) = config.rate_state_key(key, class) else {
                continue;
            };
            if store.get(name)?.is_none() {
                match store.set(name, &[], None) {
                    Ok(()) | Err(StoreError::Conflict) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Empties the state of every pair whose limit has fully replenished at `now_ns` (an empty value
/// reads as a fresh state). A pair written concurrently is left alone. Returns how many were
/// emptied.
pub fn sweep_idle(config: &Config, store: &dyn SharedStore, now_ns: u64) -> usize {
    let mut swept = 0;
    for key in 0..config.keys.len() {
        for (class_index, class) in config.classes.iter().enumerate() {
            let Some(name) = config.rate_state_key(key, class_index) else {
                continue;
            };
            let Ok(Some((value, version))) = store.get(name) else {
                continue;
            };
            if !value.is_empty()
                && class.limit.is_idle(decode(&value), now_ns)
                && store.set(name, &[], Some(version)).is_ok()
            {
                swept += 1;
            }
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::test_config_json;
    use crate::store::memory::MemoryStore;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn state_survives_between_calls_and_limits_the_burst() {
        let store = MemoryStore::default();
        let gcra = Gcra::new(10, SECOND, 20).expect("valid");
        let allowed = (0..25)
            .filter(|_| {
                matches!(
                    check(&store, "k", &gcra, SECOND),
                    Ok(Decision::Allow { .. })
                )
            })
            .count();
        assert_eq!(allowed, 20);
    }

    #[test]
    fn lost_races_are_retried() {
        let store = MemoryStore::default();
        *store.conflicts_to_inject.borrow_mut() = 5;
        let gcra = Gcra::new(1, SECOND, 1).expect("valid");
        assert!(matches!(
            check(&store, "k", &gcra, SECOND),
            Ok(Decision::Allow { .. })
        ));
        assert!(matches!(
            check(&store, "k", &gcra, SECOND),
            Ok(Decision::Deny { .. })
        ));
    }

    #[test]
    fn endless_contention_fails_closed() {
        let store = MemoryStore::default();
        *store.conflicts_to_inject.borrow_mut() = MAX_ATTEMPTS;
        let gcra = Gcra::new(1, SECOND, 1).expect("valid");
        assert_eq!(check(&store, "k", &gcra, SECOND), Err(StoreError::Conflict));
    }

    #[test]
    fn initialise_then_sweep_idle_pairs() {
        let config = Config::parse(test_config_json().as_bytes()).expect("valid");
        let store = MemoryStore::default();
        initialise(&config, &store).expect("initialised");
        assert_eq!(
            store.entries.borrow().len(),
            config.keys.len() * config.classes.len()
        );
        let key = crate::config::state_key("test", "write");
        let write = &config
            .classes
            .iter()
            .find(|c| c.name == "write")
            .expect("class")
            .limit;
        check(&store, &key, write, 10 * SECOND).expect("decided");
        assert_eq!(
            sweep_idle(&config, &store, 10 * SECOND),
            0,
            "not replenished yet"
        );
        assert_eq!(sweep_idle(&config, &store, 11 * SECOND), 1);
        assert!(store.entries.borrow()[&key].0.is_empty());
    }
}
