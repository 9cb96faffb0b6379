"""Bounded MCP sessions over HTTP (issue 29): the cap, what makes room at it, the 503 past
it, the expiry of sessions that never finish initialising, and the counts in
`memory_stats` — against the real binary, with raw HTTP for the abusive side and the
official SDK for the well-behaved client."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from conftest import ACCEPT, INITIALIZE, HttpServer, start_http
from mcp.client import Client


# The server's eviction grace (`EVICTION_GRACE`): a session used this recently is never
# evicted.
EVICTION_GRACE = 2.0


async def initialize_only(http: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    """An `initialize` and nothing more: a session that never finishes its handshake."""
    return await http.post(url, content=json.dumps(INITIALIZE), headers={**ACCEPT, **headers})


async def stats(server: HttpServer) -> dict[str, Any]:
    """`memory_stats`'s sessions, through the official SDK (its own session included)."""
    async with Client(server.url, mode="legacy") as client:
        result = await client.call_tool("memory_stats", {})
        return result.structured_content["sessions"]


async def eventually(check, timeout: float = 60.0):  # noqa: ANN001, ANN201
    """Awaits `check()` until it returns something truthy, or fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.1)


@pytest.mark.anyio
async def test_a_flood_of_unfinished_handshakes_is_refused_then_expires(tmp_path: Path) -> None:
    server = start_http(
        tmp_path / "http",
        "sessions-flood",
        WW_MAX_SESSIONS="8",
        WW_SESSION_HANDSHAKE_TIMEOUT="1",
    )
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            opened = [await initialize_only(http, server.url) for _ in range(8)]
            assert all(r.status_code == 200 for r in opened), [r.status_code for r in opened]
            assert len({r.headers["mcp-session-id"] for r in opened}) == 8
            # All eight were used just now: none may be evicted, so the ninth waits.
            refused = await initialize_only(http, server.url)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1

            # A second later the sweeper closes them; a real client then gets in.
            async def admitted() -> bool:
                response = await initialize_only(http, server.url)
                return response.status_code == 200

            await eventually(admitted)
            gone = await http.post(
                server.url,
                content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                headers={**ACCEPT, "mcp-session-id": opened[0].headers["mcp-session-id"]},
            )
            assert gone.status_code == 404

        counts = await stats(server)
        assert counts["max"] == 8
        assert counts["refused"] >= 1
        assert counts["handshake_expired"] >= 8
        assert counts["opened"] >= 10
        assert counts["open"] <= 8
    finally:
        server.stop()


@pytest.mark.anyio
async def test_at_the_cap_an_idle_session_makes_room_unfinished_handshakes_first(
    tmp_path: Path,
) -> None:
    server = start_http(
        tmp_path / "http",
        "sessions-evict",
        WW_MAX_SESSIONS="3",
        WW_SESSION_HANDSHAKE_TIMEOUT="600",
    )
    try:
        async with Client(server.url, mode="legacy") as client:
            await client.call_tool("get_session_id", {})
            async with httpx.AsyncClient(timeout=60) as http:
                pending = [await initialize_only(http, server.url) for _ in range(2)]
                assert [r.status_code for r in pending] == [200, 200]
                # Past the grace, a new session evicts an unfinished handshake, not the
                # established (older, also idle) session of the real client.
                await asyncio.sleep(EVICTION_GRACE + 0.5)
                newcomer = await initialize_only(http, server.url)
                assert newcomer.status_code == 200
            result = await client.call_tool("memory_stats", {})
            counts = result.structured_content["sessions"]
            assert counts["evicted"] == 1
            assert counts["open"] == 3
            assert counts["refused"] == 0
    finally:
        server.stop()


@pytest.mark.anyio
async def test_each_bearer_token_has_its_own_cap(tmp_path: Path) -> None:
    server = start_http(
        tmp_path / "http",
        "sessions-token",
        WW_AUTH_TOKEN="s3cret-token",
        WW_MAX_SESSIONS_PER_TOKEN="2",
        WW_SESSION_HANDSHAKE_TIMEOUT="600",
    )
    try:
        bearer = {"authorization": "Bearer s3cret-token"}
        async with httpx.AsyncClient(timeout=60) as http:
            first = [await initialize_only(http, server.url, **bearer) for _ in range(2)]
            assert [r.status_code for r in first] == [200, 200]
            third = await initialize_only(http, server.url, **bearer)
            assert third.status_code == 503
            assert int(third.headers["retry-after"]) >= 1
    finally:
        server.stop()
