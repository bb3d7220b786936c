//! The thin host layer: proxy-wasm contexts that read headers and bodies from Envoy, call the
//! core for every decision, and write back headers, local replies and shared data.

mod abi;
mod http;
mod metrics;
mod root;
mod shared;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> { Box::new(root::GatewayRoot::default()) });
}}
