//! A filter that only lets every callback continue: what Envoy pays to run any Rust Wasm
//! HTTP filter, measured beside semgate in `make bench`.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    struct NoopRoot;
    struct NoopHttp;
    impl Context for NoopRoot {}
    impl Context for NoopHttp {}
    impl HttpContext for NoopHttp {}
    impl RootContext for NoopRoot {
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(NoopHttp))
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
    }}
}
