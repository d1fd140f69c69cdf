"""The token vault against real PostgreSQL: SECURITY.md 35-37 and 39 (storage side).

Self-contained: creates its own database on the local server, applies the migrations, works as
``gatehouse_app`` and drops the database at the end.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from oauth.errors import DecryptionFailed, KeyringError, NeedsReconnect, UnknownKeyId
from oauth.keyring import Keyring, generate_entry
from oauth.rotation import rotate
from oauth.store import TokenStore
from oauth.vault import NONCE_BYTES, ConnectionRef, Sealed, TokenBundle, Vault, associated_data
from sql import DatabaseError, create_pool, rls_transaction
from tests.support.databases import Database, pg_dump_for, scratch_database
from tests.support.tenants import Who, provision


@dataclass(frozen=True)
class Db:
    name: str
    admin_url: str
    app_url: str
    pool: asyncpg.Pool


@pytest.fixture(scope="module")
async def db(database: Database) -> AsyncIterator[Db]:
    async with scratch_database(database.admin_url, "gatehouse_vault") as scratch:
        pool = await create_pool(scratch.app_url)
        try:
            name = scratch.admin_url.rsplit("/", 1)[1].split("?")[0]
            yield Db(name, scratch.admin_url, scratch.app_url, pool)
        finally:
            await pool.close()


def new_keyring(*ids: str) -> Keyring:
    return Keyring.parse(",".join(generate_entry(i) for i in ids))


def fresh_who(org: str | None = None) -> Who:
    return Who(org or f"org-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}")



def bundle(tag: str = "") -> TokenBundle:
    return TokenBundle(
        access_token=f"AT-secret-{tag}-{secrets.token_hex(12)}",
        refresh_token=f"RT-secret-{tag}-{secrets.token_hex(12)}",
        expires_at=datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1),
        scopes=("repo", "read:user"),
    )


async def admin_fetch(db: Db, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db.admin_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


# -- keyring -------------------------------------------------------------------------------


def test_keyring_parses_first_entry_as_active_and_never_shows_keys() -> None:
    k2, k1 = secrets.token_bytes(32), secrets.token_bytes(32)
    config = f"k2:{base64.b64encode(k2).decode()}, k1:{base64.urlsafe_b64encode(k1).decode()}"
    ring = Keyring.parse(config)
    assert ring.active_id == "k2" and ring.active_key == k2 and ring.key("k1") == k1
    assert ring.ids() == ("k2", "k1")
    for text in (repr(ring), str(ring)):
        assert "k2" in text
        for key in (k1, k2):
            assert base64.b64encode(key).decode() not in text and key.hex() not in text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(ring)


@pytest.mark.parametrize(
    "config",
    [
        "",
        "k1",
        "k1:",
        "k1:not*base64!",
        f"k1:{base64.b64encode(b'x' * 16).decode()}",
        f"k1:{base64.b64encode(b'x' * 33).decode()}",
        f"bad id:{base64.b64encode(b'x' * 32).decode()}",
        f"k|1:{base64.b64encode(b'x' * 32).decode()}",
        f"k1:{base64.b64encode(b'x' * 32).decode()},k1:{base64.b64encode(b'y' * 32).decode()}",
    ],
)
def test_malformed_keyrings_are_refused_without_echoing_keys(config: str) -> None:
    with pytest.raises(KeyringError) as caught:
        Keyring.parse(config)
    secret_part = config.partition(":")[2]
    assert not secret_part or secret_part not in str(caught.value)


# -- vault, pure -----------------------------------------------------------------------------


def test_round_trip_and_associated_data_format() -> None:
    vault = Vault(new_keyring("k1"))
    ref = ConnectionRef("acme", "alice", "github")
    original = bundle("rt")
    sealed = vault.seal(ref, original)
    assert sealed.key_id == "k1" and len(sealed.nonce) == NONCE_BYTES
    assert vault.open(ref, sealed) == original
    assert associated_data(ref, "k1") == b"v1|acme|alice|github|k1"


def test_separators_inside_ids_cannot_alias_another_row() -> None:
    vault = Vault(new_keyring("k1"))
    a, b = ConnectionRef("o|x", "u", "p"), ConnectionRef("o", "x|u", "p")
    assert associated_data(a, "k1") != associated_data(b, "k1")
    assert associated_data(ConnectionRef("o%7Cx", "u", "p"), "k1") != associated_data(a, "k1")
    with pytest.raises(DecryptionFailed):
        vault.open(b, vault.seal(a, bundle()))


def test_ten_thousand_encryptions_never_repeat_a_nonce() -> None:
    """SECURITY 37."""
    vault = Vault(new_keyring("k1"))
    ref = ConnectionRef("acme", "alice", "github")
    same = bundle()
    sealed = [vault.seal(ref, same) for _ in range(10_000)]
    nonces = {s.nonce for s in sealed}
    assert len(nonces) == 10_000
    assert all(len(n) == 12 for n in nonces)
    assert len({s.ciphertext for s in sealed}) == 10_000


def test_tampered_ciphertext_or_relabelled_key_fails() -> None:
    ring = new_keyring("k2", "k1")
    vault = Vault(ring)
    ref = ConnectionRef("acme", "alice", "github")
    sealed = vault.seal(ref, bundle())
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(DecryptionFailed):
        vault.open(ref, Sealed(sealed.key_id, sealed.nonce, flipped))
    with pytest.raises(DecryptionFailed):
        vault.open(ref, Sealed("k1", sealed.nonce, sealed.ciphertext))
    with pytest.raises(DecryptionFailed):
        vault.open(ref, Sealed(sealed.key_id, sealed.nonce[:8], sealed.ciphertext))


# -- store against PostgreSQL -----------------------------------------------------------------


async def test_moved_ciphertext_fails_to_decrypt(db: Db) -> None:
    """SECURITY 35: copied (as superuser) into another org's, user's or provider's row."""
    ring = new_keyring("k1")
    store = TokenStore(db.pool, ring)
    alice = fresh_who()
    other_org, other_user = fresh_who(), fresh_who(alice.org_id)
    for who in (alice, other_org, other_user):
        await provision(db.pool, who)
    targets = [(alice, "google"), (other_org, "github"), (other_user, "github")]
    await store.save(alice, "github", bundle("alice"), account="alice@github")
    for who, provider in targets:
        await store.save(who, provider, bundle("victim"))
    conn = await asyncpg.connect(db.admin_url)
    try:
        for who, provider in targets:
            await conn.execute(
                """UPDATE provider_connections t SET key_id = s.key_id, nonce = s.nonce,
                       ciphertext = s.ciphertext
                   FROM provider_connections s
                   WHERE s.org_id = $1 AND s.user_id = $2 AND s.provider = 'github'
                     AND t.org_id = $3 AND t.user_id = $4 AND t.provider = $5""",
                alice.org_id, alice.user_id, who.org_id, who.user_id, provider,
            )  # fmt: skip
    finally:
        await conn.close()
    for who, provider in targets:
        with pytest.raises(DecryptionFailed) as caught:
            await store.load(who, provider)
        assert "secret" not in str(caught.value) and "secret" not in repr(caught.value)
    assert (await store.load(alice, "github")) is not None


