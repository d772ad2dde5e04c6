//! Seed 000, "Set SIP Registration": `PUT /agents/{agentId}/sip-registration`.

use crate::json::Value;
use serde::Serialize;

use super::text::SipUser;
use super::text_enum;
use crate::dest_user::DestUser;
use crate::e164::E164;
use crate::host::{Host, HostPort};
use crate::json::{FieldErrors, FromJson, Object, Pointer, Port};
use crate::secret::Secret;

text_enum! {
    /// seed 000: "Transport protocol. Supported values: udp, tcp, tls".
    RegistrationTransport {
        /// "User Datagram Protocol (most common)".
        Udp = "udp",
        /// "Transmission Control Protocol".
        Tcp = "tcp",
        /// "Transport Layer Security (encrypted)".
        Tls = "tls",
    }
}

/// An agent's SIP registration as submitted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SipRegistration {
    /// "SIP domain for the registration", e.g. `sip.example.com`. Required.
    pub domain: Host,
    /// "SIP username for authentication. Also used as the extension number." Required.
    pub username: SipUser,
    /// "SIP password for authentication." Required; write-only.
    #[serde(skip_serializing)]
    pub password: Secret,
    /// "SIP proxy server address", e.g. `proxy.sip.example.com` (a port may be given).
    pub proxy: Option<HostPort>,
    /// "SIP port number", 5060 or 5061 commonly.
    pub port: Option<Port>,
    /// udp, tcp or tls.
    pub transport: Option<RegistrationTransport>,
    /// "Enable SIP SUBSCRIBE for presence/BLF".
    pub subscribe: Option<bool>,
    /// "Optional authentication username, if different from the SIP username."
    pub auth_username: Option<SipUser>,
    /// "DID (Direct Inward Dialing) number to send in the SIP INVITE", E.164.
    pub did: Option<E164>,
    /// "Optional value sent in the SIP X-Dest-User routing header"; empty means unset.
    pub x_dest_user: Option<DestUser>,
}

impl FromJson for SipRegistration {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let domain = object.required("domain", errors);
        let username = object.required("username", errors);
        let password = object.required("password", errors);
        let proxy = object.optional("proxy", errors);
        let port = object.optional("port", errors);
        let transport = object.optional("transport", errors);
        let subscribe = object.optional("subscribe", errors);
        let auth_username = object.optional("authUsername", errors);
        let did = object.optional("did", errors);
        let x_dest_user: Option<Option<Option<DestUser>>> = object.optional("xDestUser", errors);
        object.finish(errors);
        Some(Self {
            domain: domain?,
            username: username?,
            password: password?,
            proxy: proxy?,
            port: port?,
            transport: transport?,
            subscribe: subscribe?,
            auth_username: auth_username?,
            did: did?,
            x_dest_user: x_dest_user?.flatten(),
        })
    }
}

/// What the API returns for a registration: the submitted fields without the password, plus
/// the two the platform sets ("The extension field is automatically set to match username. The
/// registrationEnabled flag is automatically set to true when saving").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SipRegistrationView {
    /// The registration, whose password is never serialised.
    #[serde(flatten)]
    pub registration: SipRegistration,
    /// Always the username.
    pub extension: SipUser,
    /// Always true: saving a registration enables it.
    pub registration_enabled: bool,
}

impl From<SipRegistration> for SipRegistrationView {
    fn from(registration: SipRegistration) -> Self {
        Self {
            extension: registration.username.clone(),
            registration,
            registration_enabled: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_body;

    fn parse(body: &str) -> Result<SipRegistration, FieldErrors> {
        parse_body(body.as_bytes())
    }

    // seed 000: Required Fields domain ("sip.example.com"), username ("1001"), password.
    #[test]
    fn seed_000_minimal_registration() {
        let r = parse(r#"{"domain":"sip.example.com","username":"1001","password":"s3cret"}"#)
            .expect("valid");
        assert_eq!(r.username.as_str(), "1001");
        assert_eq!(r.password.expose(), "s3cret");
        assert_eq!(r.x_dest_user, None);
    }

    #[test]
    fn seed_000_every_optional_field() {
        let r = parse(
            r#"{"domain":"sip.example.com","username":"1001","password":"p",
                "proxy":"proxy.sip.example.com","port":5061,"transport":"tls","subscribe":true,
                "authUsername":"auth-1001","did":"+15551234567","xDestUser":"routing.user+1@example"}"#,
        )
        .expect("valid");
        assert_eq!(r.port.map(Port::as_u16), Some(5061));
        assert_eq!(r.transport, Some(RegistrationTransport::Tls));
        assert_eq!(
            r.did.map(|d| d.to_string()).as_deref(),
            Some("+15551234567")
        );
        assert_eq!(
            r.x_dest_user.map(|d| d.to_string()).as_deref(),
            Some("routing.user+1@example")
        );
    }

    #[test]
    fn seed_000_required_fields_are_all_reported() {
        let errors = parse("{}").expect_err("missing all");
        for pointer in ["/domain", "/username", "/password"] {
            assert!(errors.has(pointer), "{pointer}: {errors}");
        }
        assert_eq!(errors.as_slice().len(), 3);
    }

    // seed 000: "Empty strings are treated as unset."
    #[test]
    fn seed_000_empty_x_dest_user_is_unset() {
        let r = parse(r#"{"domain":"d.example","username":"u","password":"p","xDestUser":""}"#)
            .expect("valid");
        assert_eq!(r.x_dest_user, None);
    }

    #[test]
    fn every_bad_field_is_reported_with_its_pointer() {
        let errors = parse(
            r#"{"domain":"bad domain","username":"a@b","password":"","proxy":"::1","port":70000,
                "transport":"sctp","subscribe":"yes","authUsername":5,"did":"5551234567",
                "xDestUser":"has space","unknown":true}"#,
        )
        .expect_err("all bad");
        for pointer in [
            "/domain",
            "/username",
            "/password",
            "/proxy",
            "/port",
            "/transport",
            "/subscribe",
            "/authUsername",
            "/did",
            "/xDestUser",
            "/unknown",
        ] {
            assert!(errors.has(pointer), "{pointer} missing from {errors}");
        }
    }

    // seed 000: extension = username, registrationEnabled = true; passwords are write-only.
    #[test]
    fn view_sets_extension_and_never_serialises_the_password() {
        let r = parse(r#"{"domain":"sip.example.com","username":"1001","password":"hunter2"}"#)
            .expect("valid");
        let json = serde_json::to_value(SipRegistrationView::from(r)).expect("serialises");
        assert_eq!(json["extension"], "1001");
        assert_eq!(json["registrationEnabled"], true);
        assert!(json.get("password").is_none());
        assert!(!json.to_string().contains("hunter2"));
    }
}
