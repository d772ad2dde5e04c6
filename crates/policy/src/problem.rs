//! RFC 9457 problem documents, shared by the edge filter and the ingress's control-plane API so
//! that a client sees the same shapes whichever one refuses its request.
//!
//! Every problem carries an `errors` array (possibly empty). Each item has a `detail` and names
//! what it is about: `pointer`, a JSON Pointer into the request body, or `parameter`, the name of
//! a path parameter.

use serde::Serialize;

use crate::json::FieldErrors;

/// The media type of a problem document (RFC 9457 section 6.1).
pub const CONTENT_TYPE: &str = "application/problem+json";

/// The kinds of problem trunkguard reports; each has a stable `type` URI and a title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// 400: the body failed validation.
    InvalidBody,
    /// 400: a path parameter has the wrong form.
    InvalidParameter,
    /// 400: the request itself is malformed (e.g. an unreadable Content-Length).
    BadRequest,
    /// 401: no API key, or an unknown one.
    Unauthenticated,
    /// 404: no such route or resource.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the resource already exists.
    Conflict,
    /// 413: the body is larger than allowed.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 429: a rate limit was hit.
    RateLimited,
    /// 500: something failed inside trunkguard; the request was not forwarded.
    Internal,
}

impl ProblemKind {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            ProblemKind::InvalidBody | ProblemKind::InvalidParameter | ProblemKind::BadRequest => {
                400
            }
            ProblemKind::Unauthenticated => 401,
            ProblemKind::NotFound => 404,
            ProblemKind::MethodNotAllowed => 405,
            ProblemKind::Conflict => 409,
            ProblemKind::PayloadTooLarge => 413,
            ProblemKind::UnsupportedMediaType => 415,
            ProblemKind::RateLimited => 429,
            ProblemKind::Internal => 500,
        }
    }

    /// The last segment of the `type` URI, also usable as a metric label.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::InvalidBody => "invalid-body",
            ProblemKind::InvalidParameter => "invalid-parameter",
            ProblemKind::BadRequest => "bad-request",
            ProblemKind::Unauthenticated => "unauthenticated",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::Conflict => "conflict",
            ProblemKind::PayloadTooLarge => "payload-too-large",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::RateLimited => "rate-limited",
            ProblemKind::Internal => "internal",
        }
    }

    /// A short, fixed summary (RFC 9457 section 3.1.4).
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::InvalidBody => "The request body is invalid",
            ProblemKind::InvalidParameter => "A path parameter is invalid",
            ProblemKind::BadRequest => "The request is malformed",
            ProblemKind::Unauthenticated => "A valid API key is required",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::Conflict => "Conflict",
            ProblemKind::PayloadTooLarge => "The request body is too large",
            ProblemKind::UnsupportedMediaType => "The request body must be JSON",
            ProblemKind::RateLimited => "Too many requests",
            ProblemKind::Internal => "Internal error",
        }
    }
}

/// One item of `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemItem {
    /// JSON Pointer into the request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// Name of the path parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// What is wrong.
    pub detail: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `urn:trunkguard:problem:<slug>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The kind's title.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// This occurrence, in a sentence.
    pub detail: String,
    /// The individual problems, if any.
    pub errors: Vec<ProblemItem>,
}

impl Problem {
    /// A problem of `kind` with `detail` and no items.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:trunkguard:problem:{}", kind.slug()),
            title: kind.title(),
            status: kind.status(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// A 400 listing every field error of a body.
    pub fn invalid_body(errors: &FieldErrors) -> Self {
        let count = errors.as_slice().len();
        let mut problem = Self::new(
            ProblemKind::InvalidBody,
            format!(
                "the request body has {count} invalid field{}",
                if count == 1 { "" } else { "s" }
            ),
        );
        problem.errors = errors
            .as_slice()
            .iter()
            .map(|e| ProblemItem {
                pointer: Some(e.pointer.clone()),
                parameter: None,
                detail: e.detail.clone(),
            })
            .collect();
        problem
    }

    /// A 400 naming a path parameter.
    pub fn invalid_parameter(name: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let mut problem = Self::new(
            ProblemKind::InvalidParameter,
            format!("path parameter {name} {detail}"),
        );
        problem.errors.push(ProblemItem {
            pointer: None,
            parameter: Some(name.to_owned()),
            detail,
        });
        problem
    }

    /// The document as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail; an empty object is still a valid
        // (if unhelpful) problem body, so no panic path exists here.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{FieldErrors, Pointer};

    #[test]
    fn invalid_body_lists_every_field_with_its_pointer() {
        let mut errors = FieldErrors::default();
        errors.push(&Pointer::root().field("did"), "must be E.164");
        errors.push(&Pointer::root().field("port"), "must be 1-65535");
        let problem = Problem::invalid_body(&errors);
        let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).expect("json");
        assert_eq!(json["type"], "urn:trunkguard:problem:invalid-body");
        assert_eq!(json["status"], 400);
        assert_eq!(json["errors"][0]["pointer"], "/did");
        assert_eq!(json["errors"][1]["detail"], "must be 1-65535");
        assert!(json["errors"][0].get("parameter").is_none());
    }

    #[test]
    fn parameters_are_named() {
        let problem = Problem::invalid_parameter("agentId", "must be a UUID");
        assert_eq!(problem.errors[0].parameter.as_deref(), Some("agentId"));
        assert_eq!(problem.status, 400);
    }
}
