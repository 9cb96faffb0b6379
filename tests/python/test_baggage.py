"""The request's trace context and baggage leave the process with its store calls: in the
Bolt transaction metadata of every Cypher statement (recorded by a proxy in front of a real
FalkorDB) and in the headers of every HTTP request to Qdrant (the stand-in)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BIN, server_env
from mcp import StdioServerParameters
from mcp.client import Client
from qdrant_standin import QdrantStandIn
from stores import BoltRecorder, FalkorDB, remote_config

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"




async def test_trace_context_and_baggage_reach_bolt_and_http(falkordb: FalkorDB, tmp_path: Path) -> None:
    recorder = BoltRecorder(falkordb.bolt_port)
    qdrant = QdrantStandIn()
    try:
        config = remote_config(tmp_path / "remote.toml", bolt_url=recorder.bolt_url, qdrant_url=qdrant.url)
        env = server_env(tmp_path / "data", "baggage", WW_CONFIG=str(config), WW_OTEL_ENABLED="true",
                         WW_OTEL_ENDPOINT="http://127.0.0.1:9")
        params = StdioServerParameters(command=str(BIN), args=["serve"], env=env)
        async with Client(params) as client:
            meta = {"traceparent": PARENT, "baggage": "tenant=acme,request.kind=test%20run"}
            result = await client.call_tool("create_episode", {"content": "with baggage"}, meta=meta)
            assert not result.is_error, result.content
    finally:
        recorder.stop()
        qdrant.stop()

    statements = [(query, extra) for query, _, extra in recorder.runs if query != "RETURN $p"]
    assert statements, recorder.runs
    for query, extra in statements:
        metadata = extra["tx_metadata"]
        assert metadata["traceparent"][3:35] == TRACE, (query, metadata)
        assert metadata["baggage"] == {"tenant": "acme", "request.kind": "test run"}, query
        assert extra["db"] == "ww"
    # Parameters only: no value of the episode in any query text.
    assert all("with baggage" not in query for query, _ in statements)

    # Before it serves, the server asks the store which embedder wrote each collection
    # (a request of its own start-up, not of the tool call); every other request is the
    # tool call's, and carries its trace and baggage.
    startup = [r for r in qdrant.requests if r["headers"]["traceparent"][3:35] != TRACE]
    assert all(r["method"] == "GET" and r["path"].startswith("/collections/ww_") for r in startup), startup
    in_call = [r for r in qdrant.requests if r not in startup]
    assert in_call
    for request in in_call:
        assert request["headers"]["traceparent"][3:35] == TRACE
        assert sorted(request["headers"]["baggage"].split(",")) == ["request.kind=test%20run", "tenant=acme"]
