"""Benchmark: the database work behind the sessions API at a million sessions.

Creates its own database (``gatehouse_bench`` unless ``--database`` says otherwise), applies the
migrations, and bulk-loads, as the superuser, 1,000 organisations of 10 users each and
1,000,000 sessions (100 per user: a fifth active, the rest closed or expired), set-based with
``INSERT ... SELECT generate_series`` and the secondary indexes built after the load. Then, as
the ``gatehouse_app`` role, through ``sql.rls_transaction`` exactly as the gateway does it:

(a) ``GET /v1/sessions/{id}``: the ``get_session`` query in an RLS transaction, for random
    existing ids of random organisations, one at a time;
(b) the session check of ``/mcp/{session_id}``: ``gateway.sessions.usable`` itself,
    for random active sessions, one at a time;
(c) ``EXPLAIN (ANALYZE, BUFFERS)`` of the lookup inside an RLS transaction as the app role, as
    the custom plan a first execution gets and as the generic plan a cached prepared statement
    may switch to;
(d) session creation as ``POST /v1/sessions`` does it: ``gateway.sessions.create`` (one
    statement: quota lock, caps, insert, audit row) in an organisation-wide RLS transaction,
    at concurrency 8, each worker in its own organisations.

Prints p50/p99 in milliseconds for (a) and (b), the plans, and creates/s for (d). Drops the
database at the end unless ``--keep``; with ``--keep`` a later run reuses the loaded data.

    python -m loadtests.bench_sessions \\
        --admin-url postgresql://postgres@127.0.0.1/postgres \\
        --app-url postgresql://gatehouse_app@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.audit import AuditEntry
from gateway.errors import Conflict, NotFound
from gateway.principal import Principal
from gateway.sessions import Caps, NewSession, create, usable
from sql import QUERIES, apply_migrations, create_pool, rls_transaction

TARGET_P50_MS = 2.0


@dataclass(frozen=True)
class Tenant:
    org_id: str
    user_id: str


@dataclass(frozen=True)
class Shape:
    orgs: int
    users_per_org: int
    sessions: int

    @property
    def users(self) -> int:
        return self.orgs * self.users_per_org


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def quote_ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise SystemExit(f"--database must be a plain lower-case identifier, not {name!r}")
    return f'"{name}"'


def org_id(n: int) -> str:
    return f"org-{n:05d}"


def user_id(n: int) -> str:
    return f"user-{n:02d}"


# -- setup -------------------------------------------------------------------------------------


async def create_database(server_url: str, name: str) -> bool:
    """Create the bench database; ``False`` when it already exists (a ``--keep`` run)."""
    conn = await asyncpg.connect(server_url)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
        return True
    finally:
        await conn.close()


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


async def bulk_load(admin_url: str, shape: Shape) -> None:
    """Organisations, users, memberships and sessions, set-based, as the superuser (which row
    level security does not bind). Rows are consistent by construction, so the sessions load
    runs with foreign-key triggers off and builds the secondary indexes afterwards."""
    per_user = shape.sessions // shape.users
    per_org = per_user * shape.users_per_org
    conn = await asyncpg.connect(admin_url, command_timeout=3600)
    try:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("SET synchronous_commit = off")
        t0 = time.perf_counter()
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO organizations (id)"
                " SELECT 'org-' || lpad(o::text, 5, '0') FROM generate_series(1, $1) o",
                shape.orgs,
            )
            await conn.execute(
                "INSERT INTO users (org_id, id)"
                " SELECT 'org-' || lpad(o::text, 5, '0'), 'user-' || lpad(u::text, 2, '0')"
                " FROM generate_series(1, $1) o, generate_series(1, $2) u",
                shape.orgs, shape.users_per_org,
            )
            await conn.execute(
                "INSERT INTO memberships (org_id, user_id, role)"
                " SELECT org_id, id, 'member' FROM users"
            )
        t1 = time.perf_counter()
        indexes = await conn.fetch(
            "SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition"
            " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " WHERE x.indrelid = 'sessions'::regclass AND NOT x.indisprimary"
        )
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for index in indexes:
                await conn.execute(f'DROP INDEX "{index["name"]}"')
            # Session g belongs to org (g % orgs) and, within it, to user (g / orgs % users);
            # j = g / (orgs * users) numbers a user's sessions 0 .. per_user - 1. A fifth are
            # active, two fifths closed, two fifths active but past their expiry; creation
            # times spread over the last 90 days.
            await conn.execute(
                """
                INSERT INTO sessions (org_id, user_id, name, status, created_at, last_used_at,
                                      expires_at, closed_at)
                SELECT 'org-' || lpad((g % p.orgs + 1)::text, 5, '0'),
                       'user-' || lpad((g / p.orgs % p.users + 1)::text, 2, '0'),
                       'session ' || g,
                       CASE WHEN j % 5 IN (1, 2) THEN 'closed' ELSE 'active' END,
                       created, created + interval '1 hour',
                       CASE WHEN j % 5 = 0 THEN now() + interval '30 days'
                            ELSE created + interval '1 day' END,
                       CASE WHEN j % 5 IN (1, 2) THEN created + interval '2 hours' END
                FROM (SELECT $1::int AS orgs, $2::int AS users, $3::int AS total) p,
                     generate_series(0, p.total - 1) g,
                     LATERAL (SELECT g / (p.orgs * p.users) AS j) k,
                     LATERAL (SELECT now() - interval '2 days'
                                     - interval '90 days' * ((g::bigint * 7919) % p.total)::float8
                                       / p.total::float8 AS created) t
                """,
                shape.orgs, shape.users_per_org, per_org * shape.orgs,
            )
            t2 = time.perf_counter()
            for index in indexes:
                await conn.execute(index["definition"])
        t3 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) organizations, users, memberships, sessions")
        t4 = time.perf_counter()
        print(
            f"loaded {shape.orgs:,} orgs, {shape.users:,} users, "
            f"{per_org * shape.orgs:,} sessions: tenants {t1 - t0:.1f}s, sessions {t2 - t1:.1f}s,"
            f" indexes {t3 - t2:.1f}s, vacuum+analyze {t4 - t3:.1f}s"
        )
    finally:
        await conn.close()


# -- sampling and timing -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    org_id: str
    user_id: str
    session_id: uuid.UUID


async def sample(admin_url: str, count: int, *, active_only: bool, rng: random.Random) -> list[
    Target
]:
    """``count`` random existing sessions (of random organisations), in random order."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("SELECT setseed($1)", rng.random())
        rows = await conn.fetch(
            "SELECT org_id, user_id, id FROM sessions"
            " WHERE NOT $1 OR (status = 'active' AND expires_at > now())"
            " ORDER BY random() LIMIT $2",
            active_only, count,
        )
    finally:
        await conn.close()
    if len(rows) < count:
        raise SystemExit(f"only {len(rows)} sessions to sample from; load more data")
    return [Target(r["org_id"], r["user_id"], r["id"]) for r in rows]


