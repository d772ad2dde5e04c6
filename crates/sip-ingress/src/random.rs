//! Unguessable values from the operating system's generator (getrandom): contact tokens,
//! branches, tags and client nonces of the ingress's own requests.

use std::hash::{BuildHasher, Hasher, RandomState};

/// 64 random bits. Should the operating system's generator fail (it does not on Linux once
/// booted), the bits come from a SipHash keyed at random for this process, fed a counter.
pub fn u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| fallback())
}

fn fallback() -> u64 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEY: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = KEY.get_or_init(RandomState::new).build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// 128 random bits as 32 lower-case hex digits: a name nobody can guess (a registration
/// binding's contact user).
pub fn token() -> String {
    format!("{:016x}{:016x}", u64(), u64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_32_hex_digits_and_differ() {
        let (a, b) = (super::token(), super::token());
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        assert_ne!(super::fallback(), super::fallback());
    }
}
