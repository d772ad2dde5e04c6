//! The built `edge_filter.wasm`, run in wasmtime by the proxy-wasm test host: the artifact Envoy
//! loads, tested without Envoy. Two VMs sharing one host stand for two Envoy worker threads.

use std::sync::OnceLock;

use proxy_wasm_test_host::{ENVOY_WASI_FUNCTIONS, Exchange, LocalResponse, TestHost, Vm};

const DEMO_KEY: &str = "tg_demo_0123456789abcdef";
const ACME_KEY: &str = "tg_acme_0123456789abcdef";
const AGENT: &str = "/v1/agents/3fa85f64-5717-4562-b3fc-2c963f66afa6/sip-registration";
const SECOND: u64 = 1_000_000_000;

/// A host with fresh state for the module, which is compiled once per test binary.
fn host() -> TestHost {
    static COMPILED: OnceLock<TestHost> = OnceLock::new();
    let host = COMPILED
        .get_or_init(|| {
            TestHost::new(&trunkguard::wasm_artifact("edge_filter.wasm")).expect("module compiles")
        })
        .fresh();
    host.set_time_ns(1_000 * SECOND);
    host
}

fn vm(host: &TestHost) -> Vm {
    host.start_vm(trunkguard::demo_filter_configuration().as_bytes())
        .expect("VM runs")
        .unwrap_or_else(|logs| panic!("demo configuration refused: {logs:?}"))
}

fn responded(exchange: Exchange) -> LocalResponse {
    match exchange {
        Exchange::Responded(response) => response,
        other => panic!("expected a local response, got {other:?}"),
    }
}

fn problem(response: &LocalResponse) -> serde_json::Value {
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    serde_json::from_slice(&response.body).expect("problem json")
}

#[test]
fn imports_only_what_envoy_provides() {
    for (module, name) in host().imports() {
        match module.as_str() {
            "wasi_snapshot_preview1" => assert!(
                ENVOY_WASI_FUNCTIONS.contains(&name.as_str()),
                "edge_filter.wasm imports WASI {name}, which Envoy does not provide"
            ),
            "env" => assert!(
                name.starts_with("proxy_"),
                "non-proxy-wasm import env.{name}"
            ),
            other => panic!("import from unknown module {other}.{name}"),
        }
    }
}

#[test]
fn the_demo_configuration_loads_and_asks_for_ticks() {
    let host = host();
    let vm = vm(&host);
    assert!(
        vm.logs()
            .iter()
            .any(|l| l.contains("23 routes, 2 API keys")),
        "{:?}",
        vm.logs()
    );
    assert_eq!(vm.tick_period_ms(), 10_000);
}

#[test]
fn invalid_configurations_are_refused_with_the_reason() {
    let host = host();
    for (config, reason) in [
        ("not json", "invalid trunkguard configuration"),
        (
            r#"{"routes": [], "api_keys": [], "rate_limits": {}}"#,
            "at least one route",
        ),
        (
            &trunkguard::demo_filter_configuration().replace(
                "\"rate\": 10, \"period_seconds\": 1, \"burst\": 20}",
                "\"rate\": 0, \"burst\": 20}",
            ),
            "rate and period must be greater than zero",
        ),
    ] {
        let logs = host
            .start_vm(config.as_bytes())
            .expect("VM runs")
            .err()
            .expect("refused");
        assert!(
            logs.iter().any(|l| l.contains(reason)),
            "{reason}: {logs:?}"
        );
    }
}

#[test]
fn valid_requests_are_forwarded_with_the_tenant_and_the_body_intact() {
    let host = host();
    let mut vm = vm(&host);
    let body = br#"{"domain":"sip.example.com","username":"1001","password":"p","xDestUser":"sales.desk"}"#;
    let exchange = vm
        .request(
            &[
                (":method", "PUT"),
                (":path", AGENT),
                ("x-api-key", DEMO_KEY),
                ("content-type", "application/json"),
                ("x-tenant-id", "acme"),
            ],
            Some(body),
            3,
        )
        .expect("request runs");
    let Exchange::Forwarded {
        headers,
        body: forwarded,
    } = exchange
    else {
        panic!("not forwarded: {exchange:?}");
    };
    assert_eq!(forwarded, body);
    let tenants: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n == "x-tenant-id")
        .map(|(_, v)| v.as_slice())
        .collect();
    assert_eq!(tenants, [b"demo"]);
    assert_eq!(host.metric("trunkguard.requests.write.allowed"), Some(1));
}

