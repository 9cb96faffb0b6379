"""The storage conformance suite: the 17 tools' scenario, the same tests, against each
store configuration. The embedded store (the default), and the graph role served by the
Neo4j adapter over Bolt against a real FalkorDB started here. Each test gets fresh stores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import BIN, ROOT, server_env
from mcp import StdioServerParameters
from mcp.client import Client
from scenario import check_stored_verbatim, run_scenario
from stores import FalkorDB, neo4j_graph_config

pytestmark = pytest.mark.anyio

STORES = ["embedded", "neo4j"]


@pytest.fixture
def falkordb(tmp_path: Path) -> Iterator[FalkorDB]:
    server = FalkorDB(tmp_path / "falkordb")
    server.start()
    yield server
    server.resume() if server.process else None
    server.stop()


@pytest.fixture
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The configuration file of the store under test."""
    if request.param == "embedded":
        return ROOT / "config/embedded.toml"
    falkordb = request.getfixturevalue("falkordb")
    return neo4j_graph_config(tmp_path / "neo4j.toml", falkordb.bolt_url)


@asynccontextmanager
async def serve(config: Path, tmp_path: Path, session: str):
    params = StdioServerParameters(
        command=str(BIN),
        args=["serve"],
        env=server_env(tmp_path / "data", session, WW_CONFIG=str(config)),
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
