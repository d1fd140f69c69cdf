"""A development identity issuer for ``gatehouse up`` without an external identity provider.

Its RSA key lives in ``./.gatehouse/``; the gateway publishes the public half at
``/dev/jwks.json`` only when configured to (:mod:`gateway.dev_issuer_keys`), and
``gatehouse token`` mints access tokens with it. Tokens go through exactly the same
verification path as any external issuer's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.dev_issuer_keys import KID, load_key
from oauth.keys import write_private_pem

ISSUER_PATH = "/dev"
JWKS_PATH = "/dev/jwks.json"


def dev_issuer(public_url: str) -> str:
    return public_url.rstrip("/") + ISSUER_PATH


def dev_jwks_url(public_url: str) -> str:
    return public_url.rstrip("/") + JWKS_PATH


def ensure_key(path: Path) -> rsa.RSAPrivateKey:
    """Load the development signing key, creating it (mode 0600) on first use."""
    if path.exists():
        return load_key(path)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private_pem(path, key)
    return key


def mint(
    key: rsa.RSAPrivateKey,
    *,
    issuer: str,
    audience: str,
    org: str,
    user: str,
    roles: list[str],
    lifetime: int = 3600,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """An ``at+jwt`` for ``audience``; ``extra`` claims (profile, ...) never replace these."""
    now = int(time.time())
    claims = {
        **(extra or {}),
        "iss": issuer,
        "aud": audience,
        "sub": user,
        "org_id": org,
        "roles": roles,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "client_id": "gatehouse-dev",
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID, "typ": "at+jwt"})
