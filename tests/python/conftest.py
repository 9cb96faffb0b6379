"""Fixtures for driving the real `ww-memory` binary with the official MCP Python SDK.

The binary is `WW_MEMORY_BIN` (make test builds target/debug/ww-memory); the components
are in `WW_PLUGIN_DIR`. Every server gets a data directory of its own.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stores import FalkorDB

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("WW_MEMORY_BIN", ROOT / "target/debug/ww-memory"))
PLUGINS = Path(os.environ.get("WW_PLUGIN_DIR", ROOT / "target/wasm32-wasip2/release"))
CACHE = ROOT / "target/ww-test-cache"
MODEL = Path(os.environ.get("WW_MODEL_DIR", ROOT / "target/models/all-MiniLM-L6-v2"))


# One `initialize` request and the headers a streamable HTTP client sends, for the tests
# that speak raw HTTP.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def resident_kib(pid: int) -> int:
    """A process's resident memory (`VmRSS`), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def server_env(data_dir: Path, session: str | None, **extra: str) -> dict[str, str]:
    """The environment a test server runs with: its own data, the shared code cache; no
    session means the data directory's default one."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "WW_PLUGIN_DIR": str(PLUGINS),
        "WW_MODEL_DIR": str(MODEL),
        "WW_CACHE_DIR": str(CACHE),
        "WW_DATA_DIR": str(data_dir),
        "WW_LOG": "warn,ww_memory=info",
    }
    if session is not None:
        env["WW_SESSION_ID"] = session
    env.update(extra)
    return env


@pytest.fixture(scope="session", autouse=True)
def built() -> None:
    assert BIN.exists(), f"{BIN} is missing: run `cargo build -p ww-host` (make test does)"
    assert PLUGINS.joinpath("service_episodic.wasm").exists(), "run `make plugins` first"
    assert MODEL.joinpath("model.safetensors").exists(), "run `make model` first"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HttpServer:
    """A `ww-memory serve --http` process."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_http(data_dir: Path, session: str | None, **env: str) -> HttpServer:
    """Starts an HTTP server and waits until it says where it listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir / "server.log"
    process = subprocess.Popen(
        [str(BIN), "serve", "--http", f"127.0.0.1:{port}"],
        env=server_env(data_dir, session, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    server = HttpServer(process, port, data_dir, log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if re.search(r"serving MCP over streamable HTTP at", text):
            return server
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{text}")
        time.sleep(0.05)
    server.stop()
    raise RuntimeError("the server did not start in time")


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    server = start_http(tmp_path / "http", "py-http")
    yield server
    server.stop()



@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def falkordb(tmp_path: Path) -> Iterator[FalkorDB]:
    """A FalkorDB of the test's own on loopback (Bolt port `falkordb.bolt_port`)."""
    server = FalkorDB(tmp_path / "falkordb")
    server.start()
    yield server
    if server.process:
        server.resume()
    server.stop()
