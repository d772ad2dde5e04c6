//! What the store asks the registration client to register: one binding per stored SIP
//! registration (seed 000) and per SIP connection (seed 002), read from its record.
//!
//! Seed 002: a connection's REGISTERs go to its `server` at its `port`, for its `domain`.
//!
//! Seed 000: REGISTERs go to the registration's `proxy` when it has one ("if your SIP provider
//! requires routing through a proxy"), else to its domain, at the proxy's own port, else the
//! registration's `port`, else 5060. A `tls` registration cannot be run until the ingress speaks
//! TLS (issue 24); it is reported `Failed` with a message saying so, never sent over another
//! transport.

use policy::Host;
use policy::body::{
    ConnectionSettings, ConnectionTransport, RegistrationTransport, SipRegistration,
};

use super::binding::Account;
use super::status::BindingKey;
use crate::sip::Transport;
use crate::store::{ConnectionRecord, RegistrationRecord};

/// The port REGISTERs go to when nothing names one (RFC 3261 section 19.1.2).
const DEFAULT_PORT: u16 = 5060;

/// One binding the client is to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSpec {
    /// What is registered, with which credentials, over which transport.
    pub account: Account,
    /// The user part of the binding's Contact (the store's token for it).
    pub contact_user: String,
    /// Where REGISTERs go: the registration's proxy, else its domain.
    pub registrar: Host,
    /// The port they go to.
    pub port: u16,
}

/// A binding the store holds: runnable, or why it cannot be run.
pub type Desired = (BindingKey, Result<BindingSpec, String>);

/// The bindings of `records` and `connections`.
pub fn desired(records: &[RegistrationRecord], connections: &[ConnectionRecord]) -> Vec<Desired> {
    let registrations = records.iter().map(|record| {
        let key = BindingKey::Registration {
            tenant: record.tenant.clone(),
            agent_id: record.agent_id.clone(),
        };
        (key, of_registration(&record.registration, &record.contact))
    });
    let connections = connections.iter().map(|record| {
        let key = BindingKey::Connection {
            tenant: record.tenant.clone(),
            id: record.id.clone(),
        };
        (
            key,
            of_connection(&record.connection.settings, &record.contact),
        )
    });
    registrations.chain(connections).collect()
}

/// The reason a TLS binding cannot run yet.
fn no_tls() -> String {
    "transport tls is not available yet: this ingress registers over udp and tcp only until \
     SIP over TLS arrives (issue 24)"
        .to_owned()
}

/// The binding of a connection's `settings`, whose Contact user is `contact_user`.
fn of_connection(settings: &ConnectionSettings, contact_user: &str) -> Result<BindingSpec, String> {
    let transport = match settings.transport {
        ConnectionTransport::Udp => Transport::Udp,
        ConnectionTransport::Tcp => Transport::Tcp,
        ConnectionTransport::Tls => return Err(no_tls()),
    };
    Ok(BindingSpec {
        account: Account {
            user: settings.username.as_str().to_owned(),
            domain: settings.domain.to_string(),
            auth_username: None,
            password: settings.password.clone(),
            transport,
        },
        contact_user: contact_user.to_owned(),
        registrar: settings.server.clone(),
        port: settings.port.as_u16(),
    })
}

/// The binding of `registration`, whose Contact user is `contact_user`.
fn of_registration(
    registration: &SipRegistration,
    contact_user: &str,
) -> Result<BindingSpec, String> {
    let transport = match registration.transport {
        None | Some(RegistrationTransport::Udp) => Transport::Udp,
        Some(RegistrationTransport::Tcp) => Transport::Tcp,
        Some(RegistrationTransport::Tls) => return Err(no_tls()),
    };
    let port = registration.port.map(|port| port.as_u16());
    let (registrar, port) = match &registration.proxy {
        Some(proxy) => (proxy.host.clone(), proxy.port.or(port)),
        None => (registration.domain.clone(), port),
    };
    Ok(BindingSpec {
        account: Account {
            user: registration.username.as_str().to_owned(),
            domain: registration.domain.to_string(),
            auth_username: registration
                .auth_username
                .as_ref()
                .map(|name| name.as_str().to_owned()),
            password: registration.password.clone(),
            transport,
        },
        contact_user: contact_user.to_owned(),
        registrar,
        port: port.unwrap_or(DEFAULT_PORT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> RegistrationRecord {
        let registration: SipRegistration = policy::parse_body(json.as_bytes())
            .unwrap_or_else(|e| panic!("valid registration: {e:?}"));
        RegistrationRecord {
            tenant: "t1".into(),
            agent_id: "a1".into(),
            registration,
            contact: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    fn spec(json: &str) -> Result<BindingSpec, String> {
        desired(&[record(json)], &[]).remove(0).1
    }

    #[test]
    fn registers_go_to_the_domain_at_5060_over_udp_by_default() {
        let spec = spec(r#"{"domain":"pbx.example","username":"1001","password":"pw"}"#)
            .expect("runnable");
        assert_eq!(spec.registrar, "pbx.example".parse().expect("host"));
        assert_eq!(spec.port, 5060);
        assert_eq!(spec.account.transport, Transport::Udp);
        assert_eq!(spec.account.user, "1001");
        assert_eq!(spec.account.domain, "pbx.example");
        assert_eq!(spec.contact_user, "0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn a_proxy_takes_the_registers_and_its_own_port_wins_over_the_registrations() {
        let with_port = spec(
            r#"{"domain":"pbx.example","username":"1001","password":"pw",
                "proxy":"192.0.2.9:5080","port":5070,"transport":"tcp","authUsername":"auth1"}"#,
        )
        .expect("runnable");
        assert_eq!(with_port.registrar, "192.0.2.9".parse().expect("host"));
        assert_eq!(with_port.port, 5080);
        assert_eq!(with_port.account.transport, Transport::Tcp);
        assert_eq!(with_port.account.auth_username.as_deref(), Some("auth1"));
        assert_eq!(
            with_port.account.domain, "pbx.example",
            "the AOR keeps the domain"
        );
        let without = spec(
            r#"{"domain":"pbx.example","username":"1001","password":"pw",
                "proxy":"proxy.example","port":5070}"#,
        )
        .expect("runnable");
        assert_eq!(without.registrar, "proxy.example".parse().expect("host"));
        assert_eq!(without.port, 5070);
    }

    #[test]
    fn a_tls_registration_is_refused_with_a_reason_and_no_password() {
        let refused = spec(
            r#"{"domain":"pbx.example","username":"1001","password":"hunter2","transport":"tls"}"#,
        )
        .expect_err("tls cannot run yet");
        assert!(refused.contains("tls"), "{refused}");
        assert!(!refused.contains("hunter2"));
    }
}
