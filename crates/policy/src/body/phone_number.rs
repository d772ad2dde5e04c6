//! Seed 004, "Register Phone Number": `POST /agents/{agentId}/phone-numbers`.
//!
//! The seed shows the nested objects' members in snake_case (`auto_navigate_ivr`,
//! `allowed_destinations`, ...) and names `outbound_enabled` as an alternative spelling the
//! frontend may send; the top-level names follow the same snake_case convention. Rules stated by
//! the seed and enforced here:
//!
//! * `phone_number` is E.164; `numbers`, `allowed_numbers` and `outbound_numbers` hold E.164s.
//! * `provider` is one of livekit, twilio, vonage, telnyx, bandwidth, custom.
//! * `transport` matches `^(AUTO|UDP|TCP|TLS)$`, `media_encryption` `^(DISABLE|ALLOW|REQUIRE)$`.
//! * `country_code` has two letters (an assigned ISO 3166-1 alpha-2 code).
//! * `ringing_timeout` is 1 to 300 s, `max_call_duration` 60 to 86 400 s.
//! * outbound calling needs `outbound_address` ("REQUIRED for outbound calling").
//! * Vonage outbound needs `auth_username` and `auth_password` ("REQUIRED for Vonage outbound")
//!   and the trunk domain form `{trunk}.sip-{region}.vonage.com` in `outbound_address`.
//! * `allowed_addresses` are IP addresses or CIDR blocks; `headers` are `X-*` headers.

use std::collections::BTreeMap;

use crate::json::Value;
use serde::Serialize;

use super::text::{HeaderName, Label, SipUser, XHeaderName};
use super::text_enum;
use crate::access_list::AccessEntry;
use crate::country::CountryCode;
use crate::e164::E164;
use crate::host::{Host, HostPort};
use crate::json::{FieldErrors, FromJson, FromJsonText, Object, OpaqueObject, Pointer, Ranged};
use crate::secret::Secret;

text_enum! {
    /// "SIP provider: livekit, twilio, vonage, telnyx, bandwidth, or custom".
    Provider {
        /// Numbers bought through LiveKit Cloud: no trunk configuration.
        Livekit = "livekit",
        /// Twilio.
        Twilio = "twilio",
        /// Vonage.
        Vonage = "vonage",
        /// Telnyx.
        Telnyx = "telnyx",
        /// Bandwidth.
        Bandwidth = "bandwidth",
        /// Any other SIP provider.
        Custom = "custom",
    }
}

text_enum! {
    /// "SIP transport protocol: AUTO, UDP, TCP, or TLS".
    TrunkTransport {
        /// Let the gateway pick.
        Auto = "AUTO",
        /// UDP.
        Udp = "UDP",
        /// TCP.
        Tcp = "TCP",
        /// TLS.
        Tls = "TLS",
    }
}

text_enum! {
    /// "Media encryption: DISABLE, ALLOW, or REQUIRE (ALLOW recommended)".
    MediaEncryption {
        /// No SRTP.
        Disable = "DISABLE",
        /// SRTP when offered.
        Allow = "ALLOW",
        /// SRTP only.
        Require = "REQUIRE",
    }
}

/// A SIP header value: no CR, LF or other control characters, at most 1024 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderValue(String);

impl FromJsonText for HeaderValue {
    fn from_text(text: &str) -> Result<Self, String> {
        crate::json::check_text(text, crate::json::MAX_TEXT_CHARS)?;
        Ok(HeaderValue(text.to_owned()))
    }
}

/// A transfer destination: `tel:` with an E.164 number, or a `sip:` / `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// `tel:+15105550100`.
    Tel(E164),
    /// `sip:user@host[:port]` (or `sips:`), kept as written.
    Sip(String),
}

impl FromJsonText for TransferTarget {
    fn from_text(text: &str) -> Result<Self, String> {
        if let Some(number) = text.strip_prefix("tel:") {
            return number
                .parse()
                .map(TransferTarget::Tel)
                .map_err(|e: crate::e164::E164Error| format!("tel: URI {e}"));
        }
        let rest = text
            .strip_prefix("sip:")
            .or_else(|| text.strip_prefix("sips:"))
            .ok_or("must be a tel: URI with an E.164 number or a sip: URI")?;
        let (user, host_port) = match rest.rsplit_once('@') {
            Some((user, host_port)) => (Some(user), host_port),
            None => (None, rest),
        };
        if let Some(user) = user {
            SipUser::from_text(user).map_err(|e| format!("sip: URI user part: {e}"))?;
        }
        host_port
            .parse::<HostPort>()
            .map_err(|e| format!("sip: URI host: {e}"))?;
        Ok(TransferTarget::Sip(text.to_owned()))
    }
}

