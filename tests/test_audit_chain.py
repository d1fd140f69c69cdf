"""Audit chain version 2 (SECURITY.md 24, 64; issue 9.7): an unambiguous hash input, rows of
version 1 still verify, tampering with either version is detected."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from sql import QUERIES, apply_migrations, verify_audit_chain
from sql.migrate import discover
from tests.support.databases import Database, with_database

V2 = 5  # the migration that introduced chain version 2


def record(**fields: Any) -> str:
    base = {"org_id": "acme", "seq": 1, "occurred_at": "2025-01-01T00:00:00+00:00",
            "actor": "", "event": "e", "target": "", "outcome": "success", "details": {},
            "request_id": "", "prev_hash": "\\x", "hash": "\\x", "chain_version": 2}
    return json.dumps({**base, **fields})


async def hashes(conn: asyncpg.Connection, function: str, row: str) -> bytes:
    value: bytes = await conn.fetchval(
        f"SELECT {function}('\\x'::bytea, jsonb_populate_record(NULL::audit_log, $1::jsonb))",
        row)
    return value


async def test_inputs_that_collided_in_version_1_hash_differently_in_version_2(
    database: Database,
) -> None:
    # v1 joined fields with U+001F, which a caller can put in any text field.
    one = record(actor="alice\x1ftool.call", event="x")
    two = record(actor="alice", event="tool.call\x1fx")
    conn = await asyncpg.connect(database.admin_url)
    try:
        v1 = [await hashes(conn, "audit_row_hash", row) for row in (one, two)]
        v2 = [await hashes(conn, "audit_row_hash_v2", row) for row in (one, two)]
        assert v1[0] == v1[1]
        assert v2[0] != v2[1]
    finally:
        await conn.close()


@pytest.fixture
async def upgraded(database: Database) -> AsyncIterator[Database]:
    """A database of its own with audit rows written before migration 0005 and after it."""
    name = f"gatehouse_chain_{uuid.uuid4().hex[:8]}"
    server = await asyncpg.connect(database.admin_url)
    await server.execute(f'CREATE DATABASE "{name}"')
    db = Database(with_database(database.admin_url, name),
                  with_database(database.app_url, name))
    conn = await asyncpg.connect(db.admin_url)
    try:
        await _apply_before(conn, V2)
        for org_id in ("old", "mixed"):
            await _append(conn, org_id, 2)
        await apply_migrations(db.admin_url)
        for org_id in ("mixed", "new"):
            await _append(conn, org_id, 2)
        await conn.close()
        yield db
    finally:
        await conn.close()
        await server.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await server.close()


async def _apply_before(conn: asyncpg.Connection, version: int) -> None:
    """The migrations before ``version``, recorded as ``apply_migrations`` would."""
    await conn.execute("CREATE TABLE IF NOT EXISTS gatehouse_migrations (version integer "
                       "PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, "
                       "applied_at timestamptz NOT NULL DEFAULT now())")
    for m in discover():
        if m.version < version:
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute("INSERT INTO gatehouse_migrations VALUES ($1, $2, $3)",
                                   m.version, m.name, m.checksum)


async def _append(conn: asyncpg.Connection, org_id: str, count: int) -> None:
    for i in range(count):
        await conn.execute(QUERIES["append_audit"], org_id, "ann", "tool.call", f"tool:t{i}",
                           "success", "{}", f"req{i}")


async def _tamper(db: Database, org_id: str, seq: int, statement: str) -> tuple[str, int] | None:
    conn = await asyncpg.connect(db.admin_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(statement + " WHERE org_id = $1 AND seq = $2", org_id, seq)
        return (await verify_audit_chain(db.admin_url)).first_break
    finally:
        await conn.close()


async def test_old_rows_keep_version_1_and_still_verify(upgraded: Database) -> None:
    conn = await asyncpg.connect(upgraded.admin_url)
    try:
        versions = await conn.fetch(
            "SELECT org_id, array_agg(chain_version ORDER BY seq) AS v FROM audit_log"
            " GROUP BY org_id ORDER BY org_id")
    finally:
        await conn.close()
    assert {r["org_id"]: r["v"] for r in versions} == {
        "mixed": [1, 1, 2, 2], "new": [2, 2], "old": [1, 1]}
    report = await verify_audit_chain(upgraded.admin_url)
    assert (report.rows, report.broken_rows) == (8, 0)


@pytest.mark.parametrize(("seq", "change"), [
    (1, "UPDATE audit_log SET target = 'tool:other'"),  # a version 1 row
    (3, "UPDATE audit_log SET target = 'tool:other'"),  # a version 2 row
    (3, "UPDATE audit_log SET chain_version = 1"),  # downgrading a row to the weaker hash
])
async def test_tampering_is_detected_in_either_version(
    upgraded: Database, seq: int, change: str
) -> None:
    assert await _tamper(upgraded, "mixed", seq, change) == ("mixed", seq)


async def test_the_application_cannot_choose_the_old_version(upgraded: Database) -> None:
    conn = await asyncpg.connect(upgraded.app_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.org_id', 'new', true)")
            version = await conn.fetchval(
                "INSERT INTO audit_log (org_id, event, outcome, prev_hash, hash, chain_version)"
                " VALUES ('new', 'e', 'success', '\\x', '\\x', 1) RETURNING chain_version")
    finally:
        await conn.close()
    assert version == 2
    assert (await verify_audit_chain(upgraded.admin_url)).broken_rows == 0