#[test]
fn header_values_that_are_not_utf8_pass_intact_and_the_vm_lives_on() {
    let host = host();
    let mut vm = vm(&host);
    let body = br#"{"domain":"sip.example.com","username":"1001","password":"p"}"#;
    let headers: [(&str, &[u8]); 5] = [
        (":method", b"PUT"),
        (":path", AGENT.as_bytes()),
        ("x-api-key", DEMO_KEY.as_bytes()),
        ("content-type", b"application/json"),
        // RFC 9110 obs-text, as Envoy passes it on.
        ("x-note", b"caf\xe9"),
    ];
    for _ in 0..2 {
        match vm.request(&headers, Some(body), 1).expect("request runs") {
            Exchange::Forwarded { headers, .. } => assert!(
                headers.contains(&("x-note".to_owned(), b"caf\xe9".to_vec())),
                "{headers:?}"
            ),
            other => panic!("not forwarded: {other:?}"),
        }
    }
    let mut bad_key = headers;
    bad_key[2].1 = b"tg_demo_\xff";
    let response = responded(vm.request(&bad_key, Some(body), 1).expect("request runs"));
    assert_eq!(response.status, 401);
    assert_eq!(problem(&response)["detail"], "the API key is not valid");
}

#[test]
fn deeply_nested_bodies_are_refused_and_the_vm_lives_on() {
    let host = host();
    let mut vm = vm(&host);
    let headers = [
        (":method", "PUT"),
        (":path", AGENT),
        ("x-api-key", DEMO_KEY),
        ("content-type", "application/json"),
    ];
    // Within the 64 KiB limit, far deeper than any parser should recurse.
    let arrays = "[".repeat(60_000);
    let objects = r#"{"domain":"#.repeat(5_000);
    let members = format!(
        r#"{{"domain":"sip.example.com","username":"1001","password":"p","x":{}}}"#,
        "[".repeat(5_000)
    );
    for body in [arrays, objects, members] {
        let response = responded(
            vm.request(&headers, Some(body.as_bytes()), 1)
                .expect("the VM does not trap"),
        );
        assert_eq!(
            response.status,
            400,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
    }
    let body = br#"{"domain":"sip.example.com","username":"1001","password":"p"}"#;
    let exchange = vm.request(&headers, Some(body), 1).expect("request runs");
    assert!(
        matches!(exchange, Exchange::Forwarded { .. }),
        "{exchange:?}"
    );
}

/// The `x-tenant-id` values the upstream would see for a request that sent `sent`.
fn forwarded_tenants(vm: &mut Vm, path: &str, sent: &[&str]) -> Vec<String> {
    let mut headers = vec![(":method", "GET"), (":path", path), ("x-api-key", DEMO_KEY)];
    headers.extend(sent.iter().map(|tenant| ("x-tenant-id", *tenant)));
    match vm.request(&headers, None, 1).expect("request runs") {
        Exchange::Forwarded { headers, .. } => headers
            .into_iter()
            .filter(|(n, _)| n == "x-tenant-id")
            .map(|(_, v)| String::from_utf8(v).expect("the filter sets text"))
            .collect(),
        other => panic!("not forwarded: {other:?}"),
    }
}

#[test]
fn only_the_keys_tenant_reaches_the_upstream_however_many_the_client_sent() {
    let host = host();
    let mut vm = vm(&host);
    for sent in [
        &[][..],
        &["acme"],
        &["acme", "demo"],
        &["demo", "acme", "x"],
    ] {
        assert_eq!(
            forwarded_tenants(&mut vm, "/v1/sip/ip-access-list", sent),
            ["demo"],
            "sent {sent:?}"
        );
    }
}

#[test]
fn a_passed_unknown_route_carries_no_tenant_however_many_the_client_sent() {
    let host = host();
    let mut config: serde_json::Value =
        serde_json::from_str(&trunkguard::demo_filter_configuration()).expect("JSON");
    config["unknown_route"] = "pass".into();
    let mut vm = host
        .start_vm(config.to_string().as_bytes())
        .expect("VM runs")
        .unwrap_or_else(|logs| panic!("configuration refused: {logs:?}"));
    for sent in [&[][..], &["acme"], &["acme", "demo"]] {
        assert!(
            forwarded_tenants(&mut vm, "/v1/not-an-api-route", sent).is_empty(),
            "sent {sent:?}"
        );
    }
}

#[test]
fn rejections_are_problem_documents() {
    let host = host();
    let mut vm = vm(&host);
    let json = ("content-type", "application/json");

    let r = responded(
        vm.request(&[(":method", "GET"), (":path", AGENT)], None, 1)
            .expect("runs"),
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        problem(&r)["type"],
        "urn:trunkguard:problem:unauthenticated"
    );

    let r = responded(
        vm.request(
            &[
                (":method", "PUT"),
                (":path", AGENT),
                ("x-api-key", DEMO_KEY),
                json,
            ],
            Some(br#"{"did":"555","port":0}"#),
            2,
        )
        .expect("runs"),
    );
    assert_eq!(r.status, 400);
    let pointers: Vec<String> = problem(&r)["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["pointer"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        pointers,
        ["/domain", "/username", "/password", "/port", "/did"]
    );

    // A chunked body that grows past 64 KiB is refused while buffering.
    let big = vec![b' '; 70_000];
    let r = responded(
        vm.request(
            &[
                (":method", "POST"),
                (":path", "/v1/sip/ip-access-list"),
                ("x-api-key", DEMO_KEY),
                json,
            ],
            Some(&big),
            4,
        )
        .expect("runs"),
    );
    assert_eq!(r.status, 413);

    let r = responded(
        vm.request(
            &[
                (":method", "DELETE"),
                (":path", "/v1/agents"),
                ("x-api-key", DEMO_KEY),
            ],
            None,
            1,
        )
        .expect("runs"),
    );
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    assert_eq!(
        host.metric("trunkguard.requests.read.unauthenticated"),
        Some(1)
    );
    assert_eq!(
        host.metric("trunkguard.requests.write.invalid_body"),
        Some(1)
    );
    assert_eq!(host.metric("trunkguard.requests.write.too_large"), Some(1));
    assert_eq!(
        host.metric("trunkguard.requests.none.method_not_allowed"),
        Some(1)
    );
    assert!(host.metric_names().iter().all(|n| !n.contains("tg_")));
}

#[test]
fn two_vms_share_one_exact_limit() {
    let host = host();
    let (mut first, mut second) = (vm(&host), vm(&host));
    let get = [
        (":method", "GET"),
        (":path", "/v1/sip/ip-access-list"),
        ("x-api-key", ACME_KEY),
    ];
    let mut admitted = 0;
    let mut last_refusal = None;
    for i in 0..60 {
        let vm = if i % 2 == 0 { &mut first } else { &mut second };
        match vm.request(&get, None, 1).expect("runs") {
            Exchange::Forwarded { .. } => admitted += 1,
            Exchange::Responded(r) => last_refusal = Some(r),
            Exchange::Held => panic!("held"),
        }
    }
    assert_eq!(admitted, 20, "the burst, not twice the burst");
    let r = last_refusal.expect("refusals");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"read\";q=20;w=2"));

    // One interval later, exactly one more request passes, whichever VM it reaches.
    host.set_time_ns(1_000 * SECOND + SECOND / 10);
    assert!(matches!(
        second.request(&get, None, 1).expect("runs"),
        Exchange::Forwarded { .. }
    ));
    assert!(matches!(
        first.request(&get, None, 1).expect("runs"),
        Exchange::Responded(_)
    ));
}

#[test]
fn idle_rate_limit_state_is_swept_on_tick() {
    let host = host();
    let mut vm = vm(&host);
    let get = [
        (":method", "GET"),
        (":path", "/v1/sip/ip-access-list"),
        ("x-api-key", ACME_KEY),
    ];
    vm.request(&get, None, 1).expect("runs");
    let key = "trunkguard/ratelimit/acme/read";
    assert_eq!(host.shared_data()[key].0.len(), 8);
    vm.tick().expect("tick");
    assert_eq!(host.shared_data()[key].0.len(), 8, "not idle yet");
    host.set_time_ns(1_010 * SECOND);
    vm.tick().expect("tick");
    assert!(host.shared_data()[key].0.is_empty(), "idle state emptied");
    // Only configured (key, class) pairs ever have state.
    assert_eq!(host.shared_data().len(), 4);
}
