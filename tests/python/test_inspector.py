"""The MCP Inspector's CLI (npm `@modelcontextprotocol/inspector`, pinned in the Makefile)
against the real server, over stdio and over streamable HTTP: it lists the tools and calls
every one, and prints no warning (its schema validator warns at every JSON Schema keyword
or format it does not know)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, ROOT, server_env, start_http
from test_gateway import TOOLS

INSPECTOR = Path(
    os.environ.get("WW_INSPECTOR", ROOT / "target/inspector/node_modules/.bin/mcp-inspector")
)


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    assert INSPECTOR.exists(), f"{INSPECTOR} is missing: run `make inspector` (make test does)"


class Inspector:
    """Runs the Inspector CLI against one server: a command it starts (stdio) or a URL."""

    def __init__(self, target: list[str]):
        self.target = target

    def run(self, method: str, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [str(INSPECTOR), "--cli", *self.target, "--method", method, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{method} {args}: {output}"
        # Nothing but the result: no warning about the schemas or anything else.
        assert done.stderr.strip() == "", f"{method} {args}: {done.stderr}"
        for word in ("warn", "unknown format", "ignored"):
            assert word not in output.lower(), f"{method} {args}: {output}"
        return json.loads(done.stdout)

    def call(self, tool: str, **arguments: str) -> dict[str, Any]:
        pairs = [f"{k}={v}" for k, v in arguments.items()]
        args = ["--tool-name", tool] + (["--tool-arg", *pairs] if pairs else [])
        result = self.run("tools/call", *args)
        assert result["isError"] is False, f"{tool}: {result}"
        return result["structuredContent"]


def every_tool(inspector: Inspector) -> None:
    listed = inspector.run("tools/list")["tools"]
    assert [t["name"] for t in listed] == TOOLS
    episode = inspector.call("create_episode", content="the nightly deploy failed at the smoke test")
    recalled = inspector.call("recall_episodes", query="nightly deploy")
    assert recalled["episodes"][0]["episode"]["id"] == episode["id"]
    inspector.call("query_at_time", query="deploy", point_in_time=episode["ingestion_time"])
    inspector.call("mark_important", episode_id=episode["id"])
    service = inspector.call(
        "create_entity", name="deploy service", entity_type="TOOL", summary="ships builds"
    )
    cluster = inspector.call(
        "create_entity", name="staging cluster", entity_type="CONCEPT", summary="runs builds"
    )
    inspector.call(
        "create_relation",
        source_id=service["entity"]["id"],
        target_id=cluster["entity"]["id"],
        relation_type="REQUIRES",
    )
    inspector.call("semantic_recall", query="deploy")
    inspector.call("spread_activation", seed_entities=json.dumps([service["entity"]["id"]]))
    inspector.call("supersede_fact", entity_id=cluster["entity"]["id"], new_summary="runs builds on arm64")
    skill = inspector.call(
        "create_skill",
        trajectory=json.dumps([{"action": "rerun the smoke test"}, {"action": "roll back"}]),
        outcome_score="0.9",
        domain="deploys",
    )
    assert skill["stored"], skill
    skill_id = skill["skill"]["id"]
    inspector.call("recall_skill", task="the smoke test failed")
    inspector.call("execute_skill", skill_id=skill_id, success="true")
    inspector.call("deprecate_skill", skill_id=skill_id)
    inspector.call("consolidate_now")
    inspector.call("get_provenance", entity_id=service["entity"]["id"])
    inspector.call("get_session_id")
    inspector.call("memory_stats")
    # A tool error reaches the client as the error result it is (before, its body was
    # structured content the TypeScript SDK checked against the output schema and turned
    # into a protocol error).
    failed = inspector.run("tools/call", "--tool-name", "get_provenance", "--tool-arg", "entity_id=nope")
    assert failed["isError"] is True and "structuredContent" not in failed, failed
    assert json.loads(failed["content"][0]["text"])["code"] == "NOT_FOUND"


def test_the_inspector_calls_every_tool_over_stdio_without_a_warning(tmp_path: Path) -> None:
    # A server per Inspector run; they share the data directory and so its session.
    env = server_env(tmp_path / "stdio", None)
    pairs = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
    every_tool(Inspector([*pairs, str(BIN), "serve"]))


def test_the_inspector_calls_every_tool_over_http_without_a_warning(tmp_path: Path) -> None:
    server = start_http(tmp_path / "http", None)
    try:
        every_tool(Inspector([server.url, "--transport", "http"]))
    finally:
        server.stop()
