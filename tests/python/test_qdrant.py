"""The Qdrant adapter against the Qdrant stand-in (every request validated against
Qdrant's OpenAPI models), with the graph on the Neo4j adapter over a real FalkorDB: the
collections it creates, the API key, and one trace per call through both adapters."""

from __future__ import annotations

import json
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


async def recall_with(config: Path, data: Path, query: str, contents: list[str]) -> list[str]:
    """Store `contents` through a server on `config`, recall `query`: the contents found,
    best first."""
    params = StdioServerParameters(command=str(BIN), args=["serve"], env=server_env(data, "lexical", WW_CONFIG=str(config), WW_TEST_QDRANT_KEY=KEY))
    async with Client(stdio_client(params)) as client:
        for content in contents:
            created = await client.call_tool("create_episode", {"content": content})
            assert not created.is_error, created.content
        found = await client.call_tool("recall_episodes", {"query": query, "limit": 3})
        assert not found.is_error, found.content
        return [e["episode"]["content"] for e in found.structured_content["episodes"]]


def queries(qdrant: QdrantStandIn) -> list[dict]:
    return [r["body"] for r in qdrant.requests if r["path"] == "/collections/ww_episodes/points/query"]


CONTENTS = [
    "deployed the billing service after the schema migration",
    "the nightly build failed on the arm runners again",
    "ticket QX-7731: customers in Lisbon see doubled invoices",
    "reviewed the onboarding guide with the new hire",
]


async def test_text_is_a_sparse_vector_and_recall_fuses_it_in_the_engine(
    qdrant: QdrantStandIn, tmp_path: Path
) -> None:
    config = remote_config(tmp_path / "q.toml", qdrant_url=qdrant.url, qdrant_key_env="WW_TEST_QDRANT_KEY")
    config.write_text(config.read_text().replace("secrets", 'settings = { retrieval = "rrf" }\nsecrets'))
    found = await recall_with(config, tmp_path / "data", "QX-7731", CONTENTS)
    assert found[0] == CONTENTS[2]

    # The collection has the text's sparse vector with Qdrant's IDF; each episode's text
    # went in as BM25 term weights beside its dense vector.
    episodes = qdrant.collections["ww_episodes"]
    assert episodes["sparse"] == {"text": {"modifier": "idf"}}
    assert all(set(p["sparse"]) == {"text"} for p in episodes["points"].values())
    # The recall asked the engine to fuse: a dense and a sparse prefetch under the same
    # session filter, reciprocal rank fusion on top.
    recall = queries(qdrant)[-1]
    dense, sparse = recall["prefetch"]
    assert isinstance(dense["query"], list) and "using" not in dense
    assert sparse["using"] == "text" and len(sparse["query"]["indices"]) == 2  # "qx", "7731"
    assert dense["filter"] == sparse["filter"] and "session" in json.dumps(dense["filter"])
    assert recall["query"] == {"rrf": {"k": 2}}


async def test_retrieval_vector_and_collections_without_a_sparse_vector_search_densely(
    qdrant: QdrantStandIn, tmp_path: Path
) -> None:
    config = remote_config(tmp_path / "q.toml", qdrant_url=qdrant.url, qdrant_key_env="WW_TEST_QDRANT_KEY")
    plain = tmp_path / "vector.toml"
    plain.write_text(config.read_text().replace("secrets", 'settings = { retrieval = "vector" }\nsecrets'))
    await recall_with(plain, tmp_path / "a", "QX-7731", CONTENTS[:2])
    assert "prefetch" not in queries(qdrant)[-1]

    # A collection made before the adapter wrote sparse vectors (dense only): written and
    # searched as before, by the default fused setting too.
    qdrant.collections.clear()
    qdrant.requests.clear()
    status, _ = qdrant.handle(
        "PUT", "/collections/ww_episodes", {"api-key": KEY},
        json.dumps({"vectors": {"size": 384, "distance": "Cosine"}}).encode(),
    )
    assert status == 200
    found = await recall_with(config, tmp_path / "b", "invoices in Lisbon", CONTENTS)
    assert found[0] == CONTENTS[2]
    assert all("prefetch" not in q for q in queries(qdrant))
    assert all(not p["sparse"] for p in qdrant.collections["ww_episodes"]["points"].values())


def test_an_unknown_retrieval_setting_stops_the_start_by_name(qdrant: QdrantStandIn, tmp_path: Path) -> None:
    import subprocess

    config = remote_config(tmp_path / "q.toml", qdrant_url=qdrant.url, qdrant_key_env="WW_TEST_QDRANT_KEY")
    config.write_text(config.read_text().replace("secrets", 'settings = { retrieval = "bm42" }\nsecrets'))
    env = server_env(tmp_path / "d", "x", WW_CONFIG=str(config), WW_TEST_QDRANT_KEY=KEY)
    run = subprocess.run([str(BIN), "serve"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert 'the retrieval setting: unknown value "bm42"' in run.stderr


async def test_a_store_that_traps_on_one_call_is_a_storage_error_and_the_service_lives_on(
    qdrant: QdrantStandIn, tmp_path: Path
) -> None:
    config = remote_config(tmp_path / "q.toml", qdrant_url=qdrant.url, qdrant_key_env="WW_TEST_QDRANT_KEY")
    # The adapter with 32 MB of memory; the stand-in's poisoned answer is 64 MB.
    config.write_text(config.read_text().replace("secrets", "limits = { memory_mb = 32 }\nsecrets"))
    env = server_env(tmp_path / "data", "trap", WW_CONFIG=str(config), WW_TEST_QDRANT_KEY=KEY)
    params = StdioServerParameters(command=str(BIN), args=["serve"], env=env)
    async with Client(stdio_client(params)) as client:
        created = await client.call_tool("create_episode", {"content": "the adapter survives its own trap"})
        assert not created.is_error, created.content

        async def components() -> dict[str, dict]:
            stats = await client.call_tool("memory_stats", {"detailed": True})
            assert "components" in stats.structured_content, stats.structured_content
            return {c["name"]: c for c in stats.structured_content["components"]}

        # A recall first: the episodic instance recalls run on exists (the create ran on
        # the one its serial writes use).
        warm = await client.call_tool("recall_episodes", {"query": "adapter"})
        assert not warm.is_error, warm.content
        before = await components()
        qdrant.oversize_next_query = 64 << 20
        failed = await client.call_tool("recall_episodes", {"query": "adapter"})
        assert failed.is_error
        error = json.loads(failed.content[0].text)
        assert error["code"] == "STORAGE_ERROR", error
        assert "component qdrant failed" in error["message"] and "memory limit" in error["message"]

        # Only the adapter trapped and was replaced; the episodic service kept its
        # instance, and the next call works.
        after = await components()
        assert after["qdrant"]["traps"] == before["qdrant"]["traps"] + 1
        assert after["episodic"]["traps"] == 0
        assert after["episodic"]["instantiations"] == before["episodic"]["instantiations"]
        found = await client.call_tool("recall_episodes", {"query": "adapter"})
        assert not found.is_error, found.content
        assert found.structured_content["count"] == 1
