//! Seed 001: the SIP IP access list and SIP outbound routes.

use crate::json::Value;
use serde::Serialize;

use crate::access_list::AccessEntry;
use crate::json::{FieldErrors, FromJson, Object, Pointer};
use crate::route::Route;

/// `POST /sip/ip-access-list`: `{"address": "<ip or cidr>", "description": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpAccessEntryBody {
    /// An IPv4/IPv6 address or CIDR block ("Make sure all IPs sending SIP INVITEs are included").
    pub address: AccessEntry,
    /// Free text.
    pub description: Option<String>,
}

impl FromJson for IpAccessEntryBody {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let address = object.required("address", errors);
        let description = object.optional("description", errors);
        object.finish(errors);
        Some(Self {
            address: address?,
            description: description?,
        })
    }
}

/// `POST /sip/outbound-routes`: `{"route": "<seed 001 grammar>", "description": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboundRouteBody {
    /// `{host}[:{port}][;transport={udp|tcp}][;proxyAddress={host}[:{port}]]`.
    pub route: Route,
    /// Free text.
    pub description: Option<String>,
}

impl FromJson for OutboundRouteBody {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let route = object.required("route", errors);
        let description = object.optional("description", errors);
        object.finish(errors);
        Some(Self {
            route: route?,
            description: description?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_body;

    // seed 001: "Make sure all IPs sending SIP INVITEs are included in the access list".
    #[test]
    fn seed_001_access_entries() {
        let e: IpAccessEntryBody =
            parse_body(br#"{"address":"203.0.113.0/24","description":"office PBX"}"#)
                .expect("valid");
        assert_eq!(e.address.to_string(), "203.0.113.0/24");
        let e: IpAccessEntryBody = parse_body(br#"{"address":"2001:db8::7"}"#).expect("valid");
        assert_eq!(e.description, None);
    }

    #[test]
    fn access_entry_errors_point_at_the_address() {
        let errors = parse_body::<IpAccessEntryBody>(br#"{"address":"pbx.example.com"}"#)
            .expect_err("host name");
        assert!(errors.has("/address"));
        assert!(errors.to_string().contains("host name"));
        let errors =
            parse_body::<IpAccessEntryBody>(br#"{"address":"10.0.0.1/8","description":7}"#)
                .expect_err("host bits and bad description");
        assert!(
            errors.has("/address") && errors.has("/description"),
            "{errors}"
        );
        let errors =
            parse_body::<IpAccessEntryBody>(br#"{"description":"x"}"#).expect_err("missing");
        assert!(errors.has("/address"));
    }

    // seed 001 "Format of the SIP Outbound Route", all four examples.
    #[test]
    fn seed_001_outbound_route_examples() {
        for route in [
            "sip.example.com",
            "sip.example.com:6000;transport=tcp",
            "sip.example.com;proxyAddress=proxy.example.com",
            "sip.example.com;transport=tcp;proxyAddress=proxy.example.com:6000",
        ] {
            let body = serde_json::json!({ "route": route }).to_string();
            let r: OutboundRouteBody = parse_body(body.as_bytes()).expect(route);
            assert_eq!(r.route.to_string(), route);
        }
    }

    #[test]
    fn route_errors_name_the_part() {
        let errors =
            parse_body::<OutboundRouteBody>(br#"{"route":"sip.example.com;transport=sctp"}"#)
                .expect_err("bad transport");
        assert_eq!(errors.as_slice()[0].pointer, "/route");
        assert!(errors.as_slice()[0].detail.starts_with("transport:"));
    }
}
