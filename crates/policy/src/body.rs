//! Typed, fully validated request bodies of every control-plane endpoint in the seeds.
//!
//! Each body is read with [`crate::json::parse_body`], which reports *all* field errors at once,
//! each with a JSON Pointer. Unknown fields are errors (a misspelt optional field silently ignored
//! is a setting silently lost). Passwords are [`Secret`](crate::Secret)s and their fields are
//! skipped when a body is serialised, so serialising a body can never return a password.
//!
//! [`BodySchema`] names the bodies, so configuration (the edge filter's routes) can refer to them.

mod access;
mod agent;
mod custom_sip;
mod phone_number;
mod sip_connection;
mod sip_registration;
pub mod text;

pub use access::{IpAccessEntryBody, OutboundRouteBody};
pub use agent::{AgentBody, HumanHandoff, ProviderSettings, SipChannelConfig, TurnDetection};
pub use custom_sip::{CustomSipAccount, CustomSipAccountPatch, CustomSipTransport};
pub use phone_number::{
    AgentFeatures, DtmfConfig, MediaEncryption, PhoneNumberRegistration, Provider, TransferConfig,
    TransferTarget, TrunkTransport,
};
pub use sip_connection::{
    ConnectionSettings, ConnectionSettingsPatch, ConnectionTransport, SipConnectionCreate,
    SipConnectionPatch,
};
pub use sip_registration::{RegistrationTransport, SipRegistration, SipRegistrationView};
pub use text::{HeaderName, Identifier, Label, SipUser, XHeaderName};

use std::fmt;
use std::str::FromStr;

use crate::json::{FieldErrors, parse_body};

/// Declares an enum written in JSON as one of a fixed set of strings (matched exactly).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The spelling on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl $crate::json::FromJsonText for $name {
            fn from_text(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!("must be one of: {}", [$($text),+].join(", "))),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

/// Every request body schema, by the name configuration uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodySchema {
    /// `sip-registration`: PUT /agents/{agentId}/sip-registration (seed 000).
    SipRegistration,
    /// `ip-access-entry`: POST /sip/ip-access-list (seed 001).
    IpAccessEntry,
    /// `outbound-route`: POST /sip/outbound-routes (seed 001).
    OutboundRoute,
    /// `agent`: POST /agents (seed 002).
    Agent,
    /// `sip-channel-config`: PUT /agents/{agentId}/channels/sip (seed 002).
    SipChannelConfig,
    /// `sip-connection-create`: POST /sip-connections (seed 002).
    SipConnectionCreate,
    /// `sip-connection-patch`: PATCH /sip-connections/{connectionId} (seed 002).
    SipConnectionPatch,
    /// `custom-sip-account`: POST /custom-sip-accounts (seed 003).
    CustomSipAccount,
    /// `custom-sip-account-patch`: PATCH /custom-sip-accounts/{accountId} (seed 003).
    CustomSipAccountPatch,
    /// `phone-number-registration`: POST /agents/{agentId}/phone-numbers (seed 004).
    PhoneNumberRegistration,
}

impl BodySchema {
    /// Every schema, for listing in error messages and for tests.
    pub const ALL: [BodySchema; 10] = [
        BodySchema::SipRegistration,
        BodySchema::IpAccessEntry,
        BodySchema::OutboundRoute,
        BodySchema::Agent,
        BodySchema::SipChannelConfig,
        BodySchema::SipConnectionCreate,
        BodySchema::SipConnectionPatch,
        BodySchema::CustomSipAccount,
        BodySchema::CustomSipAccountPatch,
        BodySchema::PhoneNumberRegistration,
    ];

