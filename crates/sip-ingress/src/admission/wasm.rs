//! The wasmtime host of admission policies.
//!
//! One [`PolicyEngine`] per process: a wasmtime `Engine` with the pooling allocator and epoch
//! interruption, and a thread that advances the epoch every millisecond. A policy module is
//! compiled once into a [`CompiledPolicy`] (the machine code cached on disk, keyed by the
//! module's SHA-256 and the engine's compatibility hash, so a restart or a reload of the same
//! module does not compile again). A [`PolicyInstance`] is one store with its instance, loaded
//! with a configuration snapshot and reused for every decision of a proxy core; it keeps the
//! forwards and reasons the policy prepared at load, checked once, which its decisions name by
//! index.
//!
//! Policies are sandboxed: they get no imports but a random seed (any other WASI function a
//! module imports traps when called), each call has a deadline, and each store a memory limit. A call that traps or
//! overruns fails; the caller throws the instance away.

use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap,
};

use super::{Facts, Prepared, Verdict};

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../ingress-policy/wit",
        world: "ingress-policy",
    });
}

/// The component's types, as generated from the WIT world.
pub use bindings::trunkguard::ingress_policy::types as wit;
use bindings::{IngressPolicy, IngressPolicyPre};

/// How often the epoch advances: the resolution of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Loading a snapshot indexes every tenant and agent, which takes longer than a decision.
const LOAD_DEADLINE: Duration = Duration::from_secs(10);

/// The largest memory limit a configuration may set (the store limit enforces the configured
/// one; this only sizes the pool's slots).
pub const MAX_MEMORY_BYTES: usize = 4096 << 20;

/// Component instances the pool holds: every proxy core's, the ones being built on reload, and
/// those of `policy test` runs.
const POOL_INSTANCES: u32 = 32;

/// What went wrong with a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// The module is not a valid component of the ingress-policy world.
    Compile(String),
    /// It could not be instantiated.
    Instantiate(String),
    /// Its `load` refused the configuration.
    Refused(String),
    /// A call ran past its deadline.
    Deadline,
    /// A call trapped (a panic, an out-of-bounds access, memory exhausted, a WASI call...).
    Trap(String),
    /// It returned a verdict, or prepared a forward or reason, the ingress cannot act on.
    Invalid(String),
}

impl PolicyError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Compile(_) => "compile",
            PolicyError::Instantiate(_) => "instantiate",
            PolicyError::Refused(_) => "refused",
            PolicyError::Deadline => "deadline",
            PolicyError::Trap(_) => "trap",
            PolicyError::Invalid(_) => "invalid_verdict",
        }
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::Compile(e) => write!(f, "not an ingress policy component: {e}"),
            PolicyError::Instantiate(e) => write!(f, "cannot instantiate the policy: {e}"),
            PolicyError::Refused(e) => write!(f, "the policy refused the configuration: {e}"),
            PolicyError::Deadline => f.write_str("the policy ran past its deadline"),
            PolicyError::Trap(e) => write!(f, "the policy trapped: {e}"),
            PolicyError::Invalid(e) => write!(f, "the policy's answer cannot be acted on: {e}"),
        }
    }
}

impl std::error::Error for PolicyError {}

/// How long a decision may run and how much memory an instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The deadline of one decision.
    pub deadline: Duration,
    /// The most linear memory an instance may have, in bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(5),
            memory_bytes: 128 << 20,
        }
    }
}

fn ticks(duration: Duration) -> u64 {
    // The current tick is partly over: one more keeps the deadline from cutting short.
    (duration.as_micros() / EPOCH_TICK.as_micros()) as u64 + 1
}

/// Stops the epoch thread when the engine and every policy compiled by it are gone.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The process's wasmtime engine for policies.
pub struct PolicyEngine {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    /// Shared with every compiled policy: deadlines work as long as anything can run.
    ticker: Arc<Ticker>,
}

