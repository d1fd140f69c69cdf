"""PostgreSQL and Redis for tests: the machine's servers when configured, embedded otherwise.

``GATEHOUSE_TEST_ADMIN_DATABASE_URL`` names a superuser DSN (each test session creates and
drops its own database); ``GATEHOUSE_TEST_REDIS_URL`` a Redis database that tests may flush.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sql import apply_migrations


def _private_dir(kind: str) -> Path:
    """Outside pytest's temporary root, whose permissions pytest resets at every session start
    (the embedded cluster runs as another system user that must traverse the path)."""
    return Path(tempfile.mkdtemp(prefix=f"gatehouse-test-{kind}-"))


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@dataclass(frozen=True)
class Database:
    admin_url: str  # superuser, for setup and for tampering "as the owner"
    app_url: str  # the gatehouse_app login role


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def test_database() -> Iterator[Database]:
    server_url = os.environ.get("GATEHOUSE_TEST_ADMIN_DATABASE_URL")
    stop = None
    if not server_url:
        from gateway.cli import embedded

        postgres = embedded.start_postgres(_private_dir("pg"))
        server_url, stop = postgres.admin_url, postgres.stop
    name = f"gatehouse_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_execute(server_url, f'CREATE DATABASE "{name}"'))
    admin_url = with_database(server_url, name)
    try:
        asyncio.run(apply_migrations(admin_url))
        yield Database(admin_url, with_user(admin_url, "gatehouse_app"))
    finally:
        asyncio.run(_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if stop is not None:
            stop()


async def pg_dump_for(admin_url: str) -> str:
    """A ``pg_dump`` as new as the server (it refuses newer servers): the system's, or the one
    shipped with the embedded server's binaries."""
    conn = await asyncpg.connect(admin_url)
    try:
        server_major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    candidates = [shutil.which("pg_dump")]
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "pginstall/bin/pg_dump"
        candidates.append(str(bundled) if bundled.exists() else None)
    for candidate in filter(None, candidates):
        version = subprocess.run([candidate, "--version"], capture_output=True, text=True)
        if (
            version.returncode == 0
            and int(version.stdout.split()[-1].split(".")[0]) >= server_major
        ):
            return candidate
    raise RuntimeError(f"no pg_dump for PostgreSQL {server_major} found")


@asynccontextmanager
async def scratch_database(server_admin_url: str, prefix: str) -> AsyncIterator[Database]:
    """A fresh, migrated database of its own on the same server, for tests that must count
    every row (rotation, dumps) without seeing other tests' data."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await _execute(server_admin_url, f'CREATE DATABASE "{name}"')
    try:
        admin_url = with_database(server_admin_url, name)
        await apply_migrations(admin_url)
        yield Database(admin_url, with_user(admin_url, "gatehouse_app"))
    finally:
        await _execute(server_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def test_redis() -> Iterator[str]:
    url = os.environ.get("GATEHOUSE_TEST_REDIS_URL")
    if url:
        yield url
        return
    from gateway.cli import embedded

    redis = embedded.start_redis(_private_dir("redis"))
    try:
        yield redis.url
    finally:
        redis.stop()
