//! The wall clock, where what the ingress reports must carry it: registration errors and
//! refreshes, and the creation time of stored SIP connections.

use std::time::SystemTime;

/// The wall clock in unix seconds (0 if the clock is set before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
