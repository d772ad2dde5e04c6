//! Seed 002: SIP connections, `POST /sip-connections` and `PATCH /sip-connections/{id}`.

use crate::json::Value;
use serde::Serialize;

use super::text::{Identifier, Label, SipUser};
use super::text_enum;
use crate::host::Host;
use crate::json::{FieldErrors, FromJson, Object, Patch, Pointer, Port};
use crate::secret::Secret;

text_enum! {
    /// seed 002 `settings.transport`: "The transport protocol (e.g. TCP)".
    ConnectionTransport {
        /// UDP.
        Udp = "UDP",
        /// TCP.
        Tcp = "TCP",
        /// TLS.
        Tls = "TLS",
    }
}

/// `POST /sip-connections`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SipConnectionCreate {
    /// "The agent to use for incoming calls on this connection." Required.
    pub agent_id: Identifier,
    /// "A label for this connection."
    pub name: Option<Label>,
    /// The SIP credentials. Required.
    pub settings: ConnectionSettings,
}

impl FromJson for SipConnectionCreate {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let agent_id = object.required("agentId", errors);
        let name = object.optional("name", errors);
        let settings = object.required("settings", errors);
        object.finish(errors);
        Some(Self {
            agent_id: agent_id?,
            name: name?,
            settings: settings?,
        })
    }
}

/// `settings` of a SIP connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSettings {
    /// "Your SIP provider's server address." Required.
    pub server: Host,
    /// "The SIP server port (typically 5060)." Required.
    pub port: Port,
    /// "The SIP domain." Required.
    pub domain: Host,
    /// "Your SIP account username." Required.
    pub username: SipUser,
    /// "Only sent on creation — not returned in responses." Required; write-only.
    #[serde(skip_serializing)]
    pub password: Secret,
    /// Required.
    pub transport: ConnectionTransport,
    /// "A unique identifier for this connection on your SIP server. Not a phone number."
    pub caller_id: Option<SipUser>,
}

impl FromJson for ConnectionSettings {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let server = object.required("server", errors);
        let port = object.required("port", errors);
        let domain = object.required("domain", errors);
        let username = object.required("username", errors);
        let password = object.required("password", errors);
        let transport = object.required("transport", errors);
        let caller_id = object.optional("callerId", errors);
        object.finish(errors);
        Some(Self {
            server: server?,
            port: port?,
            domain: domain?,
            username: username?,
            password: password?,
            transport: transport?,
            caller_id: caller_id?,
        })
    }
}

/// `PATCH /sip-connections/{id}`: any subset of the fields; at least one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SipConnectionPatch {
    /// A new agent.
    pub agent_id: Option<Identifier>,
    /// A new name, or `Clear` to remove it.
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub name: Patch<Label>,
    /// Changed settings.
    pub settings: Option<ConnectionSettingsPatch>,
}

/// Reads a field that a PATCH may change but not remove (it is required on the resource).
pub(crate) fn not_clearable<T: FromJson>(
    object: &mut Object<'_, '_>,
    name: &'static str,
    errors: &mut FieldErrors,
) -> Option<Option<T>> {
    match object.patch(name, errors)? {
        Patch::Keep => Some(None),
        Patch::Set(value) => Some(Some(value)),
        Patch::Clear => {
            errors.push(&object.pointer(name), "is required and cannot be removed");
            None
        }
    }
}

impl FromJson for SipConnectionPatch {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        if object.is_empty() {
            errors.push(at, "a PATCH must change at least one field");
        }
        let agent_id = not_clearable(&mut object, "agentId", errors);
        let name = object.patch("name", errors);
        let settings = not_clearable(&mut object, "settings", errors);
        object.finish(errors);
        Some(Self {
            agent_id: agent_id?,
            name: name?,
            settings: settings?,
        })
    }
}

