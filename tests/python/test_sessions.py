"""Sessions as users meet them, through the real binary: the data directory's default
session survives a restart, and over HTTP each bearer token of the tokens file is served
in its own session, sharing entities and skills but never episodes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import BIN, server_env, start_http
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio


async def stdio_session(data: Path, calls: list[tuple[str, dict]]) -> list[dict]:
    """Run `calls` on a server without a session given; their structured results."""
    params = StdioServerParameters(command=str(BIN), args=["serve"], env=server_env(data, None))
    results = []
    async with Client(stdio_client(params)) as client:
        for tool, args in calls:
            result = await client.call_tool(tool, args)
            assert not result.is_error, result.content
            results.append(result.structured_content)
    return results


async def test_without_a_session_a_restart_continues_the_same_memory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await stdio_session(data, [
        ("create_episode", {"content": "the staging database moved to the new cluster"}),
        ("get_session_id", {}),
    ])
    session = first[1]
    assert session["session_source"] == "data-directory"
    assert (data / "default-session").read_text().strip() == session["session_id"]

    # A new process on the same data directory: the same session, the same episode.
    second = await stdio_session(data, [
        ("get_session_id", {}),
        ("recall_episodes", {"query": "where is the staging database now?"}),
    ])
    assert second[0]["session_id"] == session["session_id"]
    assert second[1]["episodes"][0]["episode"]["id"] == first[0]["id"]

    # An explicit session still wins, and sees none of the default session's episodes.
    params = StdioServerParameters(command=str(BIN), args=["serve"], env=server_env(data, "explicit"))
    async with Client(stdio_client(params)) as client:
        info = await client.call_tool("get_session_id", {})
        assert (info.structured_content["session_id"], info.structured_content["session_source"]) == (
            "explicit", "given",
        )
        found = await client.call_tool("recall_episodes", {"query": "staging database"})
        assert found.structured_content["count"] == 0


def add_token(tokens: Path, session: str) -> str:
    run = subprocess.run(
        [str(BIN), "token", "add", session, "--file", str(tokens)],
        env=server_env(tokens.parent / "unused", None), capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


async def test_each_token_is_served_in_its_own_session_and_entities_are_shared(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    alice, bob = add_token(tokens, "agent-alice"), add_token(tokens, "agent-bob")
    assert alice not in tokens.read_text() and bob not in tokens.read_text()
    server = start_http(tmp_path / "http", None, WW_TOKENS_FILE=str(tokens))
    try:
        async def as_agent(token: str, calls: list[tuple[str, dict]]) -> list:
            http = httpx.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=120)
            async with http, Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client:
                return [await client.call_tool(tool, args) for tool, args in calls]

        a = await as_agent(alice, [
            ("create_episode", {"content": "alice: the invoice export times out after 30 seconds"}),
            ("create_entity", {"name": "Invoice export", "entity_type": "TOOL",
                               "summary": "the nightly export of invoices"}),
            ("get_session_id", {}),
        ])
        assert not any(r.is_error for r in a), [r.content for r in a]
        assert (a[2].structured_content["session_id"], a[2].structured_content["session_source"]) == (
            "agent-alice", "token",
        )
        alice_episode = a[0].structured_content["id"]
        b = await as_agent(bob, [
            ("create_episode", {"content": "bob: the invoice export needs a larger timeout"}),
            ("recall_episodes", {"query": "invoice export timeout"}),
            ("semantic_recall", {"query": "invoice export"}),
            ("mark_important", {"episode_id": alice_episode, "new_valence": 0.9}),
        ])
        # Bob recalls his own episode only, sees the shared entity, and cannot reach
        # Alice's episode even by its id.
        recalled = [e["episode"]["content"] for e in b[1].structured_content["episodes"]]
        assert recalled == ["bob: the invoice export needs a larger timeout"]
        assert [e["entity"]["name"] for e in b[2].structured_content["entities"]][:1] == ["Invoice export"]
        assert b[3].is_error and "NOT_FOUND" in b[3].content[0].text
        again = await as_agent(alice, [("recall_episodes", {"query": "invoice export timeout"})])
        assert [e["episode"]["id"] for e in again[0].structured_content["episodes"]] == [alice_episode]

        # A token not in the file is refused.
        async with httpx.AsyncClient(timeout=30) as http:
            refused = await http.post(server.url, json={}, headers={"authorization": "Bearer ww_nope"})
            assert refused.status_code == 401
    finally:
        server.stop()
