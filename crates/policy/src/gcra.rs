//! The generic cell rate algorithm (GCRA, ITU-T I.371 virtual scheduling), with the time passed
//! in and the whole per-key state in one `u64`: the theoretical arrival time (TAT) in nanoseconds
//! on the caller's clock.
//!
//! One `u64` is what makes exact limits across Envoy worker threads possible: the edge filter
//! keeps it in proxy-wasm shared data and updates it with compare-and-swap. The same arithmetic
//! runs on tokio's clock in the ingress and on a fake clock in tests.
//!
//! With a rate of `r` per period `p` and a burst of `b`, the emission interval is `T = p / r` and
//! the tolerance is `τ = (b - 1) · T`; over a window `w` starting from a fresh state at most
//! `b + r · w / p` requests are admitted.

use std::fmt;

/// A configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval_ns: u64,
    tolerance_ns: u64,
    burst: u32,
}

/// Why a limit cannot be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcraError {
    /// The rate is zero, or the period is zero.
    ZeroRate,
    /// The burst is zero: nothing could ever pass.
    ZeroBurst,
    /// The period divided by the rate is below a nanosecond.
    RateTooHigh,
}

impl fmt::Display for GcraError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GcraError::ZeroRate => "rate and period must be greater than zero",
            GcraError::ZeroBurst => "burst must be at least 1",
            GcraError::RateTooHigh => "rate is too high: more than one request per nanosecond",
        })
    }
}

impl std::error::Error for GcraError {}

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admit the request and store `state`.
    Allow {
        /// The new state to store.
        state: u64,
        /// How many more requests would be admitted right now.
        remaining: u32,
        /// Nanoseconds until the limit is fully replenished.
        reset_ns: u64,
    },
    /// Refuse the request; the stored state does not change.
    Deny {
        /// Nanoseconds until one request would be admitted.
        retry_after_ns: u64,
        /// Nanoseconds until the limit is fully replenished.
        reset_ns: u64,
    },
}

impl Gcra {
    /// `rate` requests per `period_ns` nanoseconds, up to `burst` at once.
    pub fn new(rate: u32, period_ns: u64, burst: u32) -> Result<Self, GcraError> {
        if rate == 0 || period_ns == 0 {
            return Err(GcraError::ZeroRate);
        }
        if burst == 0 {
            return Err(GcraError::ZeroBurst);
        }
        let interval_ns = period_ns / u64::from(rate);
        if interval_ns == 0 {
            return Err(GcraError::RateTooHigh);
        }
        Ok(Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst - 1)),
            burst,
        })
    }

    /// The burst: requests admitted at once from a fresh state.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Nanoseconds between two requests at the sustained rate.
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// Decides one request at `now_ns` given the stored `state` (0 for a key never seen).
    ///
    /// Saturating arithmetic throughout: no input makes it panic or wrap.
    pub fn decide(&self, state: u64, now_ns: u64) -> Decision {
        let tat = state.max(now_ns);
        let ahead = tat - now_ns;
        if ahead > self.tolerance_ns {
            return Decision::Deny {
                retry_after_ns: ahead - self.tolerance_ns,
                reset_ns: ahead,
            };
        }
        let new_tat = tat.saturating_add(self.interval_ns);
        let reset_ns = new_tat - now_ns;
        // Room left under the tolerance, in whole intervals.
        let room = self
            .tolerance_ns
            .saturating_add(self.interval_ns)
            .saturating_sub(reset_ns);
        let remaining = u32::try_from(room / self.interval_ns).unwrap_or(u32::MAX);
        Decision::Allow {
            state: new_tat,
            remaining,
            reset_ns,
        }
    }

    /// Whether a stored state carries no information any more (fully replenished at `now_ns`),
    /// so the key can be forgotten.
    pub fn is_idle(&self, state: u64, now_ns: u64) -> bool {
        state <= now_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: u64 = 1_000_000_000;

    fn admitted_over(gcra: &Gcra, start: u64, step: u64, until: u64) -> u32 {
        let (mut state, mut now, mut admitted) = (0, start, 0);
        while now <= until {
            if let Decision::Allow { state: s, .. } = gcra.decide(state, now) {
                state = s;
                admitted += 1;
            }
            now += step;
        }
        admitted
    }

    #[test]
    fn burst_is_admitted_at_once_then_refused() {
        let gcra = Gcra::new(10, SECOND, 20).expect("valid");
        let mut state = 0;
        let now = 5 * SECOND;
        for expected_remaining in (0..20).rev() {
            match gcra.decide(state, now) {
                Decision::Allow {
                    state: s,
                    remaining,
                    ..
                } => {
                    assert_eq!(remaining, expected_remaining);
                    state = s;
                }
                deny => panic!("refused within burst: {deny:?}"),
            }
        }
        match gcra.decide(state, now) {
            Decision::Deny {
                retry_after_ns,
                reset_ns,
            } => {
                assert_eq!(retry_after_ns, SECOND / 10);
                assert_eq!(reset_ns, 2 * SECOND);
            }
            allow => panic!("admitted beyond burst: {allow:?}"),
        }
    }

    #[test]
    fn a_window_admits_burst_plus_rate_times_window() {
        // The demo limit: 10/s, burst 20. Requests every millisecond for 3 s.
        let gcra = Gcra::new(10, SECOND, 20).expect("valid");
        let admitted = admitted_over(&gcra, SECOND, SECOND / 1000, 4 * SECOND);
        assert_eq!(admitted, 20 + 10 * 3);
    }

    #[test]
    fn idle_keys_are_forgettable_after_replenishing() {
        let gcra = Gcra::new(1, SECOND, 2).expect("valid");
        let Decision::Allow { state, .. } = gcra.decide(0, 10 * SECOND) else {
            panic!("fresh key refused")
        };
        assert!(!gcra.is_idle(state, 10 * SECOND));
        assert!(gcra.is_idle(state, 11 * SECOND));
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert_eq!(Gcra::new(0, SECOND, 1), Err(GcraError::ZeroRate));
        assert_eq!(Gcra::new(1, 0, 1), Err(GcraError::ZeroRate));
        assert_eq!(Gcra::new(1, SECOND, 0), Err(GcraError::ZeroBurst));
        assert_eq!(Gcra::new(2, 1, 1), Err(GcraError::RateTooHigh));
    }

    proptest! {
        #[test]
        fn never_more_than_burst_plus_rate_times_elapsed(
            rate in 1u32..1000,
            burst in 1u32..100,
            gaps in proptest::collection::vec(0u64..50_000_000, 1..400),
        ) {
            let gcra = Gcra::new(rate, SECOND, burst).expect("valid");
            let (mut state, mut now, mut admitted) = (0u64, SECOND, 0u64);
            for gap in gaps {
                now += gap;
                if let Decision::Allow { state: s, .. } = gcra.decide(state, now) {
                    state = s;
                    admitted += 1;
                }
            }
            let elapsed = now - SECOND;
            let bound = u64::from(burst) + elapsed / gcra.interval_ns();
            prop_assert!(admitted <= bound, "{} > {}", admitted, bound);
        }

        #[test]
        fn extreme_inputs_do_not_panic(state in any::<u64>(), now in any::<u64>(), burst in 1u32..) {
            let gcra = Gcra::new(1, u64::MAX, burst).expect("valid");
            let _ = gcra.decide(state, now);
        }
    }
}
