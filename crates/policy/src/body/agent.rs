//! Seed 002: agents (`POST /agents`) and the SIP channel config
//! (`PUT /agents/{agentId}/channels/sip`).
//!
//! The seed defers `providerSettings` to a "Configuration" page it does not include; the fields it
//! shows (`temperature`, `turnDetection.threshold`, `turnDetection.silence_duration_ms`,
//! `noiseReduction`) are accepted with the usual ranges of such settings: temperature 0 to 2,
//! threshold 0 to 1, silence 0 to 10 000 ms, noise reduction on or off.

use crate::json::Value;
use serde::Serialize;

use super::text::{Identifier, Label, SipUser};
use crate::json::{FieldErrors, FromJson, Object, Pointer, Ranged};

/// `POST /agents`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentBody {
    /// "The companion that answers calls." Required.
    pub companion_id: Identifier,
    /// "A label for this agent."
    pub name: Option<Label>,
    /// "The voice to use for the agent's speech output (e.g. alloy, echo, shimmer)." Required.
    pub voice_id: Identifier,
    /// "Lock the agent to a specific language (e.g. English, Spanish)."
    pub language: Option<Label>,
    /// "Tool IDs to attach."
    pub functions: Option<Vec<Identifier>>,
    /// "FAQ collection IDs."
    pub faq_collections: Option<Vec<Identifier>>,
    /// "Knowledge collection ID."
    pub knowledge_base_id: Option<Identifier>,
    /// "Model and audio settings". Required.
    pub provider_settings: ProviderSettings,
}

impl FromJson for AgentBody {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let companion_id = object.required("companionId", errors);
        let name = object.optional("name", errors);
        let voice_id = object.required("voiceId", errors);
        let language = object.optional("language", errors);
        let functions = object.optional("functions", errors);
        let faq_collections = object.optional("faqCollections", errors);
        let knowledge_base_id = object.optional("knowledgeBaseId", errors);
        let provider_settings = object.required("providerSettings", errors);
        object.finish(errors);
        Some(Self {
            companion_id: companion_id?,
            name: name?,
            voice_id: voice_id?,
            language: language?,
            functions: functions?,
            faq_collections: faq_collections?,
            knowledge_base_id: knowledge_base_id?,
            provider_settings: provider_settings?,
        })
    }
}

/// A number in a closed range, read from JSON.
fn ranged_number(
    object: &mut Object<'_, '_>,
    name: &'static str,
    min: f64,
    max: f64,
    errors: &mut FieldErrors,
) -> Option<Option<f64>> {
    let n: Option<f64> = object.optional(name, errors)?;
    match n {
        Some(n) if !(min..=max).contains(&n) => {
            errors.push(
                &object.pointer(name),
                format!("must be a number from {min} to {max}"),
            );
            None
        }
        n => Some(n),
    }
}

/// "Model and audio settings — temperature, turnDetection, noiseReduction."
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSettings {
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
    /// When the caller has finished speaking.
    pub turn_detection: Option<TurnDetection>,
    /// Noise reduction on or off.
    pub noise_reduction: Option<bool>,
}

impl FromJson for ProviderSettings {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let temperature = ranged_number(&mut object, "temperature", 0.0, 2.0, errors);
        let turn_detection = object.optional("turnDetection", errors);
        let noise_reduction = object.optional("noiseReduction", errors);
        object.finish(errors);
        Some(Self {
            temperature: temperature?,
            turn_detection: turn_detection?,
            noise_reduction: noise_reduction?,
        })
    }
}

/// `providerSettings.turnDetection` (its members are snake_case in the seed's example).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnDetection {
    /// Voice activity threshold, 0 to 1.
    pub threshold: Option<f64>,
    /// Silence that ends a turn, 0 to 10 000 ms.
    pub silence_duration_ms: Option<Ranged<0, 10_000>>,
}

impl FromJson for TurnDetection {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let threshold = ranged_number(&mut object, "threshold", 0.0, 1.0, errors);
        let silence_duration_ms = object.optional("silence_duration_ms", errors);
        object.finish(errors);
        Some(Self {
            threshold: threshold?,
            silence_duration_ms: silence_duration_ms?,
        })
    }
}

/// `PUT /agents/{agentId}/channels/sip`: SIP-specific overrides of the agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SipChannelConfig {
    /// "Configure live agent transfer."
    pub human_handoff: Option<HumanHandoff>,
    /// "Override the agent's default tool IDs for SIP calls."
    pub functions: Option<Vec<Identifier>>,
    /// "Override the agent's default FAQ collection IDs for SIP calls."
    pub faq_collections: Option<Vec<Identifier>>,
    /// "Override the agent's default knowledge collection for SIP calls."
    pub knowledge_base_id: Option<Identifier>,
    /// "Override the agent's default provider settings for SIP calls."
    pub provider_settings: Option<ProviderSettings>,
}

