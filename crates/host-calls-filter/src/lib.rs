//! A proxy-wasm HTTP filter that makes, for each request with a body, the host calls that
//! trunkguard's edge filter makes for a valid one, and checks nothing.
//!
//! `cargo xtask bench edge` runs it beside the do-nothing filter and the edge filter, so that
//! what the filter's contract costs Envoy (reading the headers and the clock, a shared-data read
//! and compare-and-swap, setting `x-tenant-id`, holding the headers until the body has been read,
//! counting) is measured apart from the cost of trunkguard's checks. The calls and their order
//! follow `crates/edge-filter/src/contexts.rs`; a change there that adds or removes a host call
//! belongs here too.

#[cfg(target_arch = "wasm32")]
mod proxy {
    use std::time::Duration;

    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

    /// One shared-data entry, as the edge filter keeps per (API key, route class).
    const STATE_KEY: &str = "host-calls/ratelimit/demo/write";

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { counter: 0 }) });
    }}

    struct Root {
        counter: u32,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _: usize) -> bool {
            let Ok(counter) = hostcalls::define_metric(MetricType::Counter, "host_calls.allowed")
            else {
                return false;
            };
            self.counter = counter;
            // As the edge filter: the state exists before the first request, and idle state is
            // swept on a tick.
            let _ = hostcalls::set_shared_data(STATE_KEY, Some(&[]), None);
            let _ = hostcalls::set_tick_period(Duration::from_secs(10));
            true
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Request {
                counter: self.counter,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Request {
        counter: u32,
    }

    impl Context for Request {}

    impl HttpContext for Request {
        fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
            let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
            let now = hostcalls::get_current_time();
            std::hint::black_box((&headers, &now));
            if let Ok((value, Some(version))) = hostcalls::get_shared_data(STATE_KEY) {
                let state = value.unwrap_or_default();
                let _ = hostcalls::set_shared_data(STATE_KEY, Some(&state), Some(version));
            }
            let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, "x-tenant-id", "demo");
            if end_of_stream {
                let _ = hostcalls::increment_metric(self.counter, 1);
                Action::Continue
            } else {
                Action::Pause
            }
        }

        fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
            std::hint::black_box(&body);
            let _ = hostcalls::increment_metric(self.counter, 1);
            Action::Continue
        }
    }
}