struct StoreState {
    limits: StoreLimits,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl PolicyEngine {
    /// An engine caching compiled modules in `cache_dir` when given.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PolicyError> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(MAX_MEMORY_BYTES);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config)
            .map_err(|e| PolicyError::Instantiate(format!("cannot build the engine: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticking = engine.clone();
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PolicyError::Instantiate(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self {
            engine,
            cache_dir,
            ticker: Arc::new(Ticker(stop)),
        })
    }

    /// The cache file of a module: its hash and the engine's compatibility hash.
    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let mut hasher = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let dir = self.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish())))
    }

    fn cached(&self, path: &Path) -> Option<Component> {
        // Read, not mapped: a mapped file truncated by someone else would crash the process.
        let artifact = std::fs::read(path).ok()?;
        // SAFETY: wasmtime requires that a deserialised artifact was produced by
        // `precompile_component` of a compatible engine and not altered since. Cache files are
        // written only by `store_cached` below (whole, then renamed into place), into a
        // directory the operator gives the ingress, under a name binding the module hash and
        // the engine's compatibility hash; wasmtime itself checks the version and configuration
        // recorded in the artifact and refuses truncated ones.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &artifact) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring a policy cache file: {e}");
                None
            }
        }
    }

    fn store_cached(&self, path: &Path, artifact: &[u8]) {
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let partial = path.with_extension(format!("partial-{}", std::process::id()));
                std::fs::write(&partial, artifact)?;
                std::fs::rename(&partial, path)
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot cache the compiled policy: {e}");
        }
    }

    /// Compiles a policy module, or takes it from the cache.
    pub fn compile(&self, module: &[u8]) -> Result<CompiledPolicy, PolicyError> {
        let sha256 = sha256_hex(module);
        let cache = self.cache_path(&sha256);
        let component = match cache.as_deref().and_then(|path| self.cached(path)) {
            Some(component) => component,
            None => {
                let artifact = self
                    .engine
                    .precompile_component(module)
                    .map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
                if let Some(path) = &cache {
                    self.store_cached(path, &artifact);
                }
                // SAFETY: `artifact` was produced just above by this engine.
                #[allow(unsafe_code)]
                let component = unsafe { Component::deserialize(&self.engine, &artifact) };
                component.map_err(|e| PolicyError::Compile(format!("{e:#}")))?
            }
        };
        let mut linker = Linker::new(&self.engine);
        let seed_imports = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .filter(|name| name.starts_with("wasi:random/insecure-seed@0.2."))
            .collect::<Vec<_>>();
        for name in seed_imports {
            define_insecure_seed(&mut linker, &name)
                .map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        }
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(IngressPolicyPre::new)
            .map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        Ok(CompiledPolicy {
            sha256,
            pre,
            _ticker: Arc::clone(&self.ticker),
        })
    }
}

/// `wasi:random/insecure-seed`, the one WASI function policies get: Rust's `HashMap` seeds its
/// hasher with it, which keeps tables keyed by callers' input resistant to collision floods.
/// The seed comes from the host's own hasher keys, random per process and per call.
fn define_insecure_seed(linker: &mut Linker<StoreState>, name: &str) -> wasmtime::Result<()> {
    linker
        .instance(name)?
        .func_wrap("insecure-seed", |_, (): ()| {
            let random = || {
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            };
            Ok(((random(), random()),))
        })
}

/// A compiled policy module, ready to instantiate.
pub struct CompiledPolicy {
    sha256: String,
    pre: IngressPolicyPre<StoreState>,
    _ticker: Arc<Ticker>,
}

impl CompiledPolicy {
    /// The SHA-256 of the module, in hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// A new instance with `snapshot` loaded.
    pub fn instantiate(
        &self,
        snapshot: &wit::Snapshot,
        limits: Limits,
    ) -> Result<PolicyInstance, PolicyError> {
        let engine = self.pre.engine();
        let state = StoreState {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .build(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(LOAD_DEADLINE));
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| PolicyError::Instantiate(format!("{e:#}")))?;
        let prepared = match bindings.call_load(&mut store, snapshot) {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(refusal)) => return Err(PolicyError::Refused(refusal)),
            Err(e) => return Err(call_error(e)),
        };
        let prepared = Prepared::from_wit(prepared).map_err(PolicyError::Invalid)?;
        Ok(PolicyInstance {
            store,
            bindings,
            deadline: ticks(limits.deadline),
            prepared,
        })
    }
}

fn call_error(error: wasmtime::Error) -> PolicyError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PolicyError::Deadline,
        _ => PolicyError::Trap(format!("{error:#}")),
    }
}

/// A loaded policy instance, reused across decisions until a call fails.
pub struct PolicyInstance {
    store: Store<StoreState>,
    bindings: IngressPolicy,
    deadline: u64,
    /// What `load` prepared, checked.
    prepared: Prepared,
}

impl PolicyInstance {
    /// Decides one INVITE. After an error the instance must not be used again.
    pub fn decide(&mut self, facts: Facts) -> Result<Verdict, PolicyError> {
        self.store.set_epoch_deadline(self.deadline);
        let verdict = self
            .bindings
            .call_decide(&mut self.store, &facts.into_wit())
            .map_err(call_error)?;
        Verdict::from_wit(verdict, &self.prepared).map_err(PolicyError::Invalid)
    }
}
