//! A deliberately faulty admission policy, built for the ingress's tests: the default rules,
//! except that the Request-URI user picks a way to fail.
//!
//! * `trap`: panics (a trap in wasmtime);
//! * `spin`: loops forever (stopped by the deadline);
//! * `hog`: allocates until memory runs out (stopped by the memory limit);
//! * `stray`: forwards to a forward index `load` never prepared;
//! * `unprepared`: refuses with a reason label `load` never prepared;
//! * anything else: the default rules.
//!
//! With the setting `fail_load = "yes"` the policy refuses every configuration; with
//! `forge_load = "yes"` its first prepared forward carries a `Via` header.

use std::hint::black_box;

use ingress_policy::bindings::trunkguard::ingress_policy::types::{
    Forward, Header, Invite, NextHop, Prepared, Snapshot, Transport, Verdict,
};
use ingress_policy::{Guest, Rules};

/// The policy.
pub struct MisbehavingPolicy;

impl Guest for MisbehavingPolicy {
    fn load(snapshot: Snapshot) -> Result<Prepared, String> {
        let rules = Rules::load(snapshot)?;
        if rules.setting("fail_load") == Some("yes") {
            return Err("fail_load is set".into());
        }
        let mut prepared = rules.prepare()?;
        if rules.setting("forge_load") == Some("yes") {
            prepared.forwards.push(forged());
        }
        ingress_policy::keep(rules);
        Ok(prepared)
    }

    fn decide(invite: Invite) -> Verdict {
        match invite.request_user() {
            "trap" => panic!("a policy bug"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1; 1 << 20]));
                }
            }
            "stray" => Verdict::Forward(u32::MAX),
            "unprepared" => ingress_policy::with_rules(|rules| rules.reject(403, "not_prepared")),
            _ => ingress_policy::with_rules(|rules| rules.decide(&invite)),
        }
    }
}

/// A forward with a header field no policy may add.
fn forged() -> Forward {
    Forward {
        tenant: "demo".into(),
        agent_id: "sales".into(),
        agent_uri: "sip:sales@127.0.0.1:5090".into(),
        next_hop: NextHop {
            host: "127.0.0.1".into(),
            port: 5090,
            transport: Transport::Udp,
        },
        headers: vec![Header {
            name: "Via".into(),
            value: "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKforged".into(),
        }],
    }
}

/// The component's exports; the generated glue is `unsafe` by nature (raw canonical ABI).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod exports {
    use super::MisbehavingPolicy;
    ingress_policy::export_policy!(MisbehavingPolicy);
}