@dataclass(frozen=True)
class Latency:
    label: str
    samples: list[float]  # seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self) -> str:
        p50, p99 = self.quantile(0.50), self.quantile(0.99)
        verdict = "ok" if p50 < TARGET_P50_MS else f"OVER the {TARGET_P50_MS} ms target"
        return (
            f"{self.label}: n={len(self.samples)} p50={p50:.3f} ms p99={p99:.3f} ms "
            f"mean={statistics.fmean(self.samples) * 1000:.3f} ms  [{verdict}]"
        )


async def timed_serially(
    label: str, targets: Sequence[Target], call: Callable[[Target], Awaitable[object]],
    warmup: int,
) -> Latency:
    for target in targets[:warmup]:
        await call(target)
    samples = []
    for target in targets[warmup:]:
        start = time.perf_counter()
        await call(target)
        samples.append(time.perf_counter() - start)
    return Latency(label, samples)


# -- the measured paths ------------------------------------------------------------------------


async def get_session(pool: asyncpg.Pool, target: Target) -> None:
    """The database work of ``GET /v1/sessions/{id}`` for the session's own (member) user."""
    tenant = Tenant(target.org_id, target.user_id)
    async with rls_transaction(pool, tenant, org_wide=False) as conn:
        row = await conn.fetchrow(QUERIES["get_session"], target.org_id, target.session_id)
    if row is None:
        raise RuntimeError(f"session {target.session_id} not found")


async def mcp_session_check(pool: asyncpg.Pool, target: Target) -> None:
    """The session check of ``/mcp/{session_id}``: the gateway's own function."""
    principal = Principal(target.org_id, target.user_id, ("member",), frozenset())
    try:
        await usable(pool, principal, str(target.session_id))
    except NotFound as exc:
        raise RuntimeError(f"session {target.session_id} not usable") from exc


async def explain(pool: asyncpg.Pool, target: Target) -> None:
    tenant = Tenant(target.org_id, target.user_id)
    query = QUERIES["get_session"]
    explain_options = "EXPLAIN (ANALYZE, BUFFERS, VERBOSE OFF, COSTS ON)"
    async with rls_transaction(pool, tenant) as conn:
        settings = await conn.fetchrow(
            "SELECT current_user AS role, current_setting('app.org_id') AS org,"
            " current_setting('app.user_id') AS usr, current_setting('app.org_wide') AS wide,"
            " (SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user) AS bypass"
        )
        assert settings is not None
        print(
            f"as role {settings['role']} (bypassrls={settings['bypass']}), app.org_id="
            f"{settings['org']}, app.user_id={settings['usr']}, "
            f"app.org_wide={settings['wide']!r}"
        )
        print(f"\n-- custom plan: {query}  [$1={target.org_id}, $2={target.session_id}]")
        for row in await conn.fetch(f"{explain_options} {query}",
                                    target.org_id, target.session_id):
            print("   ", row[0])
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE bench_get_session (text, uuid) AS {query}")
        print("\n-- generic plan (what a cached prepared statement may switch to):")
        # EXECUTE takes no bind parameters; both values are the benchmark's own.
        arguments = f"'{target.org_id}', '{target.session_id}'"
        for row in await conn.fetch(f"{explain_options} EXECUTE bench_get_session ({arguments})"):
            print("   ", row[0])
        await conn.execute("DEALLOCATE bench_get_session")


