//! Seed 003: Custom SIP accounts (`POST /custom-sip-accounts`, `PATCH /custom-sip-accounts/{id}`).
//!
//! The seed describes a form; the JSON names are its fields in camelCase: `name`, `sipServer`,
//! `sipTransport`, `destinationCountry`, `allowedInboundIps`, `outboundUsername`,
//! `outboundPassword`, `inboundUsername`, `inboundPassword`.
//!
//! Pair invariant: "The username and password are always set together or both left empty",
//! independently for the outbound and the inbound direction. On PATCH the password has the
//! seed's three states (absent: kept, `null` or `""`: cleared, value: replaced), and "explicitly
//! cleared — auth is disabled (clear the username too)": clearing one half without the other is
//! refused. Whether a new username alone pairs with the stored password needs the stored account,
//! so that check belongs to the service that holds it.

use crate::json::Value;
use serde::Serialize;

use super::sip_connection::not_clearable;
use super::text::{Label, SipUser};
use super::text_enum;
use crate::access_list::Ipv4CidrList;
use crate::country::CountryCode;
use crate::host::HostPort;
use crate::json::{FieldErrors, FromJson, Object, Patch, Pointer};
use crate::secret::Secret;

text_enum! {
    /// seed 003 "SIP transport: Auto / UDP / TCP / TLS. Auto lets LiveKit pick".
    CustomSipTransport {
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

/// `POST /custom-sip-accounts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomSipAccount {
    /// "Account name: any human-readable name". Required.
    pub name: Label,
    /// "host[:port] of your PBX's SIP server (for our outbound calls). Empty = outbound disabled".
    pub sip_server: Option<HostPort>,
    /// Defaults to AUTO.
    pub sip_transport: Option<CustomSipTransport>,
    /// "ISO-3166 α-2 (2 letters)". Required.
    pub destination_country: CountryCode,
    /// "Comma-separated list of IPv4 / IPv4 CIDR — the PBX IPs from which LiveKit will accept
    /// INVITE". Absent: no inbound calls are accepted.
    pub allowed_inbound_ips: Option<Ipv4CidrList>,
    /// Outbound digest username (set together with the password, or neither).
    pub outbound_username: Option<SipUser>,
    /// Outbound digest password; write-only.
    #[serde(skip_serializing)]
    pub outbound_password: Option<Secret>,
    /// Inbound digest username (set together with the password, or neither).
    pub inbound_username: Option<SipUser>,
    /// Inbound digest password; write-only.
    #[serde(skip_serializing)]
    pub inbound_password: Option<Secret>,
}

/// Reports a half-set username/password pair, on the half that is missing.
fn check_pair(
    object: &Object<'_, '_>,
    (user_field, user_set): (&str, bool),
    (password_field, password_set): (&str, bool),
    errors: &mut FieldErrors,
) {
    let sentence = "username and password are set together or both left empty";
    if user_set && !password_set {
        errors.push(
            &object.pointer(password_field),
            format!("is required when {user_field} is set ({sentence})"),
        );
    }
    if password_set && !user_set {
        errors.push(
            &object.pointer(user_field),
            format!("is required when {password_field} is set ({sentence})"),
        );
    }
}

/// An optional string field where `""` means "left empty", as the seed's form sends it.
fn optional_nonempty<T: FromJson>(
    object: &mut Object<'_, '_>,
    name: &'static str,
    errors: &mut FieldErrors,
) -> Option<Option<T>> {
    match object.patch(name, errors)? {
        Patch::Set(value) => Some(Some(value)),
        Patch::Keep | Patch::Clear => Some(None),
    }
}

impl FromJson for CustomSipAccount {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let name = object.required("name", errors);
        let sip_server = optional_nonempty(&mut object, "sipServer", errors);
        let sip_transport = object.optional("sipTransport", errors);
        let destination_country = object.required("destinationCountry", errors);
        let allowed_inbound_ips = optional_nonempty(&mut object, "allowedInboundIps", errors);
        let outbound_username: Option<Option<SipUser>> =
            optional_nonempty(&mut object, "outboundUsername", errors);
        let outbound_password: Option<Option<Secret>> =
            optional_nonempty(&mut object, "outboundPassword", errors);
        let inbound_username: Option<Option<SipUser>> =
            optional_nonempty(&mut object, "inboundUsername", errors);
        let inbound_password: Option<Option<Secret>> =
            optional_nonempty(&mut object, "inboundPassword", errors);
        for (user, password) in [
            ("outboundUsername", "outboundPassword"),
            ("inboundUsername", "inboundPassword"),
        ] {
            check_pair(
                &object,
                (user, object.is_filled(user)),
                (password, object.is_filled(password)),
                errors,
            );
        }
        object.finish(errors);
        Some(Self {
            name: name?,
            sip_server: sip_server?,
            sip_transport: sip_transport?,
            destination_country: destination_country?,
            allowed_inbound_ips: allowed_inbound_ips?,
            outbound_username: outbound_username?,
            outbound_password: outbound_password?,
            inbound_username: inbound_username?,
            inbound_password: inbound_password?,
        })
    }
}

