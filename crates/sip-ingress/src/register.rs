//! The registration client (RFC 3261 section 10.2): the ingress registers agents to customers'
//! PBXs and SIP providers as extensions, as Kamailio's `uac_reg` and every SIP phone do, so the
//! PBX sends the extension's calls to the ingress.
//!
//! * [`binding`]: one binding's REGISTER transactions, without sockets: the request built, the
//!   registrar's answers handled (2xx, digest challenges, 423, failures), the refresh before the
//!   grant ends, retries with backoff, and the status that only a registrar's answer proves.
//!
//! Not yet here (issue 21): the runner that drives bindings over the ingress's transports from the
//! store, the API's status and errors, and
//! metrics. Calls arriving through a binding's contact are admitted by the policy already
//! (`policy::admission`, trusted from the addresses in `admission::registrars`).

pub mod binding;