impl Serialize for TransferTarget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TransferTarget::Tel(number) => serializer.collect_str(&format_args!("tel:{number}")),
            TransferTarget::Sip(uri) => serializer.serialize_str(uri),
        }
    }
}

/// The characters of a DTMF sequence: digits, `*`, `#`, `A`-`D`, and `w`/`W` for a pause.
fn check_dtmf_sequence(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > 64 {
        return Err("must be 1 to 64 characters long".to_owned());
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D' | 'w' | 'W')))
    {
        return Err(format!(
            "character {c:?} is not a DTMF tone; use 0-9 * # A-D, and w for a pause"
        ));
    }
    Ok(())
}

/// A DTMF sequence such as `*123#ww456`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DtmfSequence(String);

impl FromJsonText for DtmfSequence {
    fn from_text(text: &str) -> Result<Self, String> {
        check_dtmf_sequence(text)?;
        Ok(DtmfSequence(text.to_owned()))
    }
}

/// "DTMF and IVR configuration".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DtmfConfig {
    /// Navigate IVR menus automatically.
    pub auto_navigate_ivr: Option<bool>,
    /// Tones to send, e.g. `*123#ww456`.
    pub dtmf_sequence: Option<DtmfSequence>,
    /// Seconds to wait for tones, 1 to 300.
    pub dtmf_timeout: Option<Ranged<1, 300>>,
    /// Detect IVRs.
    pub ivr_detection: Option<bool>,
}

impl FromJson for DtmfConfig {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let auto_navigate_ivr = object.optional("auto_navigate_ivr", errors);
        let dtmf_sequence = object.optional("dtmf_sequence", errors);
        let dtmf_timeout = object.optional("dtmf_timeout", errors);
        let ivr_detection = object.optional("ivr_detection", errors);
        object.finish(errors);
        Some(Self {
            auto_navigate_ivr: auto_navigate_ivr?,
            dtmf_sequence: dtmf_sequence?,
            dtmf_timeout: dtmf_timeout?,
            ivr_detection: ivr_detection?,
        })
    }
}

/// "Call transfer configuration".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferConfig {
    /// Where calls may be transferred.
    pub allowed_destinations: Option<Vec<TransferTarget>>,
    /// Cold (blind) transfers.
    pub cold_transfer_enabled: Option<bool>,
    /// Ask before transferring.
    pub requires_confirmation: Option<bool>,
    /// The supervisor's number.
    pub supervisor_phone: Option<TransferTarget>,
    /// Warm (attended) transfers.
    pub warm_transfer_enabled: Option<bool>,
}

impl FromJson for TransferConfig {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let allowed_destinations = object.optional("allowed_destinations", errors);
        let cold_transfer_enabled = object.optional("cold_transfer_enabled", errors);
        let requires_confirmation = object.optional("requires_confirmation", errors);
        let supervisor_phone = object.optional("supervisor_phone", errors);
        let warm_transfer_enabled = object.optional("warm_transfer_enabled", errors);
        object.finish(errors);
        Some(Self {
            allowed_destinations: allowed_destinations?,
            cold_transfer_enabled: cold_transfer_enabled?,
            requires_confirmation: requires_confirmation?,
            supervisor_phone: supervisor_phone?,
            warm_transfer_enabled: warm_transfer_enabled?,
        })
    }
}

/// "Agent-specific telephony features".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentFeatures {
    /// Screen calls.
    pub call_screening: Option<bool>,
    /// Record calls.
    pub recording_enabled: Option<bool>,
    /// Analyse sentiment.
    pub sentiment_analysis: Option<bool>,
    /// Transcribe calls.
    pub transcription_enabled: Option<bool>,
}

impl FromJson for AgentFeatures {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let call_screening = object.optional("call_screening", errors);
        let recording_enabled = object.optional("recording_enabled", errors);
        let sentiment_analysis = object.optional("sentiment_analysis", errors);
        let transcription_enabled = object.optional("transcription_enabled", errors);
        object.finish(errors);
        Some(Self {
            call_screening: call_screening?,
            recording_enabled: recording_enabled?,
            sentiment_analysis: sentiment_analysis?,
            transcription_enabled: transcription_enabled?,
        })
    }
}

