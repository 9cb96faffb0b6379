"""The Qdrant adapter against the Qdrant stand-in (every request validated against
Qdrant's OpenAPI models), with the graph on the Neo4j adapter over a real FalkorDB: the
collections it creates, the API key, and one trace per call through both adapters."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, server_env
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.client.stdio import stdio_client
from qdrant_standin import QdrantStandIn
from stores import FalkorDB, remote_config

pytestmark = pytest.mark.anyio

KEY = "qdrant-test-key"


@pytest.fixture
def qdrant() -> Iterator[QdrantStandIn]:
    server = QdrantStandIn(api_key=KEY)
    yield server
    server.stop()




def test_the_stand_in_refuses_what_qdrant_would_refuse(qdrant: QdrantStandIn) -> None:
    status, answer = qdrant.handle(
        "PUT", "/collections/x", {"api-key": KEY}, b'{"vectors": {"size": 4, "distance": "Cosine"}, "surprise": 1}'
    )
    assert status == 400 and "surprise" in answer["status"]["error"]
    status, _ = qdrant.handle("GET", "/collections", {}, b"")
    assert status == 401


def spans(log: str, trace: str) -> list[tuple[int, str, str]]:
    """(depth, name, kind) of each span of a console trace tree."""
    block = log.split(f"trace {trace}\n", 1)[1].split("\ntrace ", 1)[0]
    out = []
    for line in block.splitlines():
        found = re.match(r"^([│├└─ ]*)(\S+(?: /\S+)?)\s+(SERVER|CLIENT|INTERNAL)\s", line)
        if found:
            out.append((len(found.group(1)) // 3, found.group(2), found.group(3)))
    return out


async def test_one_trace_through_both_adapters(
    qdrant: QdrantStandIn, falkordb: FalkorDB, tmp_path: Path
) -> None:
    config = remote_config(
        tmp_path / "remote.toml", bolt_url=falkordb.bolt_url, qdrant_url=qdrant.url,
        qdrant_key_env="WW_TEST_QDRANT_KEY",
    )
    env = server_env(tmp_path / "data", "traced", WW_CONFIG=str(config), WW_OTEL_CONSOLE="true",
                     WW_TEST_QDRANT_KEY=KEY)
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        params = StdioServerParameters(command=str(BIN), args=["serve"], env=env)
        async with Client(stdio_client(params, errlog=log)) as client:
            created = await client.call_tool("create_episode", {"content": "the qdrant adapter works"})
            assert not created.is_error, created.content
            found = await client.call_tool("recall_episodes", {"query": "qdrant adapter"})
            assert not found.is_error, found.content
            assert found.structured_content["count"] == 1
    text = log_path.read_text()

    # Every request carried the key and a traceparent of a trace the server printed.
    assert qdrant.requests and all(r["headers"]["api-key"] == KEY for r in qdrant.requests)
    traces = [m for m in re.findall(r"^trace ([0-9a-f]{32})$", text, re.M)]
    for r in qdrant.requests:
        assert r["headers"]["traceparent"][3:35] in traces
    # The collection as Qdrant is asked for it: the embedder's dimension, cosine, and a
    # keyword index on the session.
    episodes = qdrant.collections["ww_episodes"]
    assert (episodes["size"], episodes["distance"]) == (384, "Cosine")
    assert episodes["indexes"] == {"session": {"data_type": "keyword"}}

    create, recall = traces[-2], traces[-1]
    tree = spans(text, recall)
    assert tree[0] == (0, "mcp.recall_episodes", "SERVER")
    assert (1, "episodic.recall", "INTERNAL") in tree
    search = tree.index((2, "qdrant.search", "CLIENT"))
    assert tree[search + 1] == (3, "POST /collections/ww_episodes/points/query", "CLIENT")
    tree = spans(text, create)
    assert tree[0] == (0, "mcp.create_episode", "SERVER")
    upsert = tree.index((2, "neo4j.upsert-node", "CLIENT"))
    assert (3, "neo4j.query", "CLIENT") in tree[upsert + 1 :]
    assert (2, "qdrant.upsert", "CLIENT") in tree
    # The first statement probes for constraint support: a refusal there is no error.
    block = text.split(f"trace {create}", 1)[1].split("\ntrace ", 1)[0]
    assert not [line for line in block.splitlines() if "neo4j.query" in line and "ERROR" in line]
    # (The GET of a collection not created yet is a 404: an ERROR by the HTTP conventions.)