/// The settings a PATCH may change; none may be removed, as all but `callerId` are required.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSettingsPatch {
    /// New server.
    pub server: Option<Host>,
    /// New port.
    pub port: Option<Port>,
    /// New domain.
    pub domain: Option<Host>,
    /// New username.
    pub username: Option<SipUser>,
    /// New password (write-only).
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    /// New transport.
    pub transport: Option<ConnectionTransport>,
    /// New caller id.
    pub caller_id: Option<SipUser>,
}

impl FromJson for ConnectionSettingsPatch {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let server = not_clearable(&mut object, "server", errors);
        let port = not_clearable(&mut object, "port", errors);
        let domain = not_clearable(&mut object, "domain", errors);
        let username = not_clearable(&mut object, "username", errors);
        let password = not_clearable(&mut object, "password", errors);
        let transport = not_clearable(&mut object, "transport", errors);
        let caller_id = not_clearable(&mut object, "callerId", errors);
        object.finish(errors);
        Some(Self {
            server: server?,
            port: port?,
            domain: domain?,
            username: username?,
            password: password?,
            transport: transport?,
            caller_id: caller_id?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_body;

    const SEED_EXAMPLE: &[u8] = br#"{"agentId":"agent_abc123","name":"Main Support Line",
        "settings":{"server":"sip.your-provider.com","port":5060,"domain":"your-provider.com",
        "username":"your-sip-username","password":"your-sip-password","transport":"TCP",
        "callerId":"support-line-01"}}"#;

    // seed 002 "Create a SIP Connection": the example request.
    #[test]
    fn seed_002_connection_example() {
        let c: SipConnectionCreate = parse_body(SEED_EXAMPLE).expect("seed example");
        assert_eq!(c.settings.transport, ConnectionTransport::Tcp);
        assert_eq!(c.settings.port.as_u16(), 5060);
    }

    // seed 002: "settings.password ... Only sent on creation — not returned in responses."
    #[test]
    fn seed_002_password_is_not_returned() {
        let c: SipConnectionCreate = parse_body(SEED_EXAMPLE).expect("seed example");
        let json = serde_json::to_string(&c).expect("serialises");
        assert!(!json.contains("password"), "{json}");
        assert!(json.contains("your-sip-username"));
    }

    // seed 002: every settings field but callerId is Required = Yes.
    #[test]
    fn seed_002_required_settings_are_all_reported() {
        let errors = parse_body::<SipConnectionCreate>(br#"{"settings":{}}"#).expect_err("empty");
        for pointer in [
            "/agentId",
            "/settings/server",
            "/settings/port",
            "/settings/domain",
            "/settings/username",
            "/settings/password",
            "/settings/transport",
        ] {
            assert!(errors.has(pointer), "{pointer}: {errors}");
        }
        assert!(!errors.has("/settings/callerId"));
    }

    // seed 002 "Update a SIP connection": '{"name": "Updated Support Line"}'.
    #[test]
    fn seed_002_patch_example() {
        let p: SipConnectionPatch =
            parse_body(br#"{"name":"Updated Support Line"}"#).expect("seed example");
        assert!(matches!(p.name, Patch::Set(_)));
        assert_eq!(p.settings, None);
    }

    #[test]
    fn patch_must_change_something_and_cannot_remove_required_fields() {
        let errors = parse_body::<SipConnectionPatch>(b"{}").expect_err("empty patch");
        assert!(errors.has(""));
        let errors = parse_body::<SipConnectionPatch>(
            br#"{"agentId":null,"settings":{"port":null,"password":"","transport":"SCTP"}}"#,
        )
        .expect_err("removals");
        for pointer in [
            "/agentId",
            "/settings/port",
            "/settings/password",
            "/settings/transport",
        ] {
            assert!(errors.has(pointer), "{pointer}: {errors}");
        }
        let p: SipConnectionPatch = parse_body(br#"{"name":null,"settings":{"password":"new"}}"#)
            .expect("clear name, new password");
        assert_eq!(p.name, Patch::Clear);
        assert!(
            !serde_json::to_string(&p)
                .expect("serialises")
                .contains("new")
        );
    }
}
