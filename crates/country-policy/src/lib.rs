//! An example admission policy, to show operators how to write theirs: trunkguard's default
//! rules, then a per-country allowlist of caller numbers by their country calling code.
//!
//! Configured in the ingress's `[policy.settings]`:
//!
//! ```toml
//! [policy]
//! module = "target/wasm/country_policy.wasm"
//!
//! [policy.settings]
//! allowed_prefixes = "+1 +44"          # every tenant: North America and the UK
//! "allowed_prefixes.acme" = "+33"       # tenant acme: France only
//! ```
//!
//! An INVITE the default rules forward whose From number starts with none of its tenant's
//! prefixes is answered 403 (`country_not_allowed`). Without any `allowed_prefixes` the policy
//! refuses to load: an allowlist that allows nothing is a mistake, not a policy.
//!
//! Build: `cargo build -p country-policy --target wasm32-wasip2 --profile wasm` (or
//! `cargo xtask wasm`, which copies it to `target/wasm/country_policy.wasm`). Test:
//! `sip-ingress policy test --module target/wasm/country_policy.wasm --config
//! crates/country-policy/country.toml crates/country-policy/cases.toml`.

use ingress_policy::bindings::trunkguard::ingress_policy::types::{
    Invite, Prepared, Snapshot, Verdict,
};
use ingress_policy::{Guest, Rules};

/// The reason of this policy's refusals.
const REFUSED: &str = "country_not_allowed";

/// The setting naming the prefixes for every tenant; `allowed_prefixes.<tenant>` overrides it.
const SETTING: &str = "allowed_prefixes";

/// Country calling codes: `+` and 1 to 3 digits, the first not 0 (ITU-T E.164).
fn check_prefix(prefix: &str) -> Result<(), String> {
    let digits = prefix
        .strip_prefix('+')
        .ok_or_else(|| format!("{prefix:?} does not start with +"))?;
    let valid = (1..=3).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(())
    } else {
        Err(format!("{prefix:?} is not a country calling code"))
    }
}

fn prefixes(rules: &Rules, tenant: &str) -> Vec<String> {
    rules
        .setting(&format!("{SETTING}.{tenant}"))
        .or_else(|| rules.setting(SETTING))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The policy.
pub struct CountryPolicy;

impl Guest for CountryPolicy {
    fn load(snapshot: Snapshot) -> Result<Prepared, String> {
        let mut configured = false;
        for (key, value) in &snapshot.settings {
            if key == SETTING || key.starts_with(&format!("{SETTING}.")) {
                configured = true;
                for prefix in value.split_whitespace() {
                    check_prefix(prefix).map_err(|e| format!("{key}: {e}"))?;
                }
            }
        }
        if !configured {
            return Err(format!("settings: {SETTING} is required"));
        }
        let rules = Rules::load(snapshot)?.with_reasons(&[REFUSED]);
        let prepared = rules.prepare()?;
        ingress_policy::keep(rules);
        Ok(prepared)
    }

    fn decide(invite: Invite) -> Verdict {
        ingress_policy::with_rules(|rules| match rules.decide(&invite) {
            Verdict::Forward(slot) => {
                let tenant = rules.tenant_of(slot).unwrap_or_default();
                let allowed = prefixes(rules, tenant)
                    .iter()
                    .any(|prefix| invite.from_user().starts_with(prefix.as_str()));
                if allowed {
                    Verdict::Forward(slot)
                } else {
                    rules.reject(403, REFUSED)
                }
            }
            other => other,
        })
    }
}

/// The component's exports; the generated glue is `unsafe` by nature (raw canonical ABI).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod exports {
    use super::CountryPolicy;
    ingress_policy::export_policy!(CountryPolicy);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_country_calling_codes() {
        for good in ["+1", "+44", "+358"] {
            assert!(check_prefix(good).is_ok(), "{good}");
        }
        for bad in ["1", "+", "+0", "+1234", "+4a"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
