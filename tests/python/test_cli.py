"""The `ww-memory` command line as a newcomer uses it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import BIN, PLUGINS, ROOT, server_env


def run(
    tmp_path: Path, *args: str, session: str = "cli", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args],
        env=server_env(tmp_path / "data", session, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plugins_names_the_component_world_and_file_of_every_role(tmp_path: Path) -> None:
    out = run(tmp_path, "plugins")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:7]}
    expected = {
        "embedder": ("embedder-provider", "embedder_bert.wasm"),
        "vector-store": ("combined-store", "store_embedded.wasm"),
        "graph-store": ("combined-store", "store_embedded.wasm"),
        "episodic": ("episodic-service", "service_episodic.wasm"),
        "semantic": ("semantic-service", "service_semantic.wasm"),
        "procedural": ("procedural-service", "service_procedural.wasm"),
    }
    assert set(rows) == set(expected)
    for role, (world, file) in expected.items():
        _, _, wit_world, path = rows[role]
        assert wit_world == f"ww:memory/{world}@0.1.0", role
        assert Path(path) == PLUGINS / file, role
    # The model the embedder runs, loaded to say so.
    model = out.stdout.splitlines()[7]
    assert model.split()[:2] == ["model", "sentence-transformers/all-MiniLM-L6-v2"], model
    assert "384 dimensions" in model
    # How it runs: through wasi:nn on ONNX Runtime (unpacked by make beside the binary).
    inference = out.stdout.splitlines()[8]
    assert inference.split()[:3] == ["inference", "wasi-nn", "onnx"], inference
    assert "model.onnx" in inference
    # Without the library: the model runs in the component, and plugins says why.
    off = run(tmp_path, "plugins", WW_ONNXRUNTIME="off")
    assert off.returncode == 0, off.stderr
    line = off.stdout.splitlines()[8]
    assert line.split()[:2] == ["inference", "in-component"], line
    assert "switched off" in line and "slower" in off.stderr


def test_import_stores_a_file_once_however_often_it_runs(tmp_path: Path) -> None:
    turns = [
        {"content": f"Caroline: turn {i} about the support group", "context": {"dia_id": f"D1:{i}"}}
        for i in range(70)
    ]
    file = tmp_path / "history.jsonl"
    file.write_text("\n".join(json.dumps(t) for t in turns) + "\n")
    first = run(tmp_path, "import", str(file), "--batch", "32")
    assert first.returncode == 0, first.stderr
    assert "70 episodes stored, 0 already stored before" in first.stderr
    again = run(tmp_path, "import", str(file))
    assert again.returncode == 0, again.stderr
    assert "0 episodes stored, 70 already stored before" in again.stderr
    stats = json.loads(run(tmp_path, "call", "memory_stats").stdout)
    assert stats["counts"]["episodes"] == 70
    # In order: the last turn follows the one before it.
    recalled = json.loads(run(tmp_path, "call", "recall_episodes", '{"query": "turn 69", "limit": 1}').stdout)
    assert recalled["episodes"][0]["episode"]["context"]["dia_id"] == "D1:69"
    # A bad line is named, and nothing is stored from the file.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "fine"}\n{"contnet": "typo"}\n')
    refused = run(tmp_path, "import", str(bad))
    assert refused.returncode != 0 and "line 2" in refused.stderr, refused.stderr
    assert json.loads(run(tmp_path, "call", "memory_stats").stdout)["counts"]["episodes"] == 70


def test_call_prints_the_result_and_fails_on_a_tool_error(tmp_path: Path) -> None:
    created = run(tmp_path, "call", "create_episode", '{"content": "from the command line"}')
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert body["session"] == "cli"
    recalled = run(tmp_path, "call", "recall_episodes", '{"query": "command line"}')
    assert json.loads(recalled.stdout)["episodes"][0]["episode"]["id"] == body["id"]
    failed = run(tmp_path, "call", "mark_important", '{"episode_id": "missing"}')
    assert failed.returncode != 0
    assert json.loads(failed.stdout)["code"] == "NOT_FOUND"
    not_json = run(tmp_path, "call", "create_episode", "{oops")
    assert not_json.returncode != 0 and "not valid JSON" in not_json.stderr


def test_help_explains_the_commands(tmp_path: Path) -> None:
    out = run(tmp_path, "--help")
    assert out.returncode == 0
    for word in ["serve", "call", "plugins", "import", "--session", "--config"]:
        assert word in out.stdout, word
    serve = run(tmp_path, "serve", "--help")
    assert "--http" in serve.stdout and "WW_AUTH_TOKEN" in serve.stdout


def test_without_a_session_calls_share_the_data_directorys_default_one(tmp_path: Path) -> None:
    env = server_env(tmp_path / "data", None)
    calls = [
        subprocess.run([str(BIN), "call", "get_session_id"], env=env, capture_output=True, text=True, timeout=300)
        for _ in range(2)
    ]
    first, second = (json.loads(c.stdout) for c in calls)
    assert first["session_id"] == second["session_id"]
    assert first["session_source"] == "data-directory"
    assert f"session {first['session_id']} (the data directory's default session" in calls[0].stderr


def test_the_shipped_embedded_configuration_is_the_default_spelled_out(tmp_path: Path) -> None:
    config = str(ROOT / "config/embedded.toml")
    default = run(tmp_path, "plugins").stdout.splitlines()[:7]
    assert run(tmp_path, "--config", config, "plugins").stdout.splitlines()[:7] == default
    created = run(tmp_path, "--config", config, "call", "create_episode", '{"content": "configured"}')
    assert created.returncode == 0, created.stderr
    # The store wrote where WW_DATA_DIR says, not into ./data.
    assert (tmp_path / "data" / ".ww-lock").exists()
    recalled = run(tmp_path, "call", "recall_episodes", '{"query": "configured"}')
    assert json.loads(recalled.stdout)["count"] == 1


def test_plugins_shows_a_remote_adapters_endpoint_and_the_telemetry(tmp_path: Path) -> None:
    from stores import EmbeddingServer

    server = EmbeddingServer(dimension=8)
    try:
        config = tmp_path / "openai.toml"
        config.write_text(
            f'[roles.embedder]\ncomponent = "embedder_openai.wasm"\nname = "openai"\n'
            f'endpoint = "{server.url}"\nsettings = {{ model = "m", dimension = 8 }}\n'
        )
        out = run(tmp_path, "--config", str(config), "plugins", WW_OTEL_CONSOLE="true")
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[:2] == ["embedder", "openai"]
    at = lines.index(next(l for l in lines if l.startswith("openai  (")))
    assert lines[at + 1] == f"  network {server.url}  (nothing else)"
    assert lines[-1].startswith("telemetry: tracing to the console")
