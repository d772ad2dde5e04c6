//! Every example request body in the seed documents is accepted by the schema of its endpoint.
//!
//! The seeds are the platforms' own documentation; if a documented example were refused, the
//! rules would be wrong, not the example.

use std::fs;

use policy::BodySchema;

/// One `curl -X METHOD URL ... -d '{...}'` example.
struct Example {
    seed: String,
    method: String,
    path: String,
    body: String,
}

/// Finds the curl examples with a JSON body in one seed document.
fn curl_examples(seed: &str, text: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("curl -X ") {
        rest = &rest[start + "curl -X ".len()..];
        let mut words = rest.split_whitespace();
        let (Some(method), Some(url)) = (words.next(), words.next()) else {
            break;
        };
        let command_end = rest.find("curl ").unwrap_or(rest.len());
        let command = &rest[..command_end];
        let Some(body_start) = command.find("-d '") else {
            continue;
        };
        let body = &command[body_start + 4..];
        let Some(body_end) = body.find('\'') else {
            continue;
        };
        let path = url.split_once("/public").map_or(url, |(_, p)| p);
        examples.push(Example {
            seed: seed.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            body: body[..body_end].to_owned(),
        });
    }
    examples
}

/// The schema the edge applies to `method path` (the demo configuration's routes).
fn schema_for(method: &str, path: &str) -> Option<BodySchema> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["agents"]) => Some(BodySchema::Agent),
        ("PUT", ["agents", _, "channels", "sip"]) => Some(BodySchema::SipChannelConfig),
        ("PUT", ["agents", _, "sip-registration"]) => Some(BodySchema::SipRegistration),
        ("POST", ["agents", _, "phone-numbers"]) => Some(BodySchema::PhoneNumberRegistration),
        ("POST", ["sip-connections"]) => Some(BodySchema::SipConnectionCreate),
        ("PATCH", ["sip-connections", _]) => Some(BodySchema::SipConnectionPatch),
        ("POST", ["sip", "ip-access-list"]) => Some(BodySchema::IpAccessEntry),
        ("POST", ["sip", "outbound-routes"]) => Some(BodySchema::OutboundRoute),
        _ => None,
    }
}

#[test]
fn every_seed_example_body_is_valid() {
    let seeds = trunkguard::shared_dir().join("seeds");
    let mut examples = Vec::new();
    for entry in fs::read_dir(&seeds).unwrap_or_else(|e| panic!("{}: {e}", seeds.display())) {
        let path = entry.expect("readable directory").path();
        let text = fs::read_to_string(&path).expect("readable seed");
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        examples.extend(curl_examples(&name, &text));
    }
    // seed 002 has five examples with a body: agent, channel config (twice), connection, patch.
    assert!(
        examples.len() >= 5,
        "found only {} examples",
        examples.len()
    );
    for example in &examples {
        let schema = schema_for(&example.method, &example.path).unwrap_or_else(|| {
            panic!(
                "{}: no schema for {} {}",
                example.seed, example.method, example.path
            )
        });
        if let Err(errors) = schema.validate(example.body.as_bytes()) {
            panic!(
                "{}: {} {} refused by {schema}: {errors}",
                example.seed, example.method, example.path
            );
        }
    }
}
