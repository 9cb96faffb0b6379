"""The storage conformance suite: the 17 tools' scenario, the same tests, against each
store configuration. The embedded store (the default); the graph role on the Neo4j adapter
over Bolt against a real FalkorDB started here; the vector role on the Qdrant adapter
against the Qdrant stand-in (validated against Qdrant's OpenAPI models), alone and with
Neo4j; and, when `QDRANT_URL` names a live Qdrant (`make test-qdrant`), against it. Each
test gets fresh stores."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import BIN, ROOT, server_env, start_http
from mcp import StdioServerParameters
from mcp.client import Client
from scenario import check_stored_verbatim, run_scenario
from qdrant_standin import QdrantStandIn
from stores import remote_config, reset_live_qdrant

pytestmark = pytest.mark.anyio

STORES = ["embedded", "neo4j", "qdrant", "qdrant-neo4j", "qdrant-live"]
LIVE_QDRANT = os.environ.get("QDRANT_URL")




@pytest.fixture
def qdrant(tmp_path: Path) -> Iterator[QdrantStandIn]:
    server = QdrantStandIn()
    yield server
    server.stop()


@pytest.fixture
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The configuration file of the store under test."""
    kind = request.param
    if kind == "embedded":
        return ROOT / "config/embedded.toml"
    bolt = request.getfixturevalue("falkordb").bolt_url if "neo4j" in kind or kind == "qdrant-live" else None
    if kind == "qdrant-live":
        if not LIVE_QDRANT:
            pytest.skip("no live Qdrant: QDRANT_URL=http://host:6333 make test-qdrant")
        reset_live_qdrant(LIVE_QDRANT, os.environ.get("QDRANT_API_KEY"))
        key = "QDRANT_API_KEY" if os.environ.get("QDRANT_API_KEY") else None
        return remote_config(tmp_path / "live.toml", bolt_url=bolt, qdrant_url=LIVE_QDRANT, qdrant_key_env=key)
    url = request.getfixturevalue("qdrant").url if "qdrant" in kind else None
    return remote_config(tmp_path / f"{kind}.toml", bolt_url=bolt, qdrant_url=url)


@asynccontextmanager
async def serve(config: Path, tmp_path: Path, session: str):
    params = StdioServerParameters(
        command=str(BIN),
        args=["serve"],
        env=server_env(
            tmp_path / "data",
            session,
            WW_CONFIG=str(config),
            QDRANT_API_KEY=os.environ.get("QDRANT_API_KEY", ""),
        ),
    )
    async with Client(params, read_timeout_seconds=300) as client:
        yield client


@pytest.mark.parametrize("store_config", STORES, indirect=True)
async def test_the_17_tools_scenario(store_config: Path, tmp_path: Path) -> None:
    async with serve(store_config, tmp_path, "conformance") as client:
        await run_scenario(client, "conformance")


@pytest.mark.parametrize("store_config", STORES, indirect=True)
async def test_query_metacharacters_are_stored_verbatim(store_config: Path, tmp_path: Path) -> None:
    async with serve(store_config, tmp_path, "conformance") as client:
        await check_stored_verbatim(client)


CLIENTS = 8
RECALLS = 100


@pytest.mark.parametrize("store_config", STORES, indirect=True)
async def test_concurrent_recalls_lose_no_reinforcement(store_config: Path, tmp_path: Path) -> None:
    """8 clients over HTTP recall one episode 100 times each, and one entity 25 times each:
    every recall counts (the stores apply the increments themselves: `change-payload`)."""
    server = start_http(
        tmp_path / "data",
        "reinforced",
        WW_CONFIG=str(store_config),
        QDRANT_API_KEY=os.environ.get("QDRANT_API_KEY", ""),
    )
    try:
        async with Client(server.url, mode="legacy") as setup:
            episode = await setup.call_tool(
                "create_episode", {"content": "the lighthouse keeper logs the tides every dawn"}
            )
            assert not episode.is_error, episode.content
            entity = await setup.call_tool(
                "create_entity",
                {"name": "lighthouse", "entity_type": "CONCEPT", "summary": "a tower that guides ships"},
            )
            assert not entity.is_error, entity.content

        async def client(recalls: int, tool: str, query: str) -> None:
            async with Client(server.url, mode="legacy", read_timeout_seconds=300) as c:
                for _ in range(recalls):
                    found = await c.call_tool(tool, {"query": query, "limit": 1})
                    assert not found.is_error, found.content

        await asyncio.gather(
            *(client(RECALLS, "recall_episodes", "lighthouse tides") for _ in range(CLIENTS)),
            *(client(RECALLS // 4, "semantic_recall", "lighthouse tower") for _ in range(CLIENTS)),
        )
        async with Client(server.url, mode="legacy") as check:
            # A recall returns what it read, reinforced once more.
            found = await check.call_tool("recall_episodes", {"query": "lighthouse tides", "limit": 1})
            assert found.structured_content["episodes"][0]["episode"]["access_count"] == CLIENTS * RECALLS + 1
            found = await check.call_tool("semantic_recall", {"query": "lighthouse tower", "limit": 1})
            assert found.structured_content["entities"][0]["entity"]["access_count"] == CLIENTS * RECALLS // 4 + 1
    finally:
        server.stop()


GRAPH = "ww:memory/graph-store@0.1.0"


@pytest.mark.parametrize("store_config", ["embedded", "neo4j"], indirect=True)
def test_edge_weights_change_in_the_store_and_no_change_is_lost(store_config: Path, tmp_path: Path) -> None:
    """`reweight-edges` from four processes at once (one at a time on the embedded store,
    whose data directory one process holds): the weight is the stored one changed by
    every call, and an edge that does not exist is skipped."""
    def invoke(function: str, *args: str, process: int = 0) -> subprocess.Popen[str]:
        # With the graph in FalkorDB, each process has a data directory of its own (the
        # vector role stays embedded there, and a data directory has one process).
        env = server_env(tmp_path / f"data{process}", "graph", WW_CONFIG=str(store_config))
        return subprocess.Popen(
            [str(BIN), "invoke", GRAPH, function, *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def done(process: subprocess.Popen[str]) -> str:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        return out.strip()

    for node in ["a", "b"]:
        done(invoke("upsert-node", f'{{id: "{node}", label: entity, properties: []}}'))
    done(invoke("upsert-edge", '{source: "a", target: "b", relation: uses, weight: 0.5, properties: []}'))
    step = '{source: "a", target: "b", relation: uses, scale: 1.0, offset: 0.01}'
    missing = '{source: "b", target: "a", relation: uses, scale: 1.0, offset: 0.01}'
    changes = "[" + ", ".join([step] * 10 + [missing]) + "]"
    if "neo4j" in str(store_config):
        outputs = [done(p) for p in [invoke("reweight-edges", changes, process=i) for i in range(4)]]
    else:
        outputs = [done(invoke("reweight-edges", changes)) for _ in range(4)]
    assert outputs == ["ok(10)"] * 4
    edge = done(invoke("get-edge", '"a"', '"b"', "uses"))
    weight = float(re.search(r"weight: ([0-9.e+-]+)", edge).group(1))
    assert weight == pytest.approx(0.5 + 0.01 * 40, abs=1e-9), edge