    /// The name configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            BodySchema::SipRegistration => "sip-registration",
            BodySchema::IpAccessEntry => "ip-access-entry",
            BodySchema::OutboundRoute => "outbound-route",
            BodySchema::Agent => "agent",
            BodySchema::SipChannelConfig => "sip-channel-config",
            BodySchema::SipConnectionCreate => "sip-connection-create",
            BodySchema::SipConnectionPatch => "sip-connection-patch",
            BodySchema::CustomSipAccount => "custom-sip-account",
            BodySchema::CustomSipAccountPatch => "custom-sip-account-patch",
            BodySchema::PhoneNumberRegistration => "phone-number-registration",
        }
    }

    /// Validates `body` against this schema, returning every problem found.
    pub fn validate(self, body: &[u8]) -> Result<(), FieldErrors> {
        match self {
            BodySchema::SipRegistration => parse_body::<SipRegistration>(body).map(drop),
            BodySchema::IpAccessEntry => parse_body::<IpAccessEntryBody>(body).map(drop),
            BodySchema::OutboundRoute => parse_body::<OutboundRouteBody>(body).map(drop),
            BodySchema::Agent => parse_body::<AgentBody>(body).map(drop),
            BodySchema::SipChannelConfig => parse_body::<SipChannelConfig>(body).map(drop),
            BodySchema::SipConnectionCreate => parse_body::<SipConnectionCreate>(body).map(drop),
            BodySchema::SipConnectionPatch => parse_body::<SipConnectionPatch>(body).map(drop),
            BodySchema::CustomSipAccount => parse_body::<CustomSipAccount>(body).map(drop),
            BodySchema::CustomSipAccountPatch => {
                parse_body::<CustomSipAccountPatch>(body).map(drop)
            }
            BodySchema::PhoneNumberRegistration => {
                parse_body::<PhoneNumberRegistration>(body).map(drop)
            }
        }
    }
}

impl fmt::Display for BodySchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A schema name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSchema(pub String);

impl fmt::Display for UnknownSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = BodySchema::ALL.iter().map(|s| s.name()).collect();
        write!(
            f,
            "unknown body schema {:?}; known: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownSchema {}

impl FromStr for BodySchema {
    type Err = UnknownSchema;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BodySchema::ALL
            .into_iter()
            .find(|schema| schema.name() == s)
            .ok_or_else(|| UnknownSchema(s.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for BodySchema {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for BodySchema {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for schema in BodySchema::ALL {
            assert_eq!(schema.name().parse(), Ok(schema));
        }
        assert!(
            "nope"
                .parse::<BodySchema>()
                .unwrap_err()
                .to_string()
                .contains("sip-registration")
        );
    }

    #[test]
    fn every_schema_refuses_a_non_object_with_a_root_pointer() {
        for schema in BodySchema::ALL {
            let errors = schema.validate(b"[]").expect_err(schema.name());
            assert_eq!(errors.as_slice()[0].pointer, "", "{schema}");
            let errors = schema.validate(b"{").expect_err(schema.name());
            assert!(
                errors.as_slice()[0].detail.contains("not valid JSON"),
                "{schema}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_found_in_objects_of_any_size_and_order() {
        let known = r#""domain":"sip.example.com","username":"1001","password":"s3cret""#;
        for extra in [0, 1, 60, 61, 62, 100] {
            let unknown: Vec<String> = (0..extra).map(|i| format!(r#""x{i}":1"#)).collect();
            let unknown = unknown.join(",");
            let separator = if extra == 0 { "" } else { "," };
            for body in [
                format!("{{{known}{separator}{unknown}}}"),
                format!("{{{unknown}{separator}{known}}}"),
            ] {
                let result = BodySchema::SipRegistration.validate(body.as_bytes());
                if extra == 0 {
                    assert!(result.is_ok(), "{body}");
                    continue;
                }
                let errors = result.expect_err("unknown fields");
                assert_eq!(errors.as_slice().len(), extra, "{body}");
                assert!(errors.has("/x0") && errors.has(&format!("/x{}", extra - 1)));
            }
        }
    }

    #[test]
    fn every_schema_refuses_unknown_fields() {
        for schema in BodySchema::ALL {
            let errors = schema
                .validate(br#"{"surprise": 1}"#)
                .expect_err(schema.name());
            assert!(errors.has("/surprise"), "{schema}: {errors}");
        }
    }
}
