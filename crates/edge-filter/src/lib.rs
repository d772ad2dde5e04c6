//! trunkguard's edge filter: a proxy-wasm HTTP filter for Envoy that authenticates, validates and
//! rate-limits the control-plane API before a request reaches the backend.
//!
//! * [`config`]: the plugin configuration (routes with typed path parameters and body schemas,
//!   API key digests, rate limits), validated whole at load.
//! * [`filter`]: the request path, as functions of the request and a [`store::SharedStore`], so
//!   it is unit-tested natively and runs unchanged in Envoy.
//! * [`limiter`]: GCRA limits shared by all Envoy worker threads through compare-and-swap.
//! * `contexts` (wasm32 only): the proxy-wasm root and HTTP contexts (the SDK's word), built as
//!   `edge_filter.wasm`.
//!
//! Rejections are RFC 9457 problem documents from [`policy::problem`], the same shapes the
//! ingress's API uses.

pub mod config;
pub mod filter;
pub mod limiter;
pub mod store;
pub mod template;

#[cfg(target_arch = "wasm32")]
mod contexts;
