"""The gateway driven end to end by the official MCP Python SDK, over stdio and over
streamable HTTP, with the handshake-era protocol (`legacy`) and the 2026 one (`auto`)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import BIN, HttpServer, server_env, start_http
from mcp import StdioServerParameters
from mcp.client import Client
from scenario import Checked, run_scenario

TOOLS = [
    "create_episode",
    "create_episodes",
    "recall_episodes",
    "query_at_time",
    "mark_important",
    "create_entity",
    "create_relation",
    "semantic_recall",
    "spread_activation",
    "supersede_fact",
    "create_skill",
    "recall_skill",
    "execute_skill",
    "deprecate_skill",
    "consolidate_now",
    "get_provenance",
    "get_session_id",
    "memory_stats",
]
pytestmark = pytest.mark.anyio

READ_ONLY = {
    "query_at_time",
    "spread_activation",
    "recall_skill",
    "get_provenance",
    "get_session_id",
    "memory_stats",
}


# JSON Schema 2020-12: the keywords its validator implements, plus the core and
# annotation keywords it does not validate.
KNOWN_KEYWORDS = set(jsonschema.Draft202012Validator.VALIDATORS) | {
    "$schema", "$id", "$defs", "$comment", "$anchor", "$dynamicAnchor", "$vocabulary",
    "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
    "contentMediaType", "contentEncoding", "contentSchema",
}
KNOWN_FORMATS = set(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers)
SUBSCHEMA_MAPS = ("properties", "$defs", "patternProperties", "dependentSchemas")
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains",
              "propertyNames", "unevaluatedItems", "unevaluatedProperties")


def unknown_in(schema: Any, where: str) -> list[str]:
    """Every keyword and format in `schema` that JSON Schema 2020-12 does not define."""
    if not isinstance(schema, dict):
        return []
    found = [f"{where}: keyword {k}" for k in schema if k not in KNOWN_KEYWORDS]
    if "format" in schema and schema["format"] not in KNOWN_FORMATS:
        found.append(f"{where}: format {schema['format']}")
    for key in SUBSCHEMA_MAPS:
        for name, sub in schema.get(key, {}).items():
            found += unknown_in(sub, f"{where}/{key}/{name}")
    for key in SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key, [])):
            found += unknown_in(sub, f"{where}/{key}/{i}")
    for key in SUBSCHEMAS:
        found += unknown_in(schema.get(key), f"{where}/{key}")
    return found


@asynccontextmanager
async def connect(transport: str, mode: str, tmp_path: Path, session: str):
    """A Client on a fresh server over `transport`, negotiating by `mode`."""
    if transport == "stdio":
        log = (tmp_path / "stdio.log").open("w")
        params = StdioServerParameters(
            command=str(BIN), args=["serve"], env=server_env(tmp_path / "stdio", session)
        )
        try:
            async with Client(params, mode=mode, read_timeout_seconds=300) as client:
                yield client
        finally:
            log.close()
    else:
        server = start_http(tmp_path / "http", session)
        try:
            async with Client(server.url, mode=mode, read_timeout_seconds=300) as client:
                yield client
        finally:
            server.stop()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_client_lists_the_17_tools_and_calls_every_one(
    transport: str, mode: str, tmp_path: Path
) -> None:
    async with connect(transport, mode, tmp_path, "py-scenario") as client:
        # The handshake-era protocol the SDK speaks, or the 2026 one it discovers.
        assert client.protocol_version == {"legacy": "2025-11-25", "auto": "2026-07-28"}[mode]
        listed = (await client.list_tools()).tools
        assert [t.name for t in listed] == TOOLS
        for tool in listed:
            assert tool.input_schema["type"] == "object"
            assert tool.input_schema.get("additionalProperties") is False, tool.name
            assert tool.output_schema and tool.output_schema["type"] == "object", tool.name
            for kind, schema in [("input", tool.input_schema), ("output", tool.output_schema)]:
                jsonschema.Draft202012Validator.check_schema(schema)
                # Plain JSON Schema: what a client's validator knows (no custom formats).
                assert unknown_in(schema, f"{tool.name} {kind}") == []
            assert (tool.annotations.read_only_hint is True) == (tool.name in READ_ONLY)
            assert len(tool.description or "") > 40
        await run_scenario(client, "py-scenario")


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_bad_calls_get_clean_errors_and_the_server_keeps_serving(
    transport: str, tmp_path: Path
) -> None:
    async with connect(transport, "legacy", tmp_path, "py-hostile") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        m = Checked(client, tools)
        from mcp.shared.exceptions import MCPError

        with pytest.raises(MCPError):
            await client.call_tool("no_such_tool", {})
        missing = await m.error("create_episode", {})
        assert (missing["code"], missing["field"]) == ("VALIDATION_ERROR", "content")
        extra = await m.error("recall_episodes", {"query": "x", "surprise": True})
        assert (extra["code"], extra["field"]) == ("VALIDATION_ERROR", "surprise")
        wrong = await m.error("recall_episodes", {"query": "x", "limit": "ten"})
        assert (wrong["code"], wrong["field"]) == ("VALIDATION_ERROR", "limit")
        out_of_range = await m.error("create_episode", {"content": "x", "valence": 7})
        assert out_of_range["field"] == "valence"
        huge = await m.error("create_episode", {"content": "x" * (10 << 20)})
        assert huge["code"] == "VALIDATION_ERROR" and len(huge["message"]) < 500
        unknown = await m.error("mark_important", {"episode_id": "0192b3c4-no-such-episode"})
        assert unknown["code"] == "NOT_FOUND"
        cypher = "x'}) DETACH DELETE n //"
        stored = await m.call(
            "create_entity", {"name": cypher, "entity_type": "FACT", "summary": cypher}
        )
        assert stored["entity"]["name"] == cypher
        # Still serving, nothing half-written.
        stats = await m.call("memory_stats", {})
        assert stats["counts"]["episodes"] == 0 and stats["counts"]["entities"] == 1
