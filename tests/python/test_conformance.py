"""The storage conformance suite: the 17 tools' scenario, the same tests, against each
store configuration. The embedded store (the default); the graph role on the Neo4j adapter
over Bolt against a real FalkorDB started here; the vector role on the Qdrant adapter
against the Qdrant stand-in (validated against Qdrant's OpenAPI models), alone and with
Neo4j; and, when `QDRANT_URL` names a live Qdrant (`make test-qdrant`), against it. Each
test gets fresh stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import BIN, ROOT, server_env
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
