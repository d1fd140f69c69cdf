"""PostgreSQL stopped and started under load (issue 10.3, SECURITY.md 22 and 56).

A gateway runs against a private cluster that the test shuts down (``pg_ctl stop -m fast``,
which cuts every connection, in-flight commits included) and starts again several times while
clients create sessions with ``Idempotency-Key`` and read them. Every create is retried with
its key until it gets a definitive answer, as a well-behaved client would. Nothing may answer
500; every answer during an outage is 503 with ``Retry-After``; every 201 is in the database
afterwards, exactly once.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.cli import embedded
from sql import apply_migrations
from tests.support.databases import _private_dir
from tests.support.oidc_provider import OidcProvider

OUTAGES = 4
CREATORS = 6
DEADLINE = 15.0  # seconds for any one condition the test waits for


class Cluster:
    """A private PostgreSQL the test may stop and start; ``admin_url``/``app_url`` survive."""

    def __init__(self) -> None:
        self.dir = _private_dir("pgfault")
        self.server = embedded.start_postgres(self.dir)
        self.admin_url = self.server.admin_url
        self.app_url = self.server.app_url("gatehouse_app")

    def stop(self) -> None:
        self.server.stop()  # fast mode: open transactions are cut off

    def start(self) -> None:
        self.server = embedded.start_postgres(self.dir)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        asyncio.run(apply_migrations(cluster.admin_url))
        yield cluster
    finally:
        cluster.server.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    unavailable: int = 0  # 503 answers
    without_retry_after: int = 0
    created: dict[str, str] = field(default_factory=dict)  # name -> id
    replayed: int = 0
    unexpected: list[str] = field(default_factory=list)

    def see(self, resp: httpx.Response, allowed: set[int]) -> None:
        self.statuses[resp.status_code] += 1
        if resp.status_code == 503:
            self.unavailable += 1
            self.without_retry_after += "retry-after" not in resp.headers
        elif resp.status_code not in allowed:
            self.unexpected.append(f"{resp.request.method} {resp.status_code} {resp.text[:200]}")


async def create_until_answered(
    client: httpx.AsyncClient, token: str, name: str, tally: Tally
) -> None:
    """One create, retried with the same key until it is answered for good (201 or a 4xx)."""
    key = str(uuid.uuid4())
    deadline = time.monotonic() + 3 * DEADLINE
    while time.monotonic() < deadline:
        resp = await client.post("/v1/sessions", json={"name": name},
                                 headers={"Authorization": f"Bearer {token}",
                                          "Idempotency-Key": key})
        tally.see(resp, {201, 409})
        if resp.status_code == 201:
            tally.created[name] = resp.json()["id"]
            tally.replayed += resp.headers.get("idempotent-replayed") == "true"
            return
        if resp.status_code not in (503, 409):  # 409: our earlier attempt still runs
            return
        await asyncio.sleep(0.05)  # a real client honours Retry-After; the test has no time
    tally.unexpected.append(f"create {name} never answered")


async def creator(
    client: httpx.AsyncClient, token: str, prefix: str, done: asyncio.Event, tally: Tally
) -> None:
    n = 0
    while not done.is_set():
        await create_until_answered(client, token, f"{prefix}-{n}", tally)
        n += 1


async def reader(client: httpx.AsyncClient, token: str, done: asyncio.Event, tally: Tally) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    while not done.is_set():
        tally.see(await client.get("/v1/sessions?limit=5", headers=auth), {200})
        await asyncio.sleep(0.01)


async def grows(count: Callable[[], int], by: int, what: str, start: int | None = None) -> None:
    """Wait (with a deadline) until ``count()`` exceeds ``start`` (default: now) by ``by``."""
    target = (count() if start is None else start) + by
    deadline = time.monotonic() + DEADLINE
    while count() < target:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def rows_named(admin_url: str, prefix: str) -> tuple[list[Any], int]:
    """The sessions the test created, and how many idempotency keys were kept with them."""
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch(
            "SELECT name, id::text AS id FROM sessions WHERE name LIKE $1 || '-%'", prefix)
        keys = await conn.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE org_id = 'faults'"
            " AND body::jsonb ->> 'name' LIKE $1 || '-%'", prefix)
        return list(rows), int(keys)
    finally:
        await conn.close()


async def test_postgres_restarts_answer_503_and_keyed_retries_never_duplicate(
    cluster: Cluster, start_gateway: Any, idp: OidcProvider
) -> None:
    gateway = start_gateway(database_url=cluster.app_url, session_max_active_per_user="100000",
                            session_max_active_per_org="100000")
    prefix = f"fault-{uuid.uuid4().hex[:6]}"
    tokens = [idp.access_token("faults", f"user{i}", ["member"]) for i in range(3)]
    tally, done = Tally(), asyncio.Event()
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as client:
            workers = [
                asyncio.create_task(creator(client, tokens[i % 3], f"{prefix}-{i}", done, tally))
                for i in range(CREATORS)
            ] + [asyncio.create_task(reader(client, tokens[0], done, tally))]
            for outage in range(OUTAGES + 1):
                await grows(lambda: len(tally.created), 10, f"creates before outage {outage}")
                if outage == OUTAGES:
                    break
                seen = tally.unavailable
                await asyncio.to_thread(cluster.stop)
                await grows(lambda: tally.unavailable, 1, f"a 503 in outage {outage}", seen)
                await asyncio.to_thread(cluster.start)
            done.set()
            await asyncio.wait_for(asyncio.gather(*workers), 3 * DEADLINE)
    finally:
        done.set()
        gateway.stop()
    elapsed = time.monotonic() - started

    assert tally.unexpected == [], tally.unexpected[:10]
    assert not any(500 <= s < 600 and s != 503 for s in tally.statuses), tally.statuses
    assert tally.without_retry_after == 0
    assert tally.unavailable >= OUTAGES
    rows, keys = await rows_named(cluster.admin_url, prefix)
    assert keys == len(rows)  # each create and its key committed together, or neither did
    names = Counter(row["name"] for row in rows)
    assert [n for n, count in names.items() if count > 1] == []  # no duplicates
    assert {row["name"]: row["id"] for row in rows} == tally.created  # every 201 is there
    assert elapsed < 60
    print(f"\n{len(tally.created)} creates, {tally.replayed} answered by a replay, "
          f"statuses {dict(tally.statuses)}, {elapsed:.1f}s")
