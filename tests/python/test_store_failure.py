"""A remote store that goes away: the tool says STORAGE_ERROR (before any deadline
turns it into a trap), the server keeps serving, and it recovers by itself when the
store is back. Against a real FalkorDB, killed and restarted, or paused (SIGSTOP: it
accepts connections and never answers)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, server_env
from mcp import StdioServerParameters
from mcp.client import Client
from stores import FalkorDB, neo4j_graph_config

pytestmark = pytest.mark.anyio




async def entity(client: Client, name: str) -> dict:
    result = await client.call_tool(
        "create_entity", {"name": name, "entity_type": "TOOL", "summary": f"{name} summary"}
    )
    body = json.loads(result.content[0].text) if result.is_error else result.structured_content
    return {"error": result.is_error, **body}


async def recovers(client: Client, name: str) -> None:
    """The next calls succeed again without a restart (within a generous bound)."""
    deadline = time.monotonic() + 60
    while True:
        outcome = await entity(client, name)
        if not outcome["error"]:
            return
        assert outcome["code"] == "STORAGE_ERROR", outcome
        assert time.monotonic() < deadline, f"no recovery: {outcome}"
        time.sleep(0.5)


async def still_serving(client: Client) -> None:
    result = await client.call_tool("get_session_id", {})
    assert not result.is_error


async def test_a_stopped_store_is_a_storage_error_and_recovery_is_automatic(
    falkordb: FalkorDB, tmp_path: Path
) -> None:
    config = neo4j_graph_config(tmp_path / "neo4j.toml", falkordb.bolt_url)
    params = StdioServerParameters(
        command=str(BIN), args=["serve"], env=server_env(tmp_path / "data", "failure", WW_CONFIG=str(config))
    )
    async with Client(params, read_timeout_seconds=120) as client:
        assert not (await entity(client, "before"))["error"]

        falkordb.stop()
        down = await entity(client, "while down")
        assert down["error"] and down["code"] == "STORAGE_ERROR", down
        assert "bolt://127.0.0.1" in down["message"]
        await still_serving(client)

        falkordb.start()
        await recovers(client, "after restart")

        falkordb.pause()
        hung = await entity(client, "while hung")
        assert hung["error"] and hung["code"] == "STORAGE_ERROR", hung
        await still_serving(client)
        falkordb.resume()
        await recovers(client, "after resume")
        stats = (await client.call_tool("memory_stats", {})).structured_content
        graph = [s for s in stats["stores"] if s["backend"] == "neo4j"]
        assert graph and graph[0]["healthy"], stats["stores"]


async def test_plugins_lists_a_configuration_whose_store_is_down_and_serve_can_start_anyway(
    tmp_path: Path,
) -> None:
    falkordb = FalkorDB(tmp_path / "falkordb")  # not started yet
    config = neo4j_graph_config(tmp_path / "neo4j.toml", falkordb.bolt_url)
    env = server_env(tmp_path / "data", "down", WW_CONFIG=str(config))
    # `plugins` shows the configuration, marking the endpoint that does not answer.
    listed = subprocess.run(
        [str(BIN), "plugins"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    network = [line for line in listed.stdout.splitlines() if "network bolt://" in line]
    assert len(network) == 1 and "UNREACHABLE" in network[0], listed.stdout
    assert "graph-store" in listed.stdout and "neo4j" in listed.stdout
    # `serve` still refuses to start on it, naming it...
    refused = subprocess.run(
        [str(BIN), "serve"], env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode != 0
    assert "cannot reach its endpoint" in refused.stderr and falkordb.bolt_url in refused.stderr
    # ...unless told to start anyway: its calls are STORAGE_ERROR until the store is up.
    params = StdioServerParameters(
        command=str(BIN), args=["serve", "--no-endpoint-check"], env=env
    )
    async with Client(params, read_timeout_seconds=120) as client:
        down = await entity(client, "while down")
        assert down["error"] and down["code"] == "STORAGE_ERROR", down
        await still_serving(client)
        falkordb.start()
        try:
            await recovers(client, "once up")
        finally:
            falkordb.stop()