/// `PATCH /custom-sip-accounts/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomSipAccountPatch {
    /// New name.
    pub name: Option<Label>,
    /// New server, or cleared to disable outbound calls.
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub sip_server: Patch<HostPort>,
    /// New transport.
    pub sip_transport: Option<CustomSipTransport>,
    /// New country.
    pub destination_country: Option<CountryCode>,
    /// New inbound list, or cleared to accept no inbound calls.
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub allowed_inbound_ips: Patch<Ipv4CidrList>,
    /// Outbound username: kept, cleared or replaced.
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub outbound_username: Patch<SipUser>,
    /// Outbound password: kept, cleared or replaced; write-only.
    #[serde(skip_serializing)]
    pub outbound_password: Patch<Secret>,
    /// Inbound username: kept, cleared or replaced.
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub inbound_username: Patch<SipUser>,
    /// Inbound password: kept, cleared or replaced; write-only.
    #[serde(skip_serializing)]
    pub inbound_password: Patch<Secret>,
}

/// seed 003: "Explicitly cleared — auth is disabled (clear the username too)", and the reverse.
fn check_cleared_pair(
    object: &Object<'_, '_>,
    (user_field, user): (&str, &Option<Patch<SipUser>>),
    (password_field, password): (&str, &Option<Patch<Secret>>),
    errors: &mut FieldErrors,
) {
    let user_cleared = matches!(user, Some(Patch::Clear));
    let password_cleared = matches!(password, Some(Patch::Clear));
    if password_cleared && !user_cleared {
        errors.push(
            &object.pointer(user_field),
            format!("must be cleared too when {password_field} is cleared (auth is disabled)"),
        );
    }
    if user_cleared && !password_cleared {
        errors.push(
            &object.pointer(password_field),
            format!("must be cleared too when {user_field} is cleared (auth is disabled)"),
        );
    }
}

