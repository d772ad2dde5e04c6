//! A proxy-wasm HTTP filter that lets every request through untouched.
//!
//! `cargo xtask bench edge` runs it in the same Envoy as `edge_filter.wasm` so that the cost of
//! entering the wasm VM for each request is measured apart from the cost of trunkguard's checks.

#[cfg(target_arch = "wasm32")]
mod proxy {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}

    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(PassThrough))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    /// Sees every request's headers and body callbacks and continues each.
    struct PassThrough;

    impl Context for PassThrough {}

    impl HttpContext for PassThrough {
        fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
            Action::Continue
        }

        fn on_http_request_body(&mut self, _: usize, _: bool) -> Action {
            Action::Continue
        }
    }
}
