"""The development issuer's public key set, which the gateway serves at ``/dev/jwks.json``.

Only the public half is the server's business: creating the key and minting tokens with it is
``gatehouse``'s (:mod:`gateway.cli.devissuer`), which writes the key file before the gateway
starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KID = "gatehouse-dev-1"


def load_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key


def jwks(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "use": "sig", "alg": "RS256"})
    return {"keys": [public]}


def public_jwks(path: Path) -> dict[str, Any]:
    """The key set of the key file at ``path``; empty until ``gatehouse`` has created it."""
    if not path.exists():
        return {"keys": []}
    return jwks(load_key(path))