async def test_rows_are_private_to_their_user_under_rls(db: Db) -> None:
    store = TokenStore(db.pool, new_keyring("k1"))
    alice = fresh_who()
    bob, mallory = fresh_who(alice.org_id), fresh_who()
    for who in (alice, bob, mallory):
        await provision(db.pool, who)
    await store.save(alice, "github", bundle())
    assert await store.load(bob, "github") is None
    assert await store.load(Who(alice.org_id, mallory.user_id), "github") is None
    assert await store.load(Who(mallory.org_id, alice.user_id), "github") is None
    assert not await store.delete(bob, "github")
    async with rls_transaction(db.pool, bob, org_wide=True) as conn:
        assert await conn.fetchval("SELECT count(*) FROM provider_connections") == 1
    flags = await admin_fetch(
        db,
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class"
        " WHERE relname = 'provider_connections'",
    )
    assert tuple(flags[0]) == (True, True)


async def test_lifecycle_save_info_mark_delete(db: Db) -> None:
    store = TokenStore(db.pool, new_keyring("k1"))
    who = fresh_who()
    await provision(db.pool, who)
    first = bundle("one")
    v1 = await store.save(who, "github", first, account="octocat")
    info = await store.info(who, "github")
    assert info is not None and info.account == "octocat" and info.scopes == first.scopes
    assert info.expires_at == first.expires_at and not info.needs_reconnect
    assert await store.mark_needs_reconnect(who, "github", version=v1)
    with pytest.raises(NeedsReconnect):
        await store.load(who, "github")
    second = bundle("two")
    assert await store.save(who, "github", second) == v1 + 1
    assert await store.load(who, "github") == second
    assert await store.replace_tokens(who, "github", first, version=v1) is None
    assert await store.delete(who, "github")
    assert await store.load(who, "github") is None


async def test_unknown_key_id_is_an_explicit_error(db: Db) -> None:
    """SECURITY 36, first half."""
    who = fresh_who()
    await provision(db.pool, who)
    await TokenStore(db.pool, new_keyring("old")).save(who, "github", bundle())
    with pytest.raises(UnknownKeyId) as caught:
        await TokenStore(db.pool, new_keyring("new")).load(who, "github")
    assert caught.value.key_id == "old" and "'old'" in str(caught.value)


