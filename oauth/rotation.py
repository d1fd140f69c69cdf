"""Key rotation: re-encrypt every stored connection under the keyring's active key.

Run by an operator (``gatehouse keys rotate``) with a DSN whose role bypasses row-level security
(a superuser, or a role with BYPASSRLS): rotation must see every organisation's rows, and
security is forced even for the tables' owner. The keyring must hold the new key first and
every old key still in use.

Rows are walked in primary-key order in batches, each batch committed in its own transaction,
and each row is updated only if it still holds the very ciphertext that was re-encrypted (same
key id and nonce). An interrupted rotation therefore keeps what it committed and a second run
picks up the rows still under an old key; running it twice is harmless; a refresh racing with it
wins. When it returns, no row uses any other key and the old keys can be removed.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from oauth.errors import VaultError
from oauth.keyring import Keyring
from oauth.vault import ConnectionRef, Sealed, Vault
from sql import QUERIES, admin_connection

Progress = Callable[[int, int], None]  # (rows re-encrypted so far, rows to re-encrypt)

_MAX_PASSES = 5


def _no_progress(done: int, total: int) -> None:
    return None


async def rotate(
    admin_dsn: str, keyring: Keyring, progress: Progress = _no_progress, *, batch_size: int = 500
) -> int:
    """Re-encrypt every row not under ``keyring.active_id``; returns how many were rewritten.

    ``progress(done, total)`` is called after each batch. Raises :class:`UnknownKeyId` if a row
    uses a key the keyring lacks, and :class:`VaultError` if rows remain after several passes
    (something keeps writing under an old key: a replica still configured with the old keyring).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    async with admin_connection(admin_dsn, bypassing_rls_for="key rotation") as conn:
        return await _rotate_all(conn, Vault(keyring), progress, batch_size)



async def _rotate_all(
    conn: asyncpg.Connection, vault: Vault, progress: Progress, batch_size: int
) -> int:
    active = vault.keyring.active_id
    done = 0
    for _ in range(_MAX_PASSES):
        remaining = await conn.fetchval(QUERIES["count_connections_to_rotate"], active)
        if remaining == 0:
            return done
        total = done + remaining
        progress(done, total)
        cursor: tuple[str, str, str] | None = None
        while True:
            rows = await conn.fetch(
                QUERIES["list_connections_to_rotate"], active, *(cursor or (None,) * 3), batch_size
            )
            if not rows:
                break
            done += await _rotate_batch(conn, vault, rows)
            last = rows[-1]
            cursor = (last["org_id"], last["user_id"], last["provider"])
            progress(done, total)
    raise VaultError("rows under old keys remain; is a replica still using the old keyring?")


async def _rotate_batch(conn: asyncpg.Connection, vault: Vault, rows: list[asyncpg.Record]) -> int:
    resealed = []
    for row in rows:
        ref = ConnectionRef(row["org_id"], row["user_id"], row["provider"])
        old = Sealed(row["key_id"], bytes(row["nonce"]), bytes(row["ciphertext"]))
        resealed.append((ref, old, vault.reseal(ref, old)))
    changed = 0
    async with conn.transaction():
        for ref, old, new in resealed:
            updated = await conn.fetchval(
                QUERIES["rotate_connection_key"],
                ref.org_id, ref.user_id, ref.provider, old.key_id, old.nonce,
                new.key_id, new.nonce, new.ciphertext,
            )  # fmt: skip
            changed += updated is not None
    return changed
