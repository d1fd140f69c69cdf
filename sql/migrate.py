"""Numbered SQL migrations, applied in order, once, by one process at a time.

Each file ``migrations/NNNN_name.sql`` runs in its own transaction together with the row that
records it, so a failed migration leaves nothing behind. A session-level advisory lock serialises
concurrent ``migrate`` runs (two replicas starting together); the checksum of every applied file
is kept so an edited migration is refused instead of silently diverging.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from sql.errors import MigrationError
from sql.pool import admin_connection

# An arbitrary constant shared by every Gatehouse process: the key of the migration lock.
_LOCK_KEY = 0x6761_7465_686F

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS gatehouse_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover() -> list[Migration]:
    """The packaged migrations in version order."""
    found = []
    for entry in resources.files("sql").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return found


async def apply_migrations(admin_dsn: str) -> list[str]:
    """Apply pending migrations as the schema owner; returns the names applied now."""
    async with admin_connection(admin_dsn) as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            return await _apply_pending(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def _apply_pending(conn: asyncpg.Connection) -> list[str]:
    await conn.execute(_CREATE_LEDGER)
    applied = {
        row["version"]: row["checksum"]
        for row in await conn.fetch("SELECT version, checksum FROM gatehouse_migrations")
    }
    done = []
    for migration in discover():
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} was edited after it "
                    "was applied; add a new migration instead"
                )
            continue
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO gatehouse_migrations (version, name, checksum)"
                    " VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} failed: {exc}"
            ) from exc
        done.append(f"{migration.version:04d}_{migration.name}")
    return done


async def set_app_password(admin_dsn: str, password: str) -> None:
    """Give the ``gatehouse_app`` login role a password (deployments without trust auth)."""
    if not password:
        raise MigrationError("the application role's password must not be empty")
    async with admin_connection(admin_dsn) as conn:
        literal = await conn.fetchval("SELECT quote_literal($1)", password)
        await conn.execute(f"ALTER ROLE gatehouse_app PASSWORD {literal}")