async def _populate(db: Db, rings: list[Keyring], rows: int) -> dict[tuple[Who, str], TokenBundle]:
    """``rows`` connections spread over orgs, users and providers, written with the rings in
    turn (so under several old keys)."""
    orgs = [f"rot-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    expected: dict[tuple[Who, str], TokenBundle] = {}
    users = [fresh_who(orgs[i % 3]) for i in range(rows // 2 + 1)]
    await asyncio.gather(*(provision(db.pool, u) for u in users))
    for i in range(rows):
        who, provider = users[i // 2], ("github", "google")[i % 2]
        value = bundle(str(i))
        await TokenStore(db.pool, rings[i % len(rings)]).save(who, provider, value)
        expected[(who, provider)] = value
    return expected


async def _clear(db: Db) -> None:
    conn = await asyncpg.connect(db.admin_url)
    try:
        await conn.execute("DELETE FROM provider_connections")
    finally:
        await conn.close()


async def test_rotation_reencrypts_every_row_then_old_keys_can_go(db: Db) -> None:
    """SECURITY 36: two old keys, 250 rows, batches of 40."""
    await _clear(db)
    k0, k1, k2 = new_keyring("k0"), new_keyring("k1"), new_keyring("k2")
    expected = await _populate(db, [k0, k1], 250)
    full = Keyring({**{i: r.key(i) for r in (k0, k1, k2) for i in r.ids()}}, "k2")
    seen: list[tuple[int, int]] = []
    assert await rotate(db.admin_url, full, lambda d, t: seen.append((d, t)), batch_size=40) == 250
    assert seen[0] == (0, 250) and seen[-1] == (250, 250)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    keys = await admin_fetch(db, "SELECT DISTINCT key_id FROM provider_connections")
    assert [r["key_id"] for r in keys] == ["k2"]
    only_new = TokenStore(db.pool, k2)
    for (who, provider), value in expected.items():
        assert await only_new.load(who, provider) == value
    assert await rotate(db.admin_url, full) == 0  # idempotent


async def test_interrupted_rotation_resumes_and_completes(db: Db) -> None:
    """SECURITY 36: stopped after two batches, run again, everything under the new key."""
    await _clear(db)
    k1, k2 = new_keyring("k1"), new_keyring("k2")
    expected = await _populate(db, [k1], 120)
    both = Keyring({"k2": k2.key("k2"), "k1": k1.key("k1")}, "k2")

    def crash_after_two_batches(done: int, total: int) -> None:
        if done >= 50:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await rotate(db.admin_url, both, crash_after_two_batches, batch_size=25)
    counts = await admin_fetch(
        db, "SELECT key_id, count(*) AS n FROM provider_connections GROUP BY key_id ORDER BY 1"
    )
    assert {r["key_id"]: r["n"] for r in counts} == {"k1": 70, "k2": 50}
    assert await rotate(db.admin_url, both, batch_size=25) == 70
    only_new = TokenStore(db.pool, k2)
    for (who, provider), value in expected.items():
        assert await only_new.load(who, provider) == value


async def test_rotation_refuses_a_role_bound_by_rls(db: Db) -> None:
    with pytest.raises(DatabaseError, match="bypasses row-level security"):
        await rotate(db.app_url, new_keyring("k9"))


async def test_no_plaintext_token_in_dumps_errors_or_logs(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    """SECURITY 39 (storage side): pg_dump, SELECT * text, reprs, errors and logs."""
    caplog.set_level(logging.DEBUG)
    ring = new_keyring("k1")
    store = TokenStore(db.pool, ring)
    who = fresh_who()
    await provision(db.pool, who)
    value = bundle("dump")
    await store.save(who, "github", value, account="octocat")
    stored = await store.load_current(who, "github")
    sealed = store.vault.seal(ConnectionRef("a", "b", "c"), value)
    with pytest.raises(DecryptionFailed) as caught:
        store.vault.open(ConnectionRef("x", "y", "z"), sealed)
    process = await asyncio.create_subprocess_exec(
        await pg_dump_for(db.admin_url), "--data-only", "--no-owner", "--dbname", db.admin_url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    dump, _ = await process.communicate()
    assert process.returncode == 0 and b"provider_connections" in dump
    rows = await admin_fetch(db, "SELECT p::text AS t FROM provider_connections p")
    texts = [
        dump.decode(),
        "\n".join(r["t"] for r in rows),
        repr(value), str(value), repr(stored), repr(sealed),
        str(caught.value), repr(caught.value),
        caplog.text,
    ]  # fmt: skip
    for secret in (value.access_token, value.refresh_token or ""):
        for text in texts:
            assert secret not in text
            assert secret.encode().hex() not in text
            assert base64.b64encode(secret.encode()).decode() not in text
    assert "octocat" in texts[1]  # the dump is real: it does show the non-secret columns
