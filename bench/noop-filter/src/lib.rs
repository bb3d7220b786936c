//! A filter that does nothing by default: what Envoy pays to run any Rust Wasm HTTP filter,
//! measured beside semgate in `make bench`. Its plugin configuration may name a mode that adds
//! one piece of semgate's host-side work at a time, so `bench/decompose.py` can attribute
//! semgate's cost: `noop` < `pause` (hold headers, buffer the body) < `read` (+ copy the body
//! into the VM) < `rewrite` (+ the request/response header changes semgate makes on a miss).
//! `reply` holds, reads the body, then answers locally with a static body and the headers a
//! semgate hit carries: the least any Wasm filter can do to answer a cache hit.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

    #[derive(Clone, Copy, PartialEq, PartialOrd)]
    enum Mode {
        Noop,
        Pause,
        Read,
        Rewrite,
        Reply,
    }

    /// ~300 B, like bench/envoy_config.py's direct_response body.
    const REPLY: &[u8] = br#"{"id":"chatcmpl-direct","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"A cached answer of about the size a short chat completion has."},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":12,"total_tokens":32}}"#;

    struct NoopRoot {
        mode: Mode,
    }
    struct NoopHttp {
        mode: Mode,
    }
    impl Context for NoopRoot {}
    impl Context for NoopHttp {}

    impl RootContext for NoopRoot {
        fn on_configure(&mut self, _: usize) -> bool {
            let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
                .ok()
                .flatten()
                .unwrap_or_default();
            self.mode = match config.as_slice() {
                b"pause" => Mode::Pause,
                b"read" => Mode::Read,
                b"rewrite" => Mode::Rewrite,
                b"reply" => Mode::Reply,
                _ => Mode::Noop,
            };
            true
        }
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(NoopHttp { mode: self.mode }))
        }
    }

    impl HttpContext for NoopHttp {
        fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
            if self.mode >= Mode::Pause && !end_of_stream {
                Action::Pause
            } else {
                Action::Continue
            }
        }

        fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
            if self.mode < Mode::Pause {
                return Action::Continue;
            }
            if !end_of_stream {
                return Action::Pause;
            }
            if self.mode >= Mode::Read {
                let _ = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size);
            }
            if self.mode == Mode::Reply {
                let headers = vec![
                    ("content-type", "application/json"),
                    ("x-semgate-cache", "hit-exact"),
                    ("x-semgate-key", "0123456789abcdef"),
                    ("age", "1"),
                ];
                let _ = hostcalls::send_http_response(200, headers, Some(REPLY));
                return Action::Pause;
            }
            if self.mode >= Mode::Rewrite {
                let _ = hostcalls::get_map(MapType::HttpRequestHeaders);
                let _ =
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-semgate-cluster", Some("provider_openai"));
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some("/v1/chat/completions"));
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    "authorization",
                    Some("Bearer sk-fake-provider"),
                );
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "accept-encoding", None);
            }
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
            if self.mode == Mode::Rewrite {
                let _ = hostcalls::get_map(MapType::HttpResponseHeaders);
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-semgate-cache", Some("miss"));
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-semgate-provider", Some("openai"));
            }
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot { mode: Mode::Noop }) });
    }}
}