/// `POST /agents/{agentId}/phone-numbers`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhoneNumberRegistration {
    /// "E.164 format phone number (e.g., +15551234567)". Required.
    pub phone_number: E164,
    /// The SIP provider. Required.
    pub provider: Provider,
    /// "Phone numbers on this trunk (defaults to [phone_number])".
    pub numbers: Option<Vec<E164>>,
    /// "Allowed IP addresses (empty = allow all)".
    pub allowed_addresses: Option<Vec<AccessEntry>>,
    /// "Allowed caller numbers (empty = allow all)".
    pub allowed_numbers: Option<Vec<E164>>,
    /// "SIP authentication username (REQUIRED for Vonage outbound)".
    pub auth_username: Option<SipUser>,
    /// "SIP authentication password (REQUIRED for Vonage outbound)"; write-only.
    #[serde(skip_serializing)]
    pub auth_password: Option<Secret>,
    /// "Enable outbound calling (frontend may also send as 'outbound_enabled')".
    pub enable_outbound: Option<bool>,
    /// "Provider's SIP termination URI for outbound calls. REQUIRED for outbound calling."
    pub outbound_address: Option<HostPort>,
    /// "Phone numbers for outbound caller ID".
    pub outbound_numbers: Option<Vec<E164>>,
    /// AUTO, UDP, TCP or TLS.
    pub transport: Option<TrunkTransport>,
    /// "Two-letter country code (e.g., 'US', 'IN'). Required for India compliance."
    pub country_code: Option<CountryCode>,
    /// DISABLE, ALLOW or REQUIRE.
    pub media_encryption: Option<MediaEncryption>,
    /// "Enable Krisp noise cancellation".
    pub krisp_enabled: Option<bool>,
    /// "Maximum time for call to ring (1-300 seconds)".
    pub ringing_timeout: Option<Ranged<1, 300>>,
    /// "Maximum call duration (60-86400 seconds)".
    pub max_call_duration: Option<Ranged<60, 86_400>>,
    /// "Hide caller phone number from participant attributes for privacy".
    pub hide_phone_number: Option<bool>,
    /// "Custom SIP X-* headers to include in requests".
    pub headers: Option<BTreeMap<XHeaderName, HeaderValue>>,
    /// "Map SIP headers to participant attributes".
    pub headers_to_attributes: Option<BTreeMap<HeaderName, Label>>,
    /// "DTMF and IVR configuration".
    pub dtmf_config: Option<DtmfConfig>,
    /// "Call transfer configuration".
    pub transfer_config: Option<TransferConfig>,
    /// "Agent-specific telephony features".
    pub agent_features: Option<AgentFeatures>,
    /// "Additional metadata", stored as given.
    pub metadata: Option<OpaqueObject>,
    /// "Provider-specific configuration (stored in database as JSON)".
    pub provider_config: Option<OpaqueObject>,
}

/// seed 004: "Format: {your-trunk-domain}.sip-{region}.vonage.com".
fn is_vonage_trunk_domain(host: &Host) -> bool {
    let Host::Domain(name) = host else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    let Some(rest) = name.strip_suffix(".vonage.com") else {
        return false;
    };
    match rest.rsplit_once('.') {
        Some((trunk, region)) => {
            !trunk.is_empty() && region.strip_prefix("sip-").is_some_and(|r| !r.is_empty())
        }
        None => false,
    }
}

impl FromJson for PhoneNumberRegistration {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let phone_number = object.required("phone_number", errors);
        let provider: Option<Provider> = object.required("provider", errors);
        let numbers = object.optional("numbers", errors);
        let allowed_addresses = object.optional("allowed_addresses", errors);
        let allowed_numbers = object.optional("allowed_numbers", errors);
        let auth_username = object.optional("auth_username", errors);
        let auth_password = object.optional("auth_password", errors);
        let enable_outbound: Option<Option<bool>> =
            object.optional_aliased("enable_outbound", "outbound_enabled", errors);
        let outbound_address: Option<Option<HostPort>> =
            object.optional("outbound_address", errors);
        let outbound_numbers = object.optional("outbound_numbers", errors);
        let transport = object.optional("transport", errors);
        let country_code = object.optional("country_code", errors);
        let media_encryption = object.optional("media_encryption", errors);
        let krisp_enabled = object.optional("krisp_enabled", errors);
        let ringing_timeout = object.optional("ringing_timeout", errors);
        let max_call_duration = object.optional("max_call_duration", errors);
        let hide_phone_number = object.optional("hide_phone_number", errors);
        let headers = object.optional("headers", errors);
        let headers_to_attributes = object.optional("headers_to_attributes", errors);
        let dtmf_config = object.optional("dtmf_config", errors);
        let transfer_config = object.optional("transfer_config", errors);
        let agent_features = object.optional("agent_features", errors);
        let metadata = object.optional("metadata", errors);
        let provider_config = object.optional("provider_config", errors);

