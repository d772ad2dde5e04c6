//! The edge filter in real Envoy (`--concurrency 2`) in front of an upstream that records what it
//! receives: every rejection status, byte-identical forwarding, the exact shared rate limit,
//! the metrics, and a configuration Envoy must refuse.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use trunkguard::edge::{Edge, read, start_envoy};
use trunkguard::http::{Connection, Response};
use trunkguard::upstream::Upstream;

const DEMO_KEY: &str = "tg_demo_0123456789abcdef";
const ACME_KEY: &str = "tg_acme_0123456789abcdef";
const AGENT: &str = "/v1/agents/3fa85f64-5717-4562-b3fc-2c963f66afa6/sip-registration";
/// The demo limit (envoy/envoy.yaml): 10 requests/s, burst 20, per key and route class.
const RATE: f64 = 10.0;
const BURST: u64 = 20;

fn assert_problem(response: &Response, status: u16, slug: &str) -> serde_json::Value {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let problem = response.json();
    assert_eq!(problem["type"], format!("urn:trunkguard:problem:{slug}"));
    assert_eq!(problem["status"], status);
    assert!(problem["errors"].is_array());
    problem
}

/// Runs `connections` clients sending GETs with `key` for `window`, returning the number of
/// 200s, of 429s, and one of the 429 responses.
fn hammer(
    edge: &Edge,
    key: &str,
    connections: usize,
    window: Duration,
) -> (u64, u64, Option<Response>) {
    let barrier = Arc::new(Barrier::new(connections));
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let (barrier, addr, key) = (Arc::clone(&barrier), edge.listener, key.to_owned());
            std::thread::spawn(move || {
                let mut connection = Connection::open(addr).expect("connects");
                barrier.wait();
                let (start, mut admitted, mut limited) = (Instant::now(), 0u64, 0u64);
                let mut sample = None;
                // Bounded in time and in count.
                for _ in 0..50_000 {
                    if start.elapsed() >= window {
                        break;
                    }
                    let response = connection
                        .request(
                            "GET",
                            "/v1/sip/ip-access-list",
                            &[("x-api-key", &key), ("x-case", "burst")],
                            None,
                        )
                        .expect("response");
                    match response.status {
                        200 => admitted += 1,
                        429 => {
                            limited += 1;
                            sample.get_or_insert(response);
                        }
                        other => panic!("unexpected status {other}"),
                    }
                }
                (admitted, limited, sample)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .fold((0, 0, None), |(a, l, s), (x, y, z)| (a + x, l + y, s.or(z)))
}

#[test]
fn edge_filter_in_envoy() {
    let upstream = Upstream::start(0);
    let mut edge = start_envoy("edge", upstream.addr().port(), &[]);
    edge.wait_ready();
    let json = [("content-type", "application/json")];
    let demo = ("x-api-key", DEMO_KEY);

    // 401: no key, an unknown key, a key in the wrong scheme.
    let r = edge.send("no-key", "GET", AGENT, &[], None);
    assert_problem(&r, 401, "unauthenticated");
    assert!(r.header("www-authenticate").is_some());
    let r = edge.send(
        "bad-key",
        "GET",
        AGENT,
        &[("authorization", "Bearer tg_nobody")],
        None,
    );
    assert_problem(&r, 401, "unauthenticated");

    // 404 and 405.
    assert_problem(
        &edge.send("no-route", "GET", "/v1/nothing", &[demo], None),
        404,
        "not-found",
    );
    let r = edge.send(
        "wrong-method",
        "PATCH",
        "/v1/sip/ip-access-list",
        &[demo],
        None,
    );
    assert_problem(&r, 405, "method-not-allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));

    // 400 naming the path parameter.
    let r = edge.send(
        "bad-param",
        "GET",
        "/v1/agents/not-a-uuid/sip-registration",
        &[demo],
        None,
    );
    assert_eq!(
        assert_problem(&r, 400, "invalid-parameter")["errors"][0]["parameter"],
        "agentId"
    );

    // 415.
    let r = edge.send(
        "not-json",
        "POST",
        "/v1/sip/ip-access-list",
        &[demo, ("content-type", "text/plain")],
        Some(b"10.0.0.0/8"),
    );
    assert_problem(&r, 415, "unsupported-media-type");

    // 413 from Content-Length, before any body is sent.
    let head = format!(
        "POST /v1/sip/ip-access-list HTTP/1.1\r\nhost: x\r\nx-case: big-declared\r\nx-api-key: {DEMO_KEY}\r\ncontent-type: application/json\r\ncontent-length: 70000\r\n\r\n"
    );
    let r = Connection::open(edge.listener)
        .and_then(|mut c| c.send_raw(head.as_bytes()))
        .expect("413");
    assert_problem(&r, 413, "payload-too-large");

    // 413 while buffering a chunked body that never declared its size.
    let chunk = vec![b' '; 70_000];
    let mut raw = format!(
        "POST /v1/sip/ip-access-list HTTP/1.1\r\nhost: x\r\nx-case: big-chunked\r\nx-api-key: {DEMO_KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        chunk.len()
    )
    .into_bytes();
    raw.extend_from_slice(&chunk);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = Connection::open(edge.listener)
        .and_then(|mut c| c.send_raw(&raw))
        .expect("413");
    assert_problem(&r, 413, "payload-too-large");

    // 400 listing every invalid field. The request's framing was fine, so the connection stays
    // open for the next one (envoy.yaml's stream_error_on_invalid_http_message).
    let mut connection = Connection::open(edge.listener).expect("connects");
    let mut send_bad_body = || {
        connection
            .request(
                "PUT",
                AGENT,
                &[("x-case", "bad-body"), demo, json[0]],
                Some(br#"{"domain":"bad domain","did":"5551234","xDestUser":"a b"}"#),
            )
            .expect("a response on the same connection")
    };
    let r = send_bad_body();
    assert_ne!(r.header("connection"), Some("close"));
    assert_problem(&send_bad_body(), 400, "invalid-body");
    let problem = assert_problem(&r, 400, "invalid-body");
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert_eq!(
        pointers,
        ["/domain", "/username", "/password", "/did", "/xDestUser"]
    );

    // Valid requests reach the upstream byte-identical, with x-tenant-id set from the key.
    let body = format!(
        r#"{{"domain":"sip.example.com","username":"1001","password":"s3cret","did":"+15551234567","xDestUser":"routing.user+1@example","proxy":"proxy.sip.example.com","port":5060,"transport":"udp","subscribe":false,"authUsername":"{}"}}"#,
        "a".repeat(64)
    );
    let r = edge.send(
        "valid-put",
        "PUT",
        AGENT,
        &[demo, json[0], ("x-tenant-id", "acme"), ("x-trace", "t-1")],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = edge.send(
        "valid-get",
        "GET",
        "/v1/sip/ip-access-list?page=2",
        &[
            ("authorization", &format!("Bearer {ACME_KEY}")),
            ("x-tenant-id", "demo"),
            ("x-tenant-id", "other"),
        ],
        None,
    );
    assert_eq!(r.status, 200);

    // HEAD is served by a GET route, under the same key and limit; its answers have no content.
    let r = edge.send("head", "HEAD", "/v1/sip/ip-access-list", &[demo], None);
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = edge.send("head-no-key", "HEAD", "/v1/sip/ip-access-list", &[], None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));

    // A field value may be obs-text (RFC 9110), which is not UTF-8: passed on byte for byte,
    // and the worker's filter goes on serving the same connection. Not UTF-8 in the key: 401.
    let obs_text = |key: &[u8]| {
        [
            b"GET /v1/sip/ip-access-list HTTP/1.1\r\nhost: x\r\nx-case: obs-text\r\nx-api-key: "
                .as_slice(),
            key,
            b"\r\nx-note: caf\xe9\r\n\r\n",
        ]
        .concat()
    };
    let mut connection = Connection::open(edge.listener).expect("connects");
    for key in [DEMO_KEY.as_bytes(), DEMO_KEY.as_bytes(), b"tg_demo_\xff"] {
        let r = connection.send_raw(&obs_text(key)).expect("a response");
        if key.is_ascii() {
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        } else {
            assert_eq!(
                assert_problem(&r, 401, "unauthenticated")["detail"],
                "the API key is not valid"
            );
        }
    }

    let seen = upstream.requests();
    let cases: Vec<String> = seen
        .iter()
        .flat_map(|r| r.header_values("x-case"))
        .collect();
    assert_eq!(
        cases,
        ["valid-put", "valid-get", "head", "obs-text", "obs-text"],
        "the upstream saw a rejected request"
    );
    assert_eq!(
        seen[2].request_line(),
        "HEAD /v1/sip/ip-access-list HTTP/1.1"
    );
    assert_eq!(seen[2].header_values("x-tenant-id"), ["demo"]);
    assert_eq!(seen[3].header_bytes("x-note"), [b"caf\xe9"]);
    let put = &seen[0];
    assert_eq!(put.body, body.as_bytes(), "body forwarded byte-identical");
    assert_eq!(put.request_line(), format!("PUT {AGENT} HTTP/1.1"));
    assert_eq!(
        put.header_values("x-tenant-id"),
        ["demo"],
        "client x-tenant-id replaced"
    );
    assert_eq!(put.header_values("x-trace"), ["t-1"]);
    assert_eq!(
        seen[1].header_values("x-tenant-id"),
        ["acme"],
        "both client x-tenant-id headers replaced"
    );
    assert_eq!(
        seen[1].request_line(),
        "GET /v1/sip/ip-access-list?page=2 HTTP/1.1"
    );

    // Exact limit across both workers: 16 connections for 3 s admit burst + rate * 3 (+-1).
    std::thread::sleep(Duration::from_millis(2_100)); // let acme's read limit replenish
    let window = Duration::from_secs(3);
    let (admitted, limited, sample) = hammer(&edge, ACME_KEY, 16, window);
    let expected = BURST as f64 + RATE * window.as_secs_f64();
    assert!(
        (admitted as f64 - expected).abs() <= 1.0,
        "admitted {admitted}, expected {expected} +- 1 ({limited} limited)"
    );
    assert!(limited > 0);
    let bursts = upstream
        .requests()
        .iter()
        .filter(|r| r.header_values("x-case") == ["burst"])
        .count();
    assert_eq!(
        bursts as u64, admitted,
        "every admitted request, and only those, reached the upstream"
    );

    // A 429 carries Retry-After and the IETF RateLimit headers.
    let r = sample.expect("a 429 was seen during the burst");
    assert_problem(&r, 429, "rate-limited");
    assert!(
        r.header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1))
    );
    assert_eq!(r.header("ratelimit-policy"), Some("\"read\";q=20;w=2"));
    assert!(
        r.header("ratelimit")
            .is_some_and(|v| v.starts_with("\"read\";r=0;t="))
    );

    // Metrics: counters per outcome and class, both workers used, no key material.
    let stats = edge.stats();
    let stat = |name: &str| {
        stats
            .get(&format!("wasmcustom.trunkguard.requests.{name}"))
            .copied()
            .unwrap_or_default()
    };
    assert_eq!(stat("read.unauthenticated"), 4);
    assert_eq!(stat("none.unknown_route"), 1);
    assert_eq!(stat("none.method_not_allowed"), 1);
    assert_eq!(stat("read.bad_parameter"), 1);
    assert_eq!(stat("write.unsupported_media_type"), 1);
    assert_eq!(stat("write.too_large"), 2);
    assert_eq!(stat("write.invalid_body"), 2);
    assert_eq!(stat("write.allowed"), 1);
    assert_eq!(stat("read.allowed"), 4 + admitted);
    assert_eq!(stat("read.rate_limited"), limited);
    for name in stats.keys().filter(|n| n.starts_with("wasmcustom")) {
        assert!(
            !name.contains("tg_") && !name.contains("0238dc9e"),
            "key material in {name}"
        );
    }
    let workers: Vec<u64> = stats
        .iter()
        .filter(|(n, _)| {
            n.starts_with("listener.127.0.0.1_")
                && n.ends_with("downstream_cx_total")
                && n.contains(".worker_")
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(
        workers.len() == 2 && workers.iter().all(|v| *v > 0),
        "both workers took connections: {workers:?}"
    );
    assert!(edge.process.is_running());
}

#[test]
fn envoy_refuses_an_invalid_filter_configuration() {
    let upstream = Upstream::start(0);
    let mut edge = start_envoy(
        "bad-config",
        upstream.addr().port(),
        &[(
            "\"max_body_bytes\": 65536",
            "\"max_body_bytes\": 0".to_owned(),
        )],
    );
    let status = edge.process.wait_exit(Duration::from_secs(30));
    let log = read(&edge.log);
    assert!(
        status.is_some_and(|s| !s.success()),
        "Envoy kept running with an invalid configuration; log:\n{log}"
    );
    assert!(
        log.contains("invalid trunkguard configuration: max_body_bytes"),
        "the log names the problem:\n{log}"
    );
}
