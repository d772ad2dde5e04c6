//! trunkguard's SIP ingress.
//!
//! * [`config`]: the TOML configuration, with the demo world embedded.
//! * [`proxy`]: the proxy core: admission, forwarding, dialogs, responses, without sockets.
//! * [`metrics`]: counters and gauges, exposed as Prometheus text.
//! * [`tcp`]: SIP over TCP connections, feeding the proxy core of their listening address.
//! * [`sip`]: SIP messages as received: framing by Content-Length, a normalising header layer
//!   (compact names, folded lines, white space around `:`) that keeps every header's place in the
//!   received bytes, and the stateless checks a proxy makes before it routes anything (RFC 3261
//!   sections 8.2 and 16.3), measured against the RFC 4475 and RFC 5118 torture messages.

pub mod config;
pub mod metrics;
pub mod proxy;
pub mod sip;
pub mod tcp;
