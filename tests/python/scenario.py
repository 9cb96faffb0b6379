"""The 18 tools' scenario, shared by the gateway tests (every transport and protocol)
and the storage conformance suite (every store configuration): each tool called on a
scripted story, every result checked against the tool's outputSchema and the story."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from mcp.client import Client

class Checked:
    """Calls tools and checks every result against the tool's listed outputSchema."""

    def __init__(self, client: Client, tools: dict[str, Any]):
        self.client = client
        self.tools = tools

    async def call(self, name: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
        result = await self.client.call_tool(name, args, **kw)
        assert not result.is_error, f"{name}: {result.content}"
        body = result.structured_content
        jsonschema.validate(body, self.tools[name].output_schema)
        # The same JSON as text.
        assert json.loads(result.content[0].text) == body
        return body

    async def error(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.client.call_tool(name, args)
        assert result.is_error, f"{name} should fail: {result.structured_content}"
        # The body as JSON text only: structured content must match the output schema.
        assert result.structured_content is None
        body = json.loads(result.content[0].text)
        assert set(body) <= {"code", "message", "field"}, body
        return body


async def run_scenario(client: Client, session: str) -> None:
    """Every tool, on a story whose results are known. The server is fresh."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    m = Checked(client, tools)

    # Episodes: four about one stall (a cluster for deep consolidation: with the model
    # embedder every pair is between 0.77 and 0.92 similar), one repeated word for word
    # (a duplicate for light consolidation).
    stalls = [
        await m.call(
            "create_episode",
            {
                "content": f"the release pipeline stalled {where}",
                "context": {"project": "ww", "tool": "ci"},
                "outcome": "failure",
            },
        )
        for where in (
            "at the build stage",
            "while running the tests",
            "during the deploy",
            "at the packaging stage",
        )
    ]
    assert all(e["session"] == session for e in stalls)
    assert stalls[1]["previous"] == stalls[0]["id"]
    fixed = await m.call(
        "create_episode",
        {"content": "fixed the flaky cache test by pinning the clock", "outcome": "success"},
    )
    await m.call(
        "create_episode",
        {"content": "fixed the flaky cache test by pinning the clock", "outcome": "success"},
    )
    recalled = await m.call("recall_episodes", {"query": "flaky cache test", "limit": 3})
    top = recalled["episodes"][0]
    assert top["episode"]["content"] == "fixed the flaky cache test by pinning the clock"
    assert top["score"]["outcome"] == 1.0
    failures = await m.call(
        "recall_episodes", {"query": "pipeline", "outcome": "failure", "limit": 10}
    )
    assert failures["count"] == 4
    past = await m.call(
        "query_at_time", {"query": "pipeline", "point_in_time": stalls[0]["ingestion_time"]}
    )
    assert [e["episode"]["id"] for e in past["episodes"]] == [stalls[0]["id"]]
    change = await m.call("mark_important", {"episode_id": fixed["id"]})
    assert change == {"old_valence": 0.5, "new_valence": pytest.approx(0.7)}

    # Facts.
    cargo = await m.call(
        "create_entity",
        {
            "name": "cargo",
            "entity_type": "TOOL",
            "summary": "the Rust build tool and package manager",
            "source": fixed["id"],
        },
    )
    assert cargo["created"] is True
    again = await m.call(
        "create_entity",
        {"name": "cargo", "entity_type": "TOOL", "summary": "the Rust build tool"},
    )
    assert again == {**again, "created": False}
    assert again["entity"]["id"] == cargo["entity"]["id"]
    bisect = await m.call(
        "create_entity",
        {
            "name": "git bisect",
            "entity_type": "TECHNIQUE",
            "summary": "binary search over commits for the one that broke a test",
        },
    )
    relation = await m.call(
        "create_relation",
        {
            "source_id": bisect["entity"]["id"],
            "target_id": cargo["entity"]["id"],
            "relation_type": "USES",
            "weight": 0.8,
        },
    )
    assert relation["weight"] == 0.8
    found = await m.call("semantic_recall", {"query": "Rust build tool", "limit": 5})
    assert found["entities"][0]["entity"]["id"] == cargo["entity"]["id"]
    spread = await m.call(
        "spread_activation", {"seed_entities": [bisect["entity"]["id"]], "steps": 2}
    )
    reached = {a["entity_id"] for a in spread["activations"]}
    assert cargo["entity"]["id"] in reached
    superseded = await m.call(
        "supersede_fact",
        {
            "entity_id": cargo["entity"]["id"],
            "new_summary": "the Rust build tool, package manager and test runner",
            "reason": "it runs tests too",
        },
    )
    assert superseded["relations_carried"] == 1
    assert superseded["old"]["superseded_by"] == superseded["new"]["id"]
    provenance = await m.call("get_provenance", {"entity_id": superseded["new"]["id"]})
    assert provenance["supersedes"] == [cargo["entity"]["id"]]
    assert (await m.call("get_provenance", {"entity_id": cargo["entity"]["id"]}))[
        "source_episodes"
    ] == [fixed["id"]]

    # Skills.
    trajectory = [
        {"action": "reproduce the failure", "tool": "cargo test"},
        {"action": "bisect to the breaking commit", "tool": "git bisect"},
        {"action": "write the fix and a regression test"},
    ]
    skill = await m.call(
        "create_skill",
        {
            "trajectory": trajectory,
            "outcome_score": 0.9,
            "domain": "debugging",
            "trigger_pattern": "a test started failing",
        },
    )
    assert skill["stored"] is True
    refused = await m.call(
        "create_skill",
        {"trajectory": trajectory, "outcome_score": 0.5, "domain": "debugging"},
    )
    assert refused["stored"] is False and refused["reason"]
    skill_id = skill["skill"]["id"]
    recalled_skills = await m.call("recall_skill", {"task": "a test started failing"})
    assert recalled_skills["skills"][0]["skill"]["id"] == skill_id
    ran = await m.call("execute_skill", {"skill_id": skill_id, "success": True})
    assert ran["executions"] == skill["skill"]["executions"] + 1
    assert ran["success_rate"] == 1.0
    gone = await m.call("deprecate_skill", {"skill_id": skill_id, "reason": "superseded"})
    assert gone["deprecated"] is True
    assert (await m.call("recall_skill", {"task": "a test started failing"}))["count"] == 0

    # Consolidation, with progress when asked for.
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    report = await m.call("consolidate_now", {"kind": "all"}, progress_callback=on_progress)
    assert report["kind"] == "all"
    assert report["light"]["marked_duplicates"] == 1
    assert report["deep"]["clusters"] >= 1
    # One increasing measure over the three phases, ending complete.
    assert len(progress) >= 3
    assert all(a[0] < b[0] for a, b in zip(progress, progress[1:])), progress
    assert progress[-1] == (3000.0, 3000.0)

    info = await m.call("get_session_id", {})
    assert info["session_id"] == session
    assert info["server_name"] == "world-weaver"
    assert info["protocol_version"] == client.protocol_version
    stats = await m.call("memory_stats", {"detailed": True})
    assert stats["counts"]["episodes"] == 6
    assert stats["counts"]["procedures"] == 1
    assert all(s["healthy"] for s in stats["stores"])

    # A batch: in order after the session's last episode, once however often it is sent
    # (an id of the caller's), through every store configuration's graph write.
    given = "0190f1c4-7f1e-7d3a-9a4b-0c1d2e3f4a5b"
    batch = {
        "episodes": [
            {"content": "imported: the first turn of an old chat"},
            {"content": "imported: the second turn", "id": given},
            {"content": "imported: the third turn", "context": {"dia_id": "D1:3"}},
        ]
    }
    stored = await m.call("create_episodes", batch)
    assert (stored["created"], stored["existing"]) == (3, 0)
    chain = [e["id"] for e in stored["episodes"]]
    assert chain[1] == given
    assert [e.get("previous") for e in stored["episodes"][1:]] == chain[:2]
    again = await m.call("create_episodes", {"episodes": batch["episodes"][1:2]})
    assert again["existing"] == 1 and again["episodes"][0]["existing"] is True
    found = await m.call("recall_episodes", {"query": "imported: the third turn", "limit": 3})
    assert any(e["episode"]["context"].get("dia_id") == "D1:3" for e in found["episodes"])
    assert stats["components"]
    counted = await m.call("memory_stats", {})
    assert counted["counts"]["episodes"] == 9


async def check_stored_verbatim(client: Client) -> None:
    """Query-language metacharacters are data: stored and returned as sent."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    m = Checked(client, tools)
    for hostile in ["x'}) DETACH DELETE n //", 'a"b`c\\d {$id} $props', "MATCH (n) RETURN n"]:
        stored = await m.call(
            "create_entity", {"name": hostile, "entity_type": "FACT", "summary": hostile}
        )
        assert stored["entity"]["name"] == hostile
        found = await m.call("semantic_recall", {"query": hostile, "limit": 3})
        assert any(e["entity"]["summary"] == hostile for e in found["entities"])
