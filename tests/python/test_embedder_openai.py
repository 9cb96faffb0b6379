"""The OpenAI-compatible embedder against a local `/v1/embeddings` endpoint: requests as
the API defines them (model, inputs in batches, bearer key, traceparent), vectors used by
the tools, and a clear error when the model's dimension is not the configured one."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, server_env
from stores import EmbeddingServer

KEY = "sk-test-0123456789"


@pytest.fixture
def endpoint() -> Iterator[EmbeddingServer]:
    server = EmbeddingServer(dimension=64)
    yield server
    server.stop()


def config(path: Path, url: str, dimension: int = 64, batch: int = 2) -> Path:
    path.write_text(
        f"""[roles.embedder]
component = "embedder_openai.wasm"
name = "openai"
endpoint = "{url}"
settings = {{ model = "test-embed", dimension = {dimension}, batch_size = {batch} }}
secrets = {{ api_key = "WW_TEST_EMBEDDINGS_KEY" }}
"""
    )
    return path


def run(tmp_path: Path, cfg: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = server_env(
        tmp_path / "data", "embedder", WW_CONFIG=str(cfg), WW_TEST_EMBEDDINGS_KEY=KEY, **env
    )
    return subprocess.run(
        [str(BIN), *args], env=environment, capture_output=True, text=True, timeout=120
    )


def test_texts_go_out_in_batches_with_the_key_and_the_trace(endpoint: EmbeddingServer, tmp_path: Path) -> None:
    cfg = config(tmp_path / "openai.toml", endpoint.url)
    texts = json.dumps(["one fish", "", "two fish", "red fish", "blue fish"])
    done = run(tmp_path, cfg, "invoke", "ww:memory/embedder@0.1.0", "embed", texts.replace('"', '"'),
               WW_OTEL_CONSOLE="true")
    assert done.returncode == 0, done.stderr
    # Four non-empty texts in batches of two; the empty one is a zero vector, not sent.
    assert [r["body"]["input"] for r in endpoint.requests] == [
        ["one fish", "two fish"],
        ["red fish", "blue fish"],
    ]
    for r in endpoint.requests:
        assert r["path"] == "/v1/embeddings"
        assert r["body"]["model"] == "test-embed"
        assert r["headers"]["authorization"] == f"Bearer {KEY}"
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", r["headers"]["traceparent"])
    # Each request is a CLIENT span inside the embedder's span, in the caller's trace.
    trace_ids = {r["headers"]["traceparent"][3:35] for r in endpoint.requests}
    assert len(trace_ids) == 1
    assert f"trace {trace_ids.pop()}" in done.stderr
    tree = done.stderr
    assert re.search(r"└─ openai\.embed .*\n(.*\n)*?\s+├─ POST /v1/embeddings\s+CLIENT", tree), tree
    assert KEY not in tree


def test_the_tools_run_on_its_vectors(endpoint: EmbeddingServer, tmp_path: Path) -> None:
    cfg = config(tmp_path / "openai.toml", endpoint.url)
    created = run(tmp_path, cfg, "call", "create_episode", json.dumps({"content": "the cache test was flaky"}))
    assert created.returncode == 0, created.stderr
    found = run(tmp_path, cfg, "call", "recall_episodes", json.dumps({"query": "flaky cache"}))
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["episodes"][0]["episode"]["content"] == "the cache test was flaky"


def test_a_model_of_another_dimension_is_a_clear_error(endpoint: EmbeddingServer, tmp_path: Path) -> None:
    cfg = config(tmp_path / "openai.toml", endpoint.url, dimension=384)
    done = run(tmp_path, cfg, "call", "create_episode", json.dumps({"content": "anything"}))
    assert done.returncode != 0
    error = json.loads(done.stdout)
    assert error["code"] == "EMBEDDING_ERROR"
    assert "dimension 64" in error["message"] and "configured dimension is 384" in error["message"]


def test_an_endpoint_that_does_not_answer_is_refused_at_start(tmp_path: Path) -> None:
    from stores import free_port

    cfg = config(tmp_path / "openai.toml", f"http://127.0.0.1:{free_port()}")
    done = run(tmp_path, cfg, "call", "get_session_id", "{}")
    assert done.returncode != 0
    assert "cannot reach its endpoint" in done.stderr and "openai" in done.stderr


def test_a_missing_secret_is_named(endpoint: EmbeddingServer, tmp_path: Path) -> None:
    cfg = config(tmp_path / "openai.toml", endpoint.url)
    environment = server_env(tmp_path / "data", "embedder", WW_CONFIG=str(cfg))
    done = subprocess.run([str(BIN), "call", "get_session_id", "{}"], env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "WW_TEST_EMBEDDINGS_KEY" in done.stderr