impl FromJson for SipChannelConfig {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let human_handoff = object.optional("humanHandoff", errors);
        let functions = object.optional("functions", errors);
        let faq_collections = object.optional("faqCollections", errors);
        let knowledge_base_id = object.optional("knowledgeBaseId", errors);
        let provider_settings = object.optional("providerSettings", errors);
        object.finish(errors);
        Some(Self {
            human_handoff: human_handoff?,
            functions: functions?,
            faq_collections: faq_collections?,
            knowledge_base_id: knowledge_base_id?,
            provider_settings: provider_settings?,
        })
    }
}

/// `humanHandoff`: transfer to a live person over SIP.
///
/// "When enabled is true and a transferExtension is set, the agent can transfer the caller":
/// enabling handoff without an extension would silently do nothing, so it is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanHandoff {
    /// "Set to true to allow the agent to transfer calls."
    pub enabled: Option<bool>,
    /// "The SIP extension to transfer the call to."
    pub transfer_extension: Option<SipUser>,
    /// "A description of when or why to transfer".
    pub transfer_description: Option<String>,
}

impl FromJson for HumanHandoff {
    fn from_json(value: &Value<'_>, at: &Pointer<'_>, errors: &mut FieldErrors) -> Option<Self> {
        let mut object = Object::open(value, at, errors)?;
        let enabled: Option<Option<bool>> = object.optional("enabled", errors);
        let has_extension = object.is_set("transferExtension");
        let transfer_extension = object.optional("transferExtension", errors);
        let transfer_description = object.optional("transferDescription", errors);
        if enabled == Some(Some(true)) && !has_extension {
            errors.push(
                &object.pointer("transferExtension"),
                "is required when humanHandoff is enabled: it is where calls are transferred",
            );
        }
        object.finish(errors);
        Some(Self {
            enabled: enabled?,
            transfer_extension: transfer_extension?,
            transfer_description: transfer_description?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_body;

    // seed 002 "Create an Agent": the request body of the example.
    #[test]
    fn seed_002_agent_example() {
        let agent: AgentBody = parse_body(
            br#"{"companionId":"comp_abc123","name":"Support Agent","voiceId":"alloy",
                "language":"English","functions":["fn_order_status","fn_returns"],
                "faqCollections":["faq_support"],"knowledgeBaseId":"kb_product_docs",
                "providerSettings":{"temperature":0.7,
                    "turnDetection":{"threshold":0.9,"silence_duration_ms":500}}}"#,
        )
        .expect("seed example");
        assert_eq!(agent.companion_id.as_str(), "comp_abc123");
        assert_eq!(agent.functions.map(|f| f.len()), Some(2));
    }

    // seed 002: companionId, voiceId and providerSettings are Required = Yes.
    #[test]
    fn seed_002_agent_required_fields() {
        let errors = parse_body::<AgentBody>(br#"{"name":"x"}"#).expect_err("missing");
        for pointer in ["/companionId", "/voiceId", "/providerSettings"] {
            assert!(errors.has(pointer), "{pointer}: {errors}");
        }
    }

    #[test]
    fn nested_errors_have_nested_pointers() {
        let errors = parse_body::<AgentBody>(
            br#"{"companionId":"c","voiceId":"v","functions":["ok","not ok"],
                "providerSettings":{"temperature":3,"turnDetection":{"threshold":-1,
                "silence_duration_ms":1.5,"extra":0}}}"#,
        )
        .expect_err("bad nested");
        for pointer in [
            "/functions/1",
            "/providerSettings/temperature",
            "/providerSettings/turnDetection/threshold",
            "/providerSettings/turnDetection/silence_duration_ms",
            "/providerSettings/turnDetection/extra",
        ] {
            assert!(errors.has(pointer), "{pointer}: {errors}");
        }
    }

    // seed 002 "Set up the SIP channel": the example body, and an empty one (all optional).
    #[test]
    fn seed_002_channel_config() {
        let config: SipChannelConfig = parse_body(
            br#"{"humanHandoff":{"enabled":true,"transferExtension":"200",
                "transferDescription":"Transfer when the caller asks for a human or the issue cannot be resolved"}}"#,
        )
        .expect("seed example");
        assert_eq!(
            config
                .human_handoff
                .and_then(|h| h.transfer_extension)
                .map(|e| e.to_string()),
            Some("200".to_owned())
        );
        assert!(parse_body::<SipChannelConfig>(b"{}").is_ok());
    }

    // seed 002: "When enabled is true and a transferExtension is set, the agent can transfer".
    #[test]
    fn seed_002_enabled_handoff_needs_an_extension() {
        let errors = parse_body::<SipChannelConfig>(br#"{"humanHandoff":{"enabled":true}}"#)
            .expect_err("no extension");
        assert!(errors.has("/humanHandoff/transferExtension"), "{errors}");
        assert!(parse_body::<SipChannelConfig>(br#"{"humanHandoff":{"enabled":false}}"#).is_ok());
    }
}
