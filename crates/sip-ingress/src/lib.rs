//! trunkguard's SIP ingress, one module a concern, from the messages up to the wiring:
//!
//! * [`sip`]: SIP messages as received: framing by Content-Length, a normalising header layer
//!   (compact names, folded lines, white space around `:`) that keeps every header's place in the
//!   received bytes, Via and URI reading, the stateless checks a proxy makes before it routes
//!   anything (RFC 3261 sections 8.2 and 16.3, measured against the RFC 4475 and RFC 5118
//!   torture messages), and the crate's one `Transport`.
//! * [`admission`]: the admission policy, a wasm component run in wasmtime, its native oracle
//!   and its settings.
//! * [`proxy`]: the proxy core, without sockets: admission, forwarding, INVITE transactions,
//!   dialogs, name look-ups awaited, responses.
//! * [`register`]: the registration client, registering agents to customers' PBXs.
//! * [`transport`]: the sockets around the proxy cores: UDP, TCP, name lookups.
//! * [`random`]: unguessable values from the operating system; [`clock`]: the wall clock in
//!   unix seconds, where a report must carry it.
//! * [`report`]: what the proxy did, as logs and metrics; [`metrics`]: the registry of counters
//!   and gauges, served as Prometheus text.
//! * [`api`]: the control-plane API (axum), tenant-scoped by `x-tenant-id`; [`store`]: what
//!   tenants configure through it (SQLite).
//! * [`config`]: the TOML configuration, composed of each module's own settings, with the demo
//!   world embedded; [`reload`]: hot reload of the policy and configuration (SIGHUP, file
//!   changes); [`policy_cases`]: `sip-ingress policy test`, a policy run against a case file.

pub mod admission;
pub mod api;
pub mod clock;
pub mod config;
pub mod metrics;
pub mod policy_cases;
pub mod proxy;
pub mod random;
pub mod register;
pub mod reload;
pub mod report;
pub mod sip;
pub mod store;
pub mod transport;
