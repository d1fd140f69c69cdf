"""The token keyring: AES-256 keys by key id, the first one active.

Configured as one string, ``"k2:BASE64,k1:BASE64"`` (standard or URL-safe base64 of exactly 32
bytes each). New ciphertexts use the first (active) key; the others only decrypt rows written
before a rotation. To rotate: put a new key first, deploy, run ``gatehouse keys rotate``, then
remove the old key. Neither ``repr`` nor ``str`` nor any error shows key material.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from oauth.errors import KeyringError, UnknownKeyId

KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def _decode_key(key_id: str, text: str) -> bytes:
    text = text.strip()
    try:
        raw = base64.b64decode(
            text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        raise KeyringError(f"key {key_id!r} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(raw)}")
    return raw


class Keyring:
    """Immutable mapping of key id to 32-byte AES key; ``active_id`` encrypts."""

    __slots__ = ("_active_id", "_keys")

    def __init__(self, keys: Mapping[str, bytes], active_id: str) -> None:
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id):
                raise KeyringError(f"key id {key_id!r} must match {_KEY_ID.pattern}")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} must be {KEY_BYTES} bytes")
        if active_id not in keys:
            raise KeyringError("the active key id is not in the keyring")
        self._keys: Mapping[str, bytes] = MappingProxyType(dict(keys))
        self._active_id = active_id

    @classmethod
    def parse(cls, config: str) -> Keyring:
        """Parse ``"kid:base64,kid:base64"``; the first entry is the active key."""
        keys: dict[str, bytes] = {}
        first: str | None = None
        for entry in config.split(","):
            key_id, sep, encoded = entry.strip().partition(":")
            if not sep:
                raise KeyringError("each keyring entry must be 'key_id:base64_key'")
            if not _KEY_ID.match(key_id):
                raise KeyringError(f"key id {key_id!r} must match {_KEY_ID.pattern}")
            if key_id in keys:
                raise KeyringError(f"key id {key_id!r} appears twice")
            keys[key_id] = _decode_key(key_id, encoded)
            first = first or key_id
        if first is None:
            raise KeyringError("the keyring is empty")
        return cls(keys, first)

    @property
    def active_id(self) -> str:
        return self._active_id

    @property
    def active_key(self) -> bytes:
        return self._keys[self._active_id]

    def key(self, key_id: str) -> bytes:
        """The key named ``key_id``; :class:`UnknownKeyId` if the keyring does not hold it."""
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKeyId(key_id) from None

    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(active={self._active_id!r}, ids={self.ids()!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Keyring cannot be pickled")


def generate_entry(key_id: str) -> str:
    """A new ``key_id:base64`` entry for an operator to prepend to the configuration."""
    if not _KEY_ID.match(key_id):
        raise KeyringError(f"key id {key_id!r} must match {_KEY_ID.pattern}")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"
