"""The soak (issue 29): 8 clients of mixed traffic at a bounded rate against the real
binary over HTTP, sampled every 10 s: resident memory, open files, p50/p99 latency. After
a warm-up (the first quarter), open files must stay flat, memory within a bound of the
data the run adds, and no call may fail. `make test` runs 2 minutes; `make soak` runs 30
(SOAK_SECONDS), and both write `target/soak/<seconds>s.csv` for a plot."""

from __future__ import annotations

import asyncio
import csv
import os
import random
import time
from pathlib import Path

import pytest
from conftest import ROOT, resident_kib, start_http
from mcp.client import Client

pytestmark = pytest.mark.anyio

SECONDS = int(os.environ.get("SOAK_SECONDS", "120"))
CLIENTS = 8
# Each client makes a call, then waits this long: about 8 × 10 calls a second in all.
PAUSE = 0.1
SAMPLE_EVERY = 10.0
WORDS = "tide lamp keeper harbour storm ledger rope bell fog beacon gull reef".split()


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_a_soak_of_mixed_traffic_keeps_memory_and_files_flat(tmp_path: Path) -> None:
    server = start_http(tmp_path / "data", "soak")
    pid = server.process.pid
    latencies: list[tuple[float, float]] = []  # (when, seconds)
    errors: list[str] = []
    created = 0
    deadline = time.monotonic() + SECONDS

    async def client(n: int) -> None:
        nonlocal created
        rng = random.Random(n)
        async with Client(server.url, mode="legacy", read_timeout_seconds=120) as c:
            while time.monotonic() < deadline:
                text = " ".join(rng.choice(WORDS) for _ in range(8))
                tool, args = rng.choice(
                    [
                        ("create_episode", {"content": text}),
                        ("recall_episodes", {"query": text, "limit": 5}),
                        ("recall_episodes", {"query": text, "limit": 5}),
                        ("create_entity", {"name": f"{rng.choice(WORDS)} {n}", "entity_type": "CONCEPT", "summary": text}),
                        ("semantic_recall", {"query": text, "limit": 5}),
                        ("memory_stats", {}),
                    ]
                )
                started = time.monotonic()
                result = await c.call_tool(tool, args)
                latencies.append((started, time.monotonic() - started))
                if result.is_error:
                    errors.append(f"{tool}: {result.content[0].text}")
                elif tool == "create_episode":
                    created += 1
                await asyncio.sleep(PAUSE)

    samples: list[dict[str, float]] = []

    async def sampler() -> None:
        start = time.monotonic()
        last = start
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            now = time.monotonic()
            # A window reaching past the deadline sees the clients stop and close their
            # connections (a 30-minute run's last sample had 23 open files against 31-36
            # before): not the steady state this measures.
            if now > deadline:
                break
            window = sorted(d for t, d in latencies if last <= t < now)
            last = now
            samples.append(
                {
                    "seconds": round(now - start, 1),
                    "rss_mib": resident_kib(pid) / 1024,
                    "open_files": open_files(pid),
                    "calls": len(window),
                    "p50_ms": 1e3 * window[len(window) // 2] if window else 0.0,
                    "p99_ms": 1e3 * window[int(len(window) * 0.99)] if window else 0.0,
                }
            )

    try:
        await asyncio.gather(sampler(), *(client(n) for n in range(CLIENTS)))
    finally:
        server.stop()
    out = ROOT / "target/soak"
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{SECONDS}s.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    for s in samples:
        print(s)

    assert not errors, errors[:5]
    warm = samples[len(samples) // 4 :]
    assert len(warm) >= 3, samples
    # Open files: flat (the log, the snapshot, sockets of the 8 clients), within a few.
    files = [s["open_files"] for s in warm]
    assert max(files) - min(files) <= 8, files
    # Memory: after warm-up, growth within what the episodes added since could explain
    # (generously 16 KiB each, vector and index included) plus 32 MiB of allocator slack.
    added = created * (1 - 1 / 4)
    grown = warm[-1]["rss_mib"] - warm[0]["rss_mib"]
    assert grown <= 32 + added * 16 / 1024, (grown, created, samples)
