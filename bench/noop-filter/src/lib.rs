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

    /// A host call repeated `n` times after the body is read (`reply` and `read` modes), so
    /// `bench/decompose.py`'s probe table can price one call: `reply,getshared*10`.
    #[derive(Clone, Copy)]
    enum Probe {
        /// `get_map(request headers)`.
        GetHeaders,
        /// `get_map_value(request headers, "authorization")`.
        GetHeader,
        /// `set_map_value(request headers, "x-probe", ..)`.
        SetHeader,
        /// `get_shared_data` of a 4 KiB value.
        GetShared,
        /// `get_shared_data` of a key never set.
        GetSharedAbsent,
        /// `set_shared_data` of a 4 KiB value, no CAS.
        SetShared,
        /// `increment_metric` on a counter.
        Metric,
        /// `get_current_time`.
        Time,
    }

    /// `rewrite` alone does every step; `rewrite:<letters>` only the named ones, so
    /// `bench/decompose.py` can price each: g get_map(request headers), c x-semgate-cluster,
    /// p :path, a authorization, e accept-encoding removed; G get_map(response headers),
    /// x x-semgate-cache, y x-semgate-provider.
    const REWRITE_ALL: &str = "gcpaeGxy";

    struct NoopRoot {
        mode: Mode,
        probes: Vec<(Probe, u32)>,
        counter: u32,
        steps: &'static [u8],
    }
    struct NoopHttp {
        mode: Mode,
        probes: Vec<(Probe, u32)>,
        counter: u32,
        steps: &'static [u8],
    }

    fn run_probes(probes: &[(Probe, u32)], counter: u32) {
        for &(probe, n) in probes {
            for _ in 0..n {
                match probe {
                    Probe::GetHeaders => drop(hostcalls::get_map(MapType::HttpRequestHeaders)),
                    Probe::GetHeader => drop(hostcalls::get_map_value(MapType::HttpRequestHeaders, "authorization")),
                    Probe::SetHeader => {
                        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-probe", Some("1"));
                    }
                    Probe::GetShared => drop(hostcalls::get_shared_data("probe:4k")),
                    Probe::GetSharedAbsent => drop(hostcalls::get_shared_data("probe:absent")),
                    Probe::SetShared => drop(hostcalls::set_shared_data("probe:4k", Some(&[7u8; 4096]), None)),
                    Probe::Metric => drop(hostcalls::increment_metric(counter, 1)),
                    Probe::Time => drop(hostcalls::get_current_time()),
                }
            }
        }
    }
    impl Context for NoopRoot {}
    impl Context for NoopHttp {}

    impl RootContext for NoopRoot {
        fn on_configure(&mut self, _: usize) -> bool {
            let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
                .ok()
                .flatten()
                .unwrap_or_default();
            let config = String::from_utf8(config).unwrap_or_default();
            let mut parts = config.split(',');
            let base = parts.next().unwrap_or_default().to_string();
            self.probes = parts
                .filter_map(|p| {
                    let (name, n) = p.split_once('*').unwrap_or((p, "1"));
                    let probe = match name {
                        "getheaders" => Probe::GetHeaders,
                        "getheader" => Probe::GetHeader,
                        "setheader" => Probe::SetHeader,
                        "getshared" => Probe::GetShared,
                        "getsharedabsent" => Probe::GetSharedAbsent,
                        "setshared" => Probe::SetShared,
                        "metric" => Probe::Metric,
                        "time" => Probe::Time,
                        _ => return None,
                    };
                    Some((probe, n.parse().unwrap_or(1)))
                })
                .collect();
            let _ = hostcalls::set_shared_data("probe:4k", Some(&[7u8; 4096]), None);
            self.counter = hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, "noop_probe").unwrap_or(0);
            let (base, steps) = base.split_once(':').unwrap_or((&base, REWRITE_ALL));
            self.steps = Box::leak(steps.as_bytes().to_vec().into_boxed_slice());
            self.mode = match base.as_bytes() {
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
            Some(Box::new(NoopHttp {
                mode: self.mode,
                probes: self.probes.clone(),
                counter: self.counter,
                steps: self.steps,
            }))
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
                run_probes(&self.probes, self.counter);
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
                let step = |c: u8| self.steps.contains(&c);
                if step(b'g') {
                    let _ = hostcalls::get_map(MapType::HttpRequestHeaders);
                }
                if step(b'c') {
                    let _ = hostcalls::set_map_value(
                        MapType::HttpRequestHeaders,
                        "x-semgate-cluster",
                        Some("provider_openai"),
                    );
                }
                if step(b'p') {
                    let _ =
                        hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some("/v1/chat/completions"));
                }
                if step(b'a') {
                    let _ = hostcalls::set_map_value(
                        MapType::HttpRequestHeaders,
                        "authorization",
                        Some("Bearer sk-fake-provider"),
                    );
                }
                if step(b'e') {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "accept-encoding", None);
                }
            }
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
            if self.mode == Mode::Rewrite {
                let step = |c: u8| self.steps.contains(&c);
                if step(b'G') {
                    let _ = hostcalls::get_map(MapType::HttpResponseHeaders);
                }
                if step(b'x') {
                    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-semgate-cache", Some("miss"));
                }
                if step(b'y') {
                    let _ =
                        hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-semgate-provider", Some("openai"));
                }
            }
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot { mode: Mode::Noop, probes: Vec::new(), counter: 0, steps: b"" }) });
    }}
}