        if enable_outbound == Some(Some(true)) {
            if !object.is_set("outbound_address") {
                errors.push(
                    &object.pointer("outbound_address"),
                    "is required for outbound calling: the provider's SIP termination address",
                );
            }
            if provider == Some(Provider::Vonage) {
                for field in ["auth_username", "auth_password"] {
                    if !object.is_set(field) {
                        errors.push(
                            &object.pointer(field),
                            "is required for Vonage outbound calling",
                        );
                    }
                }
                if let Some(Some(address)) = &outbound_address
                    && !is_vonage_trunk_domain(&address.host)
                {
                    errors.push(
                        &object.pointer("outbound_address"),
                        "Vonage Elastic SIP Trunking needs your trunk domain: \
                         {your-trunk-domain}.sip-{region}.vonage.com",
                    );
                }
            }
        }
        object.finish(errors);
        Some(Self {
            phone_number: phone_number?,
            provider: provider?,
            numbers: numbers?,
            allowed_addresses: allowed_addresses?,
            allowed_numbers: allowed_numbers?,
            auth_username: auth_username?,
            auth_password: auth_password?,
            enable_outbound: enable_outbound?,
            outbound_address: outbound_address?,
            outbound_numbers: outbound_numbers?,
            transport: transport?,
            country_code: country_code?,
            media_encryption: media_encryption?,
            krisp_enabled: krisp_enabled?,
            ringing_timeout: ringing_timeout?,
            max_call_duration: max_call_duration?,
            hide_phone_number: hide_phone_number?,
            headers: headers?,
            headers_to_attributes: headers_to_attributes?,
            dtmf_config: dtmf_config?,
            transfer_config: transfer_config?,
            agent_features: agent_features?,
            metadata: metadata?,
            provider_config: provider_config?,
        })
    }
}

