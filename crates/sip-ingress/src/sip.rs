//! SIP messages as received.
//!
//! Departure from DESIGN.md: the design has `rsip` parse messages behind a normalising layer.
//! Measured against the conformance material, rsip 0.4 cannot be that parser even after
//! normalisation: it fails on every IPv6 reference (RFC 5118 `ipv6-good`, `port-unambiguous`,
//! `via-received-param-*`: "could not parse part: invalid digit found in string") and on a `;`
//! in a Request-URI user part (RFC 4475 `semiuri`). The ingress must serve IPv6, so it reads the
//! fields it needs itself, in these modules, and does not use rsip. So:
//!
//! 1. [`frame`] finds where a message ends: the blank line, then exactly Content-Length bytes
//!    of body kept as raw bytes (a datagram's extra octets are ignored, RFC 3261 section 18.3).
//! 2. [`head`] splits the header section into fields, unfolding continuation lines, expanding
//!    compact names and trimming white space, while remembering each field's byte range so a
//!    proxy can forward by editing the received bytes.
//! 3. [`check`] makes the stateless checks of RFC 3261 sections 8.2 and 16.3 and says what a
//!    proxy must answer (400, 416, 420, 483, 505) or whether to drop a malformed response.
//! 4. [`response`] builds the ingress's own answers; [`forward`] builds a forwarded request by
//!    editing the received bytes.
//! 5. [`via`] reads Via values (sent-by, where a response goes) and writes the ingress's own;
//!    [`uri`] reads the parts of URIs and name-addrs the proxy needs (user, host, parameters,
//!    display names, tags).
//!
//! [`Transport`] is the crate's one transport enum: the rules' own (`policy::Transport`), so an
//! agent's route and a message's hop never need converting.

pub mod check;
pub mod forward;
pub mod frame;
pub mod head;
pub mod response;
pub mod uri;
pub mod via;

pub use policy::Transport;
