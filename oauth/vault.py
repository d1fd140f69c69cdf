"""Encryption of one connection's provider tokens (AES-256-GCM).

A :class:`TokenBundle` is serialised as JSON and encrypted under the keyring's active key with a
fresh random 96-bit nonce. The associated data binds the ciphertext to its row and key::

    v1|<org>|<user>|<provider>|<key id>

each field percent-encoded (``|`` becomes ``%7C``, ``%`` becomes ``%25``), so no two distinct
rows share associated data. A ciphertext copied into another organisation's, user's or
provider's row, or relabelled with another key id, fails authentication. What is stored is
:class:`Sealed` ``(key_id, nonce, ciphertext)``; the ciphertext includes GCM's 16-byte tag.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from opentelemetry import trace

from oauth.errors import DecryptionFailed, VaultError
from oauth.keyring import Keyring
from telemetry.spans import child_span

NONCE_BYTES = 12
FORMAT_VERSION = "v1"
_tracer = trace.get_tracer(__name__)


@dataclass(frozen=True)
class TokenBundle:
    """A connection's tokens; ``repr`` shows neither token."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None  # timezone-aware; None: the provider did not say
    scopes: tuple[str, ...] = ()

    def expires_within(self, seconds: float, *, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        now = now or datetime.now(UTC)
        return (self.expires_at - now).total_seconds() <= seconds

    def to_json(self) -> bytes:
        expires = None if self.expires_at is None else self.expires_at.timestamp()
        document = {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": expires,
            "scopes": list(self.scopes),
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TokenBundle:
        try:
            document = json.loads(data)
            expires, refresh = document["expires_at"], document["refresh_token"]
            return cls(
                access_token=str(document["access_token"]),
                refresh_token=None if refresh is None else str(refresh),
                expires_at=None if expires is None else datetime.fromtimestamp(expires, UTC),
                scopes=tuple(str(s) for s in document["scopes"]),
            )
        except (ValueError, KeyError, TypeError):
            # ``from None``: a JSON error's context would carry the decrypted document.
            raise VaultError("decrypted token bundle is malformed") from None


@dataclass(frozen=True)
class ConnectionRef:
    """Which row a ciphertext belongs to."""

    org_id: str
    user_id: str
    provider: str


@dataclass(frozen=True)
class Sealed:
    """What the database stores for one connection's tokens."""

    key_id: str
    nonce: bytes
    ciphertext: bytes = field(repr=False)


def associated_data(ref: ConnectionRef, key_id: str) -> bytes:
    fields = (ref.org_id, ref.user_id, ref.provider, key_id)
    return "|".join((FORMAT_VERSION, *(quote(f, safe="") for f in fields))).encode()


class Vault:
    """Seals and opens token bundles with a :class:`Keyring`."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def seal(self, ref: ConnectionRef, bundle: TokenBundle) -> Sealed:
        key_id = self._keyring.active_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = AESGCM(self._keyring.active_key).encrypt(
            nonce, bundle.to_json(), associated_data(ref, key_id)
        )
        return Sealed(key_id, nonce, ciphertext)

    def open(self, ref: ConnectionRef, sealed: Sealed) -> TokenBundle:
        """Decrypt; :class:`UnknownKeyId` if the key is gone, :class:`DecryptionFailed` if the
        ciphertext does not belong to ``ref`` or was altered."""
        with child_span(_tracer, "vault decrypt", {"gatehouse.vault.key_id": sealed.key_id}):
            key = self._keyring.key(sealed.key_id)
            if len(sealed.nonce) != NONCE_BYTES:
                raise DecryptionFailed("stored nonce has the wrong length")
            try:
                plaintext = AESGCM(key).decrypt(
                    sealed.nonce, sealed.ciphertext, associated_data(ref, sealed.key_id)
                )
            except InvalidTag:
                raise DecryptionFailed(
                    "stored tokens do not authenticate for this connection and key"
                ) from None
            return TokenBundle.from_json(plaintext)

    def reseal(self, ref: ConnectionRef, sealed: Sealed) -> Sealed:
        """Re-encrypt under the active key (for rotation)."""
        return self.seal(ref, self.open(ref, sealed))