impl PhoneNumberRegistration {
    /// The numbers on the trunk: `numbers`, or `[phone_number]` when not given.
    pub fn trunk_numbers(&self) -> Vec<E164> {
        self.numbers
            .clone()
            .unwrap_or_else(|| vec![self.phone_number.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_body;
    use serde_json::json;

    fn parse(body: serde_json::Value) -> Result<PhoneNumberRegistration, FieldErrors> {
        parse_body(body.to_string().as_bytes())
    }

    fn full_example() -> serde_json::Value {
        json!({
            "phone_number": "+15551234567", "provider": "telnyx",
            "numbers": ["+15551234567", "+15551234568"],
            "allowed_addresses": ["192.0.2.0/24", "2001:db8::1"],
            "allowed_numbers": ["+15105550100"],
            "auth_username": "trunk-user", "auth_password": "trunk-pass",
            "enable_outbound": true, "outbound_address": "sip.telnyx.com",
            "outbound_numbers": ["+15551234567"], "transport": "TLS", "country_code": "US",
            "media_encryption": "ALLOW", "krisp_enabled": true, "ringing_timeout": 30,
            "max_call_duration": 3600, "hide_phone_number": false,
            "headers": {"X-Customer-Id": "42"},
            "headers_to_attributes": {"X-Customer-Id": "customer_id"},
            "dtmf_config": {"auto_navigate_ivr": true, "dtmf_sequence": "*123#ww456",
                            "dtmf_timeout": 30, "ivr_detection": true},
            "transfer_config": {"allowed_destinations": ["tel:+15105550100"],
                                "cold_transfer_enabled": true, "requires_confirmation": true,
                                "supervisor_phone": "tel:+15105550100",
                                "warm_transfer_enabled": false},
            "agent_features": {"call_screening": false, "recording_enabled": true,
                               "sentiment_analysis": true, "transcription_enabled": true},
            "metadata": {"team": "sales"}, "provider_config": {"anything": [1, 2]}
        })
    }

    // seed 004: every field, with the nested examples exactly as the seed gives them.
    #[test]
    fn seed_004_full_registration() {
        let r = parse(full_example()).expect("valid");
        assert_eq!(r.trunk_numbers().len(), 2);
        assert_eq!(r.ringing_timeout.map(Ranged::get), Some(30));
        let json = serde_json::to_string(&r).expect("serialises");
        assert!(!json.contains("trunk-pass"), "password is write-only");
    }

    // seed 004 "LiveKit Phone Numbers: just provide the phone number".
    #[test]
    fn seed_004_livekit_minimal_and_numbers_default() {
        let r =
            parse(json!({"phone_number": "+15551234567", "provider": "livekit"})).expect("valid");
        assert_eq!(r.trunk_numbers(), vec![r.phone_number.clone()]);
    }

    // seed 004: ranges "1 <= x <= 300" and "60 <= x <= 86400".
    #[test]
    fn seed_004_ranges() {
        for (field, good, bad) in [
            ("ringing_timeout", [1, 300], [0, 301]),
            ("max_call_duration", [60, 86_400], [59, 86_401]),
        ] {
            for n in good {
                let mut body = json!({"phone_number": "+15551234567", "provider": "livekit"});
                body[field] = json!(n);
                assert!(parse(body).is_ok(), "{field}={n}");
            }
            for n in bad {
                let mut body = json!({"phone_number": "+15551234567", "provider": "livekit"});
                body[field] = json!(n);
                let errors = parse(body).expect_err(field);
                assert!(errors.has(&format!("/{field}")), "{field}={n}");
            }
        }
    }

    // seed 004: "^(AUTO|UDP|TCP|TLS)$", "^(DISABLE|ALLOW|REQUIRE)$", country "2", providers.
    #[test]
    fn seed_004_enums_and_country() {
        let errors = parse(json!({
            "phone_number": "15551234567", "provider": "sinch", "transport": "udp",
            "media_encryption": "SOMETIMES", "country_code": "USA"
        }))
        .expect_err("all bad");
        for pointer in [
            "/phone_number",
            "/provider",
            "/transport",
            "/media_encryption",
            "/country_code",
        ] {
            assert!(errors.has(pointer), "{pointer}: {errors}");
        }
    }

    // seed 004: "Provider's SIP termination URI for outbound calls. REQUIRED for outbound calling."
    #[test]
    fn seed_004_outbound_needs_an_address_under_either_spelling() {
        for flag in ["enable_outbound", "outbound_enabled"] {
            let mut body = json!({"phone_number": "+15551234567", "provider": "twilio"});
            body[flag] = json!(true);
            let errors = parse(body).expect_err(flag);
            assert!(errors.has("/outbound_address"), "{flag}: {errors}");
        }
        let errors = parse(json!({"phone_number": "+15551234567", "provider": "twilio",
            "enable_outbound": true, "outbound_enabled": false, "outbound_address": "pstn.twilio.com"}))
        .expect_err("both spellings");
        assert!(errors.has("/outbound_enabled"));
    }

    // seed 004: "SIP authentication username/password (REQUIRED for Vonage outbound)" and
    // "Format: {your-trunk-domain}.sip-{region}.vonage.com".
    #[test]
    fn seed_004_vonage_outbound() {
        let errors = parse(json!({"phone_number": "+15551234567", "provider": "vonage",
            "enable_outbound": true, "outbound_address": "sip-us.vonage.com"}))
        .expect_err("vonage without credentials and trunk domain");
        for pointer in ["/auth_username", "/auth_password", "/outbound_address"] {
            assert!(errors.has(pointer), "{pointer}: {errors}");
        }
        assert!(
            parse(json!({"phone_number": "+15551234567", "provider": "vonage",
            "enable_outbound": true, "outbound_address": "mrassistant-developer.sip-us.vonage.com",
            "auth_username": "u", "auth_password": "p"}))
            .is_ok()
        );
    }

    #[test]
    fn nested_and_listed_values_are_checked() {
        let errors = parse(json!({
            "phone_number": "+15551234567", "provider": "custom",
            "numbers": ["+15551234567", "555"], "allowed_addresses": ["pbx.example.com"],
            "headers": {"Via": "x", "X-Ok": "line\r\nbreak"},
            "dtmf_config": {"dtmf_sequence": "12x", "dtmf_timeout": 0},
            "transfer_config": {"allowed_destinations": ["tel:5105550100", "sip:ops@pbx.example.com", "mailto:a"]},
            "agent_features": {"call_screening": "no"}, "metadata": []
        }))
        .expect_err("bad");
        for pointer in [
            "/numbers/1",
            "/allowed_addresses/0",
            "/headers/Via",
            "/headers/X-Ok",
            "/dtmf_config/dtmf_sequence",
            "/dtmf_config/dtmf_timeout",
            "/transfer_config/allowed_destinations/0",
            "/transfer_config/allowed_destinations/2",
            "/agent_features/call_screening",
            "/metadata",
        ] {
            assert!(errors.has(pointer), "{pointer}: {errors}");
        }
        assert!(!errors.has("/transfer_config/allowed_destinations/1"));
    }
}
