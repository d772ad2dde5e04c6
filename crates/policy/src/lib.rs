//! trunkguard's rules, shared by the Envoy edge filter and the SIP ingress policy.
//!
//! Everything here is a pure function of its inputs: no I/O, no clock (time is passed in), no
//! global state. The crate builds natively and for `wasm32-wasip1` / `wasm32-wasip2`, so a value
//! that the edge accepts at configuration time is exactly a value the ingress can use at call time.
//!
//! The rules come from the platform documents in `shared/seeds/` (cited as "seed NNN" below):
//!
//! * [`e164`]: phone numbers (`+` and 2 to 15 digits, first digit 1-9).
//! * [`dest_user`]: the `X-Dest-User` header value (seed 000).
//! * [`access_list`]: IP / CIDR access list entries and a logarithmic-time matcher (seed 001).
//! * [`route`]: the outbound / proxy route grammar of seed 001.
//! * [`body`]: typed, fully validated request bodies of every control-plane endpoint.
//! * [`gcra`]: the generic cell rate algorithm with its state in a single `u64`.
//! * [`admission`]: which initial INVITEs the SIP ingress forwards, and to which agent.
//! * [`digest`]: SIP digest authentication arithmetic (RFC 7616, RFC 8760): challenges read,
//!   responses computed, credentials written.

pub mod access_list;
pub mod admission;
pub mod body;
pub mod country;
pub mod dest_user;
pub mod digest;
pub mod e164;
pub mod gcra;
pub mod host;
pub mod json;
pub mod problem;
pub mod route;
pub mod secret;

pub use access_list::{AccessEntry, AccessEntryError, AccessList};
pub use body::BodySchema;
pub use dest_user::{DestUser, DestUserError};
pub use e164::{E164, E164Error};
pub use gcra::{Decision, Gcra, GcraError};
pub use host::{Host, HostError, HostPort};
pub use json::{FieldError, FieldErrors, FromJson, Pointer, parse_body};
pub use problem::{Problem, ProblemKind};
pub use route::{Route, RouteError, RoutePart, Transport};
pub use secret::Secret;
