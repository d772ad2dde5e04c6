//! The shared, versioned key-value store that rate-limit state lives in: proxy-wasm shared data
//! in Envoy (one store for all worker threads' VMs), a map in tests.

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The value changed since it was read (compare-and-swap lost a race).
    Conflict,
    /// The host refused the operation.
    Host,
}

/// A shared key-value store with compare-and-swap.
pub trait SharedStore {
    /// The value and its version, or `None` when the key has never been written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;

    /// Writes `value` if the key is still at `version` (`None`: unconditionally).
    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError>;
}

#[cfg(test)]
pub(crate) mod memory {
    use super::{SharedStore, StoreError};
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// An in-memory store with the proxy-wasm semantics (versions start at 1, bump on write).
    #[derive(Default)]
    pub struct MemoryStore {
        pub entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        /// Writes that fail with a conflict before succeeding, to exercise the retry loop.
        pub conflicts_to_inject: RefCell<u32>,
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            Ok(self.entries.borrow().get(key).cloned())
        }

        fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
            let mut injected = self.conflicts_to_inject.borrow_mut();
            if *injected > 0 {
                *injected -= 1;
                return Err(StoreError::Conflict);
            }
            let mut entries = self.entries.borrow_mut();
            let current = entries.get(key).map(|(_, v)| *v);
            if let (Some(expected), Some(current)) = (version, current)
                && expected != current
            {
                return Err(StoreError::Conflict);
            }
            entries.insert(key.to_owned(), (value.to_vec(), current.unwrap_or(0) + 1));
            Ok(())
        }
    }
}