impl FromJson for CustomSipAccountPatch {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        if object.is_empty() {
            errors.push(at, "a PATCH must change at least one field");
        }
        let name = not_clearable(&mut object, "name", errors);
        let sip_server = object.patch("sipServer", errors);
        let sip_transport = not_clearable(&mut object, "sipTransport", errors);
        let destination_country = not_clearable(&mut object, "destinationCountry", errors);
        let allowed_inbound_ips = object.patch("allowedInboundIps", errors);
        let outbound_username = object.patch("outboundUsername", errors);
        let outbound_password = object.patch("outboundPassword", errors);
        let inbound_username = object.patch("inboundUsername", errors);
        let inbound_password = object.patch("inboundPassword", errors);
        check_cleared_pair(
            &object,
            ("outboundUsername", &outbound_username),
            ("outboundPassword", &outbound_password),
            errors,
        );
        check_cleared_pair(
            &object,
            ("inboundUsername", &inbound_username),
            ("inboundPassword", &inbound_password),
            errors,
        );
        object.finish(errors);
        Some(Self {
            name: name?,
            sip_server: sip_server?,
            sip_transport: sip_transport?,
            destination_country: destination_country?,
            allowed_inbound_ips: allowed_inbound_ips?,
            outbound_username: outbound_username?,
            outbound_password: outbound_password?,
            inbound_username: inbound_username?,
            inbound_password: inbound_password?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_body;

    fn create(body: serde_json::Value) -> Result<CustomSipAccount, FieldErrors> {
        parse_body(body.to_string().as_bytes())
    }

    fn patch(body: serde_json::Value) -> Result<CustomSipAccountPatch, FieldErrors> {
        parse_body(body.to_string().as_bytes())
    }

    // seed 003 "Fill out the form": the examples of its table.
    #[test]
    fn seed_003_form_example() {
        let account = create(serde_json::json!({
            "name": "Mango Office", "sipServer": "vpbx400312852.mangosip.ru",
            "sipTransport": "AUTO", "destinationCountry": "RU",
            "allowedInboundIps": "1.2.3.4, 10.0.0.0/24",
            "outboundUsername": "livekit-out", "outboundPassword": "***"
        }))
        .expect("seed example");
        assert_eq!(account.allowed_inbound_ips.map(|l| l.0.len()), Some(2));
        assert!(account.inbound_username.is_none() && account.inbound_password.is_none());
    }

    // seed 003: "Empty = outbound disabled"; IP-trust mode leaves both credentials empty.
    #[test]
    fn seed_003_empty_server_and_ip_trust() {
        let account = create(serde_json::json!({
            "name": "Trunk", "sipServer": "", "destinationCountry": "US",
            "outboundUsername": "", "outboundPassword": ""
        }))
        .expect("empty means disabled / IP-trust");
        assert_eq!(account.sip_server, None);
        assert_eq!(account.outbound_username, None);
    }

    // seed 003 "Pair invariant": "Filling one without the other is rejected", per direction.
    #[test]
    fn seed_003_pair_invariant_each_direction() {
        let errors = create(serde_json::json!({
            "name": "T", "destinationCountry": "US",
            "outboundUsername": "u", "inboundPassword": "p"
        }))
        .expect_err("half pairs");
        assert!(errors.has("/outboundPassword"), "{errors}");
        assert!(errors.has("/inboundUsername"), "{errors}");
        assert_eq!(errors.as_slice().len(), 2);
    }

    // seed 003: allowed inbound IPs are "IPv4 / IPv4 CIDR"; country is ISO-3166 alpha-2.
    #[test]
    fn seed_003_inbound_ips_and_country() {
        let errors = create(serde_json::json!({
            "name": "T", "destinationCountry": "ZZ", "allowedInboundIps": "1.2.3.4, ::1",
            "sipTransport": "Auto"
        }))
        .expect_err("bad");
        for pointer in ["/destinationCountry", "/allowedInboundIps", "/sipTransport"] {
            assert!(errors.has(pointer), "{pointer}: {errors}");
        }
    }

    // seed 003 "the password field has three states".
    #[test]
    fn seed_003_patch_password_states() {
        let untouched = patch(serde_json::json!({"name": "New"})).expect("kept");
        assert_eq!(untouched.outbound_password, Patch::Keep);
        let replaced = patch(serde_json::json!({"outboundPassword": "new"})).expect("replaced");
        assert!(matches!(replaced.outbound_password, Patch::Set(_)));
        let cleared = patch(serde_json::json!({"outboundPassword": null, "outboundUsername": ""}))
            .expect("both cleared");
        assert_eq!(cleared.outbound_password, Patch::Clear);
        assert_eq!(cleared.outbound_username, Patch::Clear);
    }

    // seed 003: "Explicitly cleared — auth is disabled (clear the username too)".
    #[test]
    fn seed_003_clearing_one_half_alone_is_refused() {
        let errors = patch(serde_json::json!({"inboundPassword": ""})).expect_err("half");
        assert!(errors.has("/inboundUsername"), "{errors}");
        let errors = patch(serde_json::json!({"outboundUsername": null, "outboundPassword": "x"}))
            .expect_err("half");
        assert!(errors.has("/outboundPassword"), "{errors}");
    }

    #[test]
    fn passwords_are_never_serialised() {
        let account = create(serde_json::json!({
            "name": "T", "destinationCountry": "US",
            "inboundUsername": "pbx", "inboundPassword": "hunter2"
        }))
        .expect("valid");
        let json = serde_json::to_string(&account).expect("serialises");
        assert!(
            !json.contains("hunter2") && !json.contains("Password"),
            "{json}"
        );
    }
}
