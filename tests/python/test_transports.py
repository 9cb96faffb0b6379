"""The transports under hostile and heavy use: raw JSON-RPC on stdio (invalid JSON,
every supported protocol version), HTTP with a bad Origin, a bad Host, a missing bearer
token and an oversized body, and many clients at once over HTTP losing no write."""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from conftest import ACCEPT, BIN, INITIALIZE, server_env, start_http
from mcp.client import Client



class RawStdio:
    """`ww-memory serve` spoken to line by line."""

    def __init__(self, tmp_path: Path):
        self.process = subprocess.Popen(
            [str(BIN), "serve"],
            env=server_env(tmp_path / "raw", "raw-stdio"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "raw.log").open("wb"),
        )

    def send(self, line: bytes | dict[str, Any]) -> None:
        if isinstance(line, dict):
            line = json.dumps(line).encode()
        assert self.process.stdin
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = 120) -> dict[str, Any]:
        assert self.process.stdout
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, "no answer"
        line = self.process.stdout.readline()
        assert line, "the server closed stdout"
        return json.loads(line)

    def nothing_pending(self) -> bool:
        assert self.process.stdout
        ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
        return not ready

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"])
def test_stdio_speaks_every_handshake_version_and_survives_invalid_json(
    version: str, tmp_path: Path
) -> None:
    raw = RawStdio(tmp_path)
    try:
        raw.send({**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": version}})
        answer = raw.receive()
        assert answer["result"]["protocolVersion"] == version
        raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        # Not JSON at all: ignored, as the other official SDKs do (an answer to garbage
        # can start an echo storm); nothing is written to stdout for it.
        raw.send(b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {')
        raw.send(b"\x00\xff not json")
        assert raw.nothing_pending()
        # JSON that is not a request: a JSON-RPC error.
        raw.send({"jsonrpc": "2.0", "id": 2, "bogus": True})
        assert "error" in raw.receive()
        # A tools/call whose arguments are not an object: a JSON-RPC error.
        raw.send(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "get_session_id", "arguments": [1, 2]},
            }
        )
        assert "error" in raw.receive()
        # And the next call is served.
        raw.send(
            {
                "jsonrpc": "2.0",
                "id": 4,
                "method": "tools/call",
                "params": {"name": "get_session_id", "arguments": {}},
            }
        )
        answer = raw.receive()
        assert answer["id"] == 4
        info = answer["result"]["structuredContent"]
        assert (info["session_id"], info["protocol_version"]) == ("raw-stdio", version)
    finally:
        raw.close()


async def declared_oversize_status(url: str) -> int:
    """The status a POST declaring a 17 MiB body gets, read with none of the body sent."""
    parsed = httpx.URL(url)
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    try:
        head = (
            f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nhost: {parsed.host}:{parsed.port}\r\n"
            f"accept: {ACCEPT['accept']}\r\ncontent-type: application/json\r\n"
            f"content-length: {17 << 20}\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=60)
        return int(status_line.split()[1])
    finally:
        writer.close()


@pytest.mark.anyio
async def test_http_refuses_foreign_origins_and_hosts_and_oversized_bodies(
    tmp_path: Path,
) -> None:
    server = start_http(tmp_path / "http", "http-hostile")
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            body = json.dumps(INITIALIZE)
            evil = await http.post(
                server.url, content=body, headers={**ACCEPT, "origin": "https://evil.example"}
            )
            assert evil.status_code == 403
            rebinding = await http.post(
                server.url, content=body, headers={**ACCEPT, "host": "evil.example"}
            )
            assert rebinding.status_code == 403
            local = await http.post(
                server.url, content=body, headers={**ACCEPT, "origin": "http://localhost:6274"}
            )
            assert local.status_code == 200
            # A body declared too large is answered before any of it is sent, the way a
            # client that waits for the answer before streaming (Expect: 100-continue)
            # sees it: sending 17 MiB first races the server's close of the connection.
            assert await declared_oversize_status(server.url) == 413
            malformed = await http.post(server.url, content=b"{not json", headers=ACCEPT)
            assert 400 <= malformed.status_code < 500
            wrong_path = await http.post(server.url + "/../admin", content=body, headers=ACCEPT)
            assert wrong_path.status_code == 404
        # The server still serves a well-behaved client.
        async with Client(server.url, mode="legacy") as client:
            result = await client.call_tool("get_session_id", {})
            assert result.structured_content["session_id"] == "http-hostile"
    finally:
        server.stop()


@pytest.mark.anyio
async def test_http_requires_the_bearer_token_when_one_is_set(tmp_path: Path) -> None:
    server = start_http(tmp_path / "http", "http-token", WW_AUTH_TOKEN="s3cret-token")
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            body = json.dumps(INITIALIZE)
            for headers in [{}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"}]:
                refused = await http.post(server.url, content=body, headers={**ACCEPT, **headers})
                assert refused.status_code == 401, headers
                assert refused.headers["www-authenticate"] == "Bearer"
        authorized = httpx.AsyncClient(headers={"authorization": "Bearer s3cret-token"}, timeout=120)
        from mcp.client.streamable_http import streamable_http_client

        async with authorized, Client(
            streamable_http_client(server.url, http_client=authorized), mode="legacy"
        ) as client:
            result = await client.call_tool("get_session_id", {})
            assert result.structured_content["session_id"] == "http-token"
    finally:
        server.stop()


CLIENTS = 8
CALLS = 200


async def one_client(url: str, index: int) -> list[str]:
    """CALLS calls mixing writes and reads; the ids of the episodes it wrote."""
    written: list[str] = []
    async with Client(url, mode="legacy", read_timeout_seconds=300) as client:
        for call in range(CALLS):
            match call % 4:
                case 0 | 2:
                    result = await client.call_tool(
                        "create_episode",
                        {"content": f"client {index} call {call}", "context": {"client": str(index)}},
                    )
                    assert not result.is_error, result.content
                    written.append(result.structured_content["id"])
                case 1:
                    result = await client.call_tool(
                        "recall_episodes", {"query": f"client {index}", "limit": 5}
                    )
                    assert not result.is_error, result.content
                case _:
                    result = await client.call_tool("memory_stats", {})
                    assert not result.is_error, result.content
    return written


@pytest.mark.anyio
async def test_eight_clients_at_once_lose_no_write(tmp_path: Path) -> None:
    server = start_http(tmp_path / "http", "http-load")
    try:
        written = await asyncio.gather(*(one_client(server.url, i) for i in range(CLIENTS)))
        ids = [i for client in written for i in client]
        assert len(ids) == len(set(ids)) == CLIENTS * CALLS // 2
    finally:
        server.stop()
    # Every acknowledged write is there after a restart, and the session's chain of
    # episodes is one chain: every episode but the first follows exactly one other.
    server = start_http(tmp_path / "http", "http-load")
    try:
        async with Client(server.url, mode="legacy") as client:
            stats = await client.call_tool("memory_stats", {})
            assert stats.structured_content["counts"]["episodes"] == len(ids)
            previous: dict[str, str | None] = {}
            for page in range(0, len(ids), 100):
                recalled = await client.call_tool(
                    "recall_episodes", {"query": "client call", "limit": 100, "offset": page}
                )
                for entry in recalled.structured_content["episodes"]:
                    episode = entry["episode"]
                    previous[episode["id"]] = episode.get("previous")
            assert sorted(previous) == sorted(ids)
            links = [p for p in previous.values() if p is not None]
            assert len(links) == len(ids) - 1 and len(set(links)) == len(links)
            assert set(links) < set(ids)
    finally:
        server.stop()


@pytest.mark.anyio
async def test_closing_an_http_session_is_answered_as_the_sdks_expect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_http(tmp_path / "http", "http-close")
    try:
        # The official SDK ends its session with a DELETE when it closes: no warning.
        with caplog.at_level("WARNING"):
            async with Client(server.url, mode="legacy") as client:
                await client.call_tool("get_session_id", {})
        assert not [r for r in caplog.records if "Session termination failed" in r.getMessage()]
        # The same by hand: 204 No Content, and the session is gone.
        async with httpx.AsyncClient(timeout=60) as http:
            opened = await http.post(server.url, content=json.dumps(INITIALIZE), headers=ACCEPT)
            session = opened.headers["mcp-session-id"]
            ended = await http.delete(server.url, headers={**ACCEPT, "mcp-session-id": session})
            assert ended.status_code == 204 and ended.content == b""
            listed = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            after = await http.post(
                server.url, content=json.dumps(listed), headers={**ACCEPT, "mcp-session-id": session}
            )
            assert after.status_code == 404
    finally:
        server.stop()
