//! The admission settings (`[admission]`, `[policy]` and the tenants of the configuration file):
//! what a policy is given and how it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use policy::AccessList;
use policy::admission::{DeniedSource, Tenant};
use serde::Deserialize;

use super::wasm::{Limits, MAX_MEMORY_BYTES, wit};

/// What admission decides with.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Tenants, agents and access lists.
    pub tenants: Vec<Tenant>,
    /// What sources outside the called tenant's list get.
    pub denied: DeniedSource,
    /// The admission policy.
    pub policy: PolicyConfig,
}

impl AdmissionConfig {
    /// The configuration as a policy sees it.
    pub fn snapshot(&self) -> wit::Snapshot {
        super::snapshot(&self.tenants, self.denied, &self.policy.settings)
    }

    /// Every source some tenant allows.
    pub fn known_sources(&self) -> AccessList {
        AccessList::new(self.tenants.iter().flat_map(|t| t.access.iter()))
    }
}

/// The admission policy module and how it runs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPolicy {
    module: Option<PathBuf>,
    deadline_ms: u64,
    memory_limit_mib: usize,
    failure_status: u16,
    headers: Vec<String>,
    settings: BTreeMap<String, String>,
    cache_dir: Option<PathBuf>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            module: None,
            deadline_ms: limits.deadline.as_millis() as u64,
            memory_limit_mib: limits.memory_bytes >> 20,
            failure_status: 503,
            headers: Vec::new(),
            settings: BTreeMap::new(),
            cache_dir: None,
        }
    }
}

/// The admission policy and how it runs (`[policy]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// The policy module; [`default_module`] when not configured.
    pub module: PathBuf,
    /// The deadline of one decision and the memory an instance may use.
    pub limits: Limits,
    /// What a caller gets when the policy fails: 500 or 503.
    pub failure_status: u16,
    /// The header fields passed to the policy with each INVITE.
    pub headers: Vec<String>,
    /// Free-form settings passed to the policy.
    pub settings: Vec<(String, String)>,
    /// Where compiled modules are cached; nowhere when `None`.
    pub cache_dir: Option<PathBuf>,
}

/// Where the default policy is when none is configured: `target/wasm/ingress_policy.wasm` of
/// the build the executable comes from (`target/<profile>/sip-ingress`), as `cargo xtask wasm`
/// puts it there.
pub fn default_module() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let build = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    build.join("wasm").join("ingress_policy.wasm")
}

/// The per-user cache directory for compiled policies (`$XDG_CACHE_HOME` or `~/.cache`).
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("trunkguard").join("policy"))
}

impl PolicyConfig {
    /// The checked `[policy]` table; what is wrong goes to `problems`, each naming its key.
    pub(crate) fn check(raw: RawPolicy, problems: &mut Vec<String>) -> Self {
        if !(1..=1000).contains(&raw.deadline_ms) {
            problems.push("policy.deadline_ms: must be 1 to 1000".to_owned());
        }
        if !(1..=MAX_MEMORY_BYTES >> 20).contains(&raw.memory_limit_mib) {
            problems.push("policy.memory_limit_mib: must be 1 to 4096".to_owned());
        }
        if ![500, 503].contains(&raw.failure_status) {
            problems.push("policy.failure_status: must be 500 or 503".to_owned());
        }
        for (i, name) in raw.headers.iter().enumerate() {
            if name.is_empty() || !name.bytes().all(crate::sip::head::is_token_char) {
                problems.push(format!(
                    "policy.headers[{i}]: {name:?} is not a header name"
                ));
            }
        }
        Self {
            module: raw.module.unwrap_or_else(default_module),
            limits: Limits {
                deadline: Duration::from_millis(raw.deadline_ms),
                memory_bytes: raw.memory_limit_mib << 20,
            },
            failure_status: raw.failure_status,
            headers: raw
                .headers
                .iter()
                .map(|name| crate::sip::head::canonical_name(name))
                .collect(),
            settings: raw.settings.into_iter().collect(),
            cache_dir: raw.cache_dir.or_else(default_cache_dir),
        }
    }
}
