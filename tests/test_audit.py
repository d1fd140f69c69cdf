"""The audit trail cannot be poisoned, flooded or silenced (SECURITY.md 54, 62, 64; issues 10.1,
9.5, 9.7): against the real database and Redis, and end to end through a running gateway."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastmcp import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from gateway.audit import AuditEntry, AuditTrail, FailureSource
from gateway.audit_fields import TRUNCATED
from gateway.metrics import Metrics
from resilience import RateLimiter
from sql import DatabaseUnavailable, create_pool, verify_audit_chain
from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server

ROWS = "SELECT * FROM audit_log WHERE org_id = $1 ORDER BY seq"


@pytest.fixture
async def pool(database: Database) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database.app_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def trail_of(pool: asyncpg.Pool, redis: Redis, **kw: Any) -> AuditTrail:
    namespace = f"test-audit-{uuid.uuid4().hex[:8]}"  # no bucket shared with another test
    return AuditTrail(
        pool, RateLimiter(redis, kw.pop("per_source", "60/minute"), namespace=namespace),
        auth_failure_ceiling=RateLimiter(redis, kw.pop("ceiling", "6000/minute"),
                                         namespace=namespace + "-all"),
        metrics=kw.pop("metrics", Metrics()), **kw,
    )


def org() -> str:
    return f"org-{uuid.uuid4().hex[:10]}"


async def rows(database: Database, org_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database.admin_url)
    try:
        return await conn.fetch(ROWS, org_id)
    finally:
        await conn.close()


def counter(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name + "_total")
    return value or 0.0


# --- fields are storable and bounded before they are queued --------------------------------


def test_unstorable_characters_are_escaped_visibly_and_noted() -> None:
    entry = AuditEntry("acme", "al\x00ice", "tool.call", "failure", target="tool:echo\ud800",
                       details={"k\x00": "v\udcff", "n": float("nan")}, request_id="r\x00")
    assert entry.target == "tool:echo\\ud800"
    assert entry.actor == "al\\u0000ice"
    assert entry.request_id == "r\\u0000"
    assert entry.details is not None
    assert entry.details["k\\u0000"] == "v\\udcff"
    assert entry.details["n"] == "nan"
    assert entry.details["sanitised"] == {
        "escaped": ["actor", "details", "details.key", "request_id", "target"]
    }
    json.dumps(entry.values()).encode()  # encodable: no surrogate is left


def test_every_field_is_bounded_with_a_visible_marker_and_the_original_length() -> None:
    huge = "x" * 1_000_000
    entry = AuditEntry("acme", huge, "tool.call", "success", target="tool:" + huge,
                       details={huge: huge, "list": list(range(10_000)),
                                "deep": {"a": {"b": {"c": {"d": {"e": 1}}}}}},
                       request_id=huge)
    assert len(entry.target) == 256 and entry.target.endswith(TRUNCATED)
    assert len(entry.actor) <= 256 and len(entry.request_id) <= 128
    assert entry.details is not None
    assert entry.details["sanitised"]["truncated"]["target"] == 1_000_005
    assert entry.details["sanitised"]["truncated"]["actor"] == 1_000_000
    assert len(json.dumps(entry.details)) < 12_000
    assert sum(len(v) for v in entry.values()) < 13_000


def test_ordinary_entries_are_stored_as_given() -> None:
    entry = AuditEntry("acme", "alice", "tool.call", "success", target="tool:echo",
                       details={"duration_ms": 1.5, "session_id": "s"}, request_id="abc12345")
    assert entry.values() == ("acme", "alice", "tool.call", "tool:echo", "success",
                              '{"duration_ms": 1.5, "session_id": "s"}', "abc12345")


# --- a bad entry never blocks the others -------------------------------------------------------


async def test_poisoned_entries_are_stored_escaped_and_block_no_one(
    pool: asyncpg.Pool, redis: Redis, database: Database
) -> None:
    trail, poisoned, other = trail_of(pool, redis), org(), org()
    for name in ("echo\x00", "echo\ud800", "x" * 1_000_000):
        trail.enqueue(AuditEntry(poisoned, "eve", "tool.call", "failure", target=f"tool:{name}"))
    for i in range(3):
        trail.enqueue(AuditEntry(other, "bob", "tool.call", "success", target=f"tool:echo{i}"))
    await trail.flush()
    assert trail.queued == 0
    assert [r["target"] for r in await rows(database, other)] == [
        "tool:echo0", "tool:echo1", "tool:echo2"]
    stored = await rows(database, poisoned)
    assert [r["target"] for r in stored][:2] == ["tool:echo\\u0000", "tool:echo\\ud800"]
    assert len(stored[2]["target"]) == 256
    assert json.loads(stored[2]["details"])["sanitised"]["truncated"]["target"] == 1_000_005


async def test_an_entry_the_database_refuses_is_quarantined_and_the_rest_written(
    pool: asyncpg.Pool, redis: Redis, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    trail, victim = trail_of(pool, redis, metrics=metrics), org()
    trail.enqueue(AuditEntry(victim, "ann", "tool.call", "success", target="tool:before"))
    # Sanitising cannot fix this one: the outcome breaks a CHECK (stands for any future bug).
    trail.enqueue(AuditEntry(victim, "eve", "tool.call", "bogus", target="tool:secret-ish"))
    trail.enqueue(AuditEntry(victim, "ann", "tool.call", "success", target="tool:after"))
    with caplog.at_level(logging.WARNING, logger="gateway.audit"):
        await trail.flush()
        await trail.flush()  # nothing is retried: the quarantine is final
    stored = await rows(database, victim)
    assert [(r["actor"], r["target"], r["outcome"]) for r in stored] == [
        ("ann", "tool:before", "success"), ("", "", "error"), ("ann", "tool:after", "success")]
    assert json.loads(stored[1]["details"]) == {
        "quarantined": True, "error": "CheckViolationError"}
    assert stored[1]["event"] == "tool.call"
    assert counter(metrics, "gatehouse_audit_quarantined") == 1
    assert len([r for r in caplog.records if "quarantined" in r.getMessage()]) == 1


async def test_the_queue_is_bounded_and_says_what_it_dropped(
    pool: asyncpg.Pool, redis: Redis, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    trail, busy = trail_of(pool, redis, metrics=metrics, queue_max=100), org()
    with caplog.at_level(logging.WARNING, logger="gateway.audit"):
        for i in range(150):
            trail.enqueue(AuditEntry(busy, "bob", "tool.call", "success", target=f"tool:t{i}"))
        assert trail.queued == 100
        full = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(full) == 1  # once per burst, not once per entry
        await trail.flush()
    assert counter(metrics, "gatehouse_audit_dropped") == 50
    stored = await rows(database, busy)
    assert len(stored) == 101
    assert (stored[-1]["event"], json.loads(stored[-1]["details"])) == (
        "audit.dropped", {"entries": 50, "reason": "queue full"})
    assert any("room again; 50 entries" in r.getMessage() for r in caplog.records)


async def test_entries_stay_queued_while_the_database_is_away(
    database: Database, redis: Redis
) -> None:
    gone = await create_pool(database.app_url, min_size=1, max_size=1)
    await gone.close()
    trail, first, second = trail_of(gone, redis), org(), org()
    for org_id in (first, second, first):
        trail.enqueue(AuditEntry(org_id, "bob", "tool.call", "success"))
    with pytest.raises(DatabaseUnavailable):
        await trail.flush()
    assert trail.queued == 3


# --- property: arbitrary caller text in every caller-supplied field ----------------------------

_ANY_CHAR = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(categories=["Cs"]),
    st.sampled_from(["\x00", "\x1f", "\\", "\ufffe", "\U0010ffff"]),
)
_CALLER_TEXT = st.one_of(
    st.text(_ANY_CHAR, max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", errors="surrogateescape")),
    st.integers(0, 300_000).map(lambda n: "\ud800\x00" * n),
)
_DETAIL_VALUE = st.recursive(
    st.one_of(_CALLER_TEXT, st.integers(), st.floats(), st.none(), st.booleans()),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_CALLER_TEXT, inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(target=_CALLER_TEXT, actor=_CALLER_TEXT, request_id=_CALLER_TEXT,
       details=st.dictionaries(_CALLER_TEXT, _DETAIL_VALUE, max_size=8))
def test_no_caller_value_keeps_other_organizations_entries_from_being_written(
    database: Database, redis_url: str, target: str, actor: str, request_id: str,
    details: dict[str, Any],
) -> None:
    async def run() -> None:
        pool = await create_pool(database.app_url, min_size=1, max_size=2)
        redis = Redis.from_url(redis_url)
        try:
            trail, hostile, others = trail_of(pool, redis), org(), [org(), org()]
            trail.enqueue(AuditEntry(hostile, actor, "tool.call", "failure", target=target,
                                     details=details, request_id=request_id))
            for org_id in others:
                trail.enqueue(AuditEntry(org_id, "bob", "tool.call", "success", target="tool:a"))
            await trail.flush()
            assert trail.queued == 0
            for org_id in others:
                assert [r["target"] for r in await rows(database, org_id)] == ["tool:a"]
            assert len(await rows(database, hostile)) == 1  # stored, escaped or quarantined
        finally:
            await redis.aclose()
            await pool.close()

    asyncio.run(run())


async def test_the_chain_verifies_after_everything_above(database: Database) -> None:
    report = await verify_audit_chain(database.admin_url)
    assert report.rows > 0
    assert report.broken_rows == 0, report.first_break


# --- authentication failures: per source, and the rest summarised ----------------------------


async def test_one_flooding_source_does_not_silence_another_and_is_summarised(
    pool: asyncpg.Pool, redis: Redis, database: Database
) -> None:
    metrics = Metrics()
    trail = trail_of(pool, redis, metrics=metrics, per_source="60/minute")
    flood, other = FailureSource("10.0.0.7", "garbage"), FailureSource("10.0.0.8", "")
    before = await rows(database, "_platform")
    for _ in range(70):
        await trail.auth_failure("invalid_token", "req-flood", flood)
    await trail.auth_failure("token_expired", "req-other", other)
    written = (await rows(database, "_platform"))[len(before):]
    assert len(written) == 61
    assert json.loads(written[-1]["details"]) == {
        "code": "token_expired", "address": "10.0.0.8", "kid": ""}
    assert written[-1]["request_id"] == "req-other"
    assert counter(metrics, "gatehouse_audit_auth_failures_suppressed") == 10
    await trail.flush()
    summary = (await rows(database, "_platform"))[-1]
    assert summary["event"] == "auth.failure.suppressed"
    details = json.loads(summary["details"])
    assert details["suppressed"] == 10 and details["by_code"] == {"invalid_token": 10}
    assert details["sources"] == [
        {"address": "10.0.0.7", "kid": "garbage", "code": "invalid_token", "count": 10}]
    await trail.flush()  # summarised once, not again
    assert (await rows(database, "_platform"))[-1]["seq"] == summary["seq"]


async def test_the_global_ceiling_still_counts_every_suppressed_failure(
    pool: asyncpg.Pool, redis: Redis, database: Database
) -> None:
    trail = trail_of(pool, redis, per_source="60/minute", ceiling="3/minute")
    for i in range(8):
        await trail.auth_failure("invalid_token", "", FailureSource(f"10.1.0.{i}", ""))
    await trail.flush()
    details = json.loads((await rows(database, "_platform"))[-1]["details"])
    assert details["suppressed"] == 5
    assert sorted(s["address"] for s in details["sources"]) == [
        f"10.1.0.{i}" for i in range(3, 8)]


# --- end to end through a running gateway -----------------------------------------------------


def raw_tools_call(name_json: str) -> bytes:
    """A tools/call whose name is given as raw JSON text (so escapes reach the server as sent)."""
    return ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "'
            + name_json + '", "arguments": {}}}').encode()


async def test_a_poisoned_tool_name_does_not_stop_other_organizations_audit(
    start_gateway: Any, idp: OidcProvider, database: Database
) -> None:
    fast = start_gateway(audit_flush_seconds="0.2")
    attacker = idp.access_token("audit-poison-a", "eve", ["member"])
    victim = idp.access_token("audit-poison-b", "bob", ["member"])
    headers = {"Authorization": f"Bearer {attacker}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=30) as http:
        for name in ("echo\\u0000", "echo\\ud800", "x" * 900_000):
            resp = await http.post(fast.url + "/mcp", content=raw_tools_call(name),
                                   headers=headers)
            assert resp.status_code < 500, resp.text[:300]
    async with Client(fast.url + "/mcp", auth=victim) as client:
        for i in range(3):
            assert (await client.call_tool("echo", {"text": f"hi{i}"})).content[0].text == f"hi{i}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        victims = [r for r in await rows(database, "audit-poison-b") if r["event"] == "tool.call"]
        if len(victims) == 3:
            break
        await asyncio.sleep(0.1)
    assert [r["target"] for r in victims] == ["tool:echo"] * 3
    stored = [r["target"] for r in await rows(database, "audit-poison-a")
              if r["event"] == "tool.call"]
    assert stored[:2] == ["tool:echo\\u0000", "tool:echo\\ud800"]
    assert len(stored[2]) == 256 and stored[2].endswith(TRUNCATED)
    assert "Traceback" not in fast.log_text()
    report = await verify_audit_chain(database.admin_url)
    assert report.broken_rows == 0, report.first_break


async def test_garbage_tokens_from_one_address_leave_another_addresses_failure_audited(
    start_gateway: Any, database: Database
) -> None:
    gateway: Server = start_gateway(audit_auth_failure_limit="7/minute", audit_flush_seconds="3600")
    # Two sources on the loopback network: 127.0.0.2 floods, 127.0.0.3 fails once afterwards.
    flood = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"))
    single = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.3"))
    async with flood, single:
        for i in range(70):
            resp = await flood.get(gateway.url + "/v1/sessions",
                                   headers={"Authorization": f"Bearer garbage{i}"})
            assert resp.status_code == 401
        resp = await single.get(gateway.url + "/v1/sessions",
                                headers={"Authorization": "Bearer not-a-jwt"})
        assert resp.status_code == 401
    failures = [json.loads(r["details"]) for r in await rows(database, "_platform")
                if r["event"] == "auth.failure"]
    assert [f["address"] for f in failures].count("127.0.0.2") == 7
    assert failures[-1]["address"] == "127.0.0.3"
    gateway.stop()  # the lifespan's last flush writes the summary
    summaries = [json.loads(r["details"]) for r in await rows(database, "_platform")
                 if r["event"] == "auth.failure.suppressed"]
    flooded = [s for summary in summaries for s in summary["sources"]
               if s["address"] == "127.0.0.2"]
    assert sum(s["count"] for s in flooded) == 63