NEW_SESSION = NewSession("bench", None, {}, {}, None, 86_400)


async def create_one(pool: asyncpg.Pool, tenant: Tenant, caps: Caps) -> bool:
    """``POST /v1/sessions``'s transaction; ``False`` when a cap refuses it."""
    session_id = uuid.uuid4()
    entry = AuditEntry(tenant.org_id, tenant.user_id, "session.create", "success",
                       target=f"session:{session_id}", request_id=uuid.uuid4().hex)
    try:
        async with rls_transaction(pool, tenant, org_wide=True) as conn:
            await create(conn, session_id, NEW_SESSION, caps, entry)
    except Conflict:
        return False
    return True


async def create_throughput(
    pool: asyncpg.Pool, shape: Shape, *, seconds: float, concurrency: int,
    caps: Caps, rng: random.Random,
) -> None:
    """Workers create sessions for random users of their own organisations (worker k takes
    the orgs k, k + concurrency, ...), so no two contend for one quota lock."""
    created = refused = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal created, refused
        orgs = list(range(k + 1, shape.orgs + 1, concurrency))
        local = random.Random(rng.randrange(1 << 30) + k)
        while time.perf_counter() < deadline:
            tenant = Tenant(org_id(local.choice(orgs)),
                            user_id(local.randrange(shape.users_per_org) + 1))
            start = time.perf_counter()
            ok = await create_one(pool, tenant, caps)
            latencies.append(time.perf_counter() - start)
            if ok:
                created += 1
            else:
                refused += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    print(
        f"(d) sessions.create transaction, concurrency {concurrency}, {elapsed:.1f}s: "
        f"{created / elapsed:,.0f} creates/s ({created:,} created, {refused:,} refused by "
        f"quota); per create p50={ordered[len(ordered) // 2] * 1000:.2f} ms "
        f"p99={ordered[int(len(ordered) * 0.99)] * 1000:.2f} ms"
    )


# -- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    shape = Shape(args.orgs, args.users_per_org, args.sessions)
    admin_url = with_database(args.admin_url, args.database)
    app_url = with_database(args.app_url, args.database)
    fresh = await create_database(args.admin_url, args.database)
    try:
        if fresh:
            print(f"created database {args.database}; applied {await apply_migrations(admin_url)}")
            await bulk_load(admin_url, shape)
        else:
            print(f"reusing database {args.database} (left by --keep)")
        warmup = min(200, args.lookups // 10)
        by_id = await sample(admin_url, warmup + args.lookups, active_only=False, rng=rng)
        usable = await sample(admin_url, warmup + args.lookups, active_only=True, rng=rng)

        pool = await create_pool(app_url, min_size=args.concurrency, max_size=args.concurrency)
        try:
            print()
            await explain(pool, by_id[0])
            print()
            results = [
                await timed_serially("(a) GET /v1/sessions/{id}: rls_transaction + get_session",
                                     by_id, lambda t: get_session(pool, t), warmup),
                await timed_serially("(b) /mcp/{session_id} check: sessions.usable",
                                     usable, lambda t: mcp_session_check(pool, t), warmup),
            ]
            for result in results:
                print(result.line())
            print()
            await create_throughput(pool, shape, seconds=args.create_seconds,
                                    concurrency=args.concurrency,
                                    caps=Caps(args.max_active_per_user, args.max_active_per_org),
                                    rng=rng)
        finally:
            await pool.close()
    finally:
        if args.keep:
            print(f"\nkept database {args.database}")
        else:
            await drop_database(args.admin_url, args.database)
            print(f"\ndropped database {args.database}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The database work behind the sessions API at a million sessions."
    )
    parser.add_argument("--admin-url", required=True,
                        help="superuser DSN of the server (any database on it)")
    parser.add_argument("--app-url", required=True,
                        help="DSN of the gatehouse_app role on the same server")
    parser.add_argument("--database", default="gatehouse_bench")
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--users-per-org", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=3000,
                        help="timed lookups per path (after a warm-up)")
    parser.add_argument("--create-seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8, help="for session creation")
    parser.add_argument("--max-active-per-user", type=int, default=50,
                        help="the gateway's session_max_active_per_user")
    parser.add_argument("--max-active-per-org", type=int, default=10_000,
                        help="the gateway's session_max_active_per_org")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
