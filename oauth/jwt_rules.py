"""The rules every JWT that Gatehouse accepts is held to, written once (SECURITY.md 1-13).

Three uses share them, each with its own :class:`JwtPolicy`: inbound access tokens
(:mod:`gateway.tokens`), ID tokens at sign-in (:mod:`gateway.connect.signin_oidc`) and the
internal assertion (:mod:`oauth.assertion`). The order of the checks is fixed:

1. size cap, before anything is parsed;
2. the header: algorithm on the allow-list (never HMAC or ``none``), no ``crit``, ``typ``
   accepted (and not one the use refuses), a well-formed key id where keys are looked up by id;
3. the key, from the use's own key source only (never ``jku``/``x5u``/``jwk``/``x5c`` headers);
   a JWK's ``kty`` and ``alg`` must agree with the header's algorithm;
4. signature, ``iss`` exact, ``aud``, required claims (PyJWT);
5. NumericDates as exact integers (PyJWT accepts floats and numeric strings; ``True`` is an
   ``int`` to ``isinstance``), ``exp``/``nbf``/``iat`` within the skew, and a lifetime cap.

Every refusal is a :class:`~oauth.errors.JwtRejected` with a stable ``reason`` and a message
safe to show; callers translate it into their own error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from oauth.errors import JwtRejected

SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "none"})
_KID = re.compile(r"^[A-Za-z0-9._~+/=-]{1,128}$")
# Which key types can produce which signature algorithms (by algorithm-name prefix).
_KEY_TYPES = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA", "Ed")}
_TIME_CLAIMS = ("exp", "nbf", "iat")


@dataclass(frozen=True)
class JwtPolicy:
    """What one use of JWTs accepts."""

    issuer: str
    audience: str
    algorithms: frozenset[str]
    skew: int
    max_bytes: int
    accepted_types: frozenset[str] | None = None  # lower-case ``typ`` values; None: any
    refused_types: frozenset[str] = frozenset()  # e.g. access tokens where an ID token is due
    required_claims: tuple[str, ...] = ("exp", "iss", "aud")
    max_lifetime: int | None = None  # the most ``exp - iat`` may be
    keys_by_id: bool = True  # keys are looked up by ``kid`` (a JWKS), so it must be sound

    def __post_init__(self) -> None:
        unsafe = SYMMETRIC_ALGORITHMS.intersection(self.algorithms)
        if unsafe:
            raise ValueError(f"algorithms {sorted(unsafe)} cannot verify these tokens")
        if self.max_lifetime is not None and "iat" not in self.required_claims:
            raise ValueError("a lifetime cap needs iat among the required claims")


@dataclass(frozen=True)
class Header:
    alg: str
    kid: str | None


def read_header(token: str, policy: JwtPolicy) -> Header:
    """Steps 1-2: everything that can be refused before any key is looked up."""
    if len(token) > policy.max_bytes:
        raise JwtRejected("too_large", "token too large")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise JwtRejected("malformed", "token malformed") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in policy.algorithms:
        raise JwtRejected("algorithm", "token algorithm not allowed")
    if "crit" in header:
        raise JwtRejected("crit", "token has critical header parameters this server does not know")
    _check_type(header.get("typ"), policy)
    kid = header.get("kid")
    if policy.keys_by_id and (not isinstance(kid, str) or not _KID.match(kid)):
        raise JwtRejected("key_id", "token key id missing or malformed")
    return Header(alg, kid if isinstance(kid, str) else None)


def _check_type(typ: object, policy: JwtPolicy) -> None:
    found = typ.lower() if isinstance(typ, str) else None
    if policy.accepted_types is not None and found not in policy.accepted_types:
        raise JwtRejected("type", "token type not accepted")
    if found in policy.refused_types:
        raise JwtRejected("type", "token type not accepted")


def key_from_jwk(jwk: Mapping[str, Any] | None, alg: str) -> Any:
    """Step 3 for JWKS-based uses: the verification key of ``jwk`` for ``alg``."""
    if jwk is None:
        raise JwtRejected("unknown_key", "token signed by an unknown key")
    prefixes = _KEY_TYPES.get(str(jwk.get("kty")), ())
    if jwk.get("alg", alg) != alg or not alg.startswith(prefixes or ("\0",)):
        raise JwtRejected("key_mismatch", "token algorithm does not match its key")
    try:
        return jwt.PyJWK(dict(jwk), algorithm=alg).key
    except jwt.PyJWTError:
        raise JwtRejected("key_mismatch", "token algorithm does not match its key") from None


def decode(token: str, key: Any, header: Header, policy: JwtPolicy, now: float) -> dict[str, Any]:
    """Steps 4-5: signature and claims. ``now`` is the verifying clock's time."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[header.alg], audience=policy.audience, issuer=policy.issuer,
            options={"require": list(policy.required_claims), "strict_aud": False,
                     "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise JwtRejected("signature", "token invalid") from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
        raise JwtRejected("audience", "token not issued for this resource") from None
    except jwt.MissingRequiredClaimError as exc:
        raise JwtRejected("missing_claim", f"token lacks the {exc.claim} claim") from None
    except jwt.PyJWTError:
        raise JwtRejected("invalid", "token invalid") from None
    check_times(claims, policy, now)
    return claims


def check_times(claims: Mapping[str, Any], policy: JwtPolicy, now: float) -> None:
    """NumericDates must be exact integers; each is held to the skew; the lifetime is capped.

    Also run on every use of a remembered token, so a remembered token still expires."""
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if (value is not None or name in policy.required_claims) and type(value) is not int:
            raise JwtRejected("time_claim", f"token claim {name} must be an integer time")
    if "exp" in claims and claims["exp"] + policy.skew <= now:
        raise JwtRejected("expired", "token expired")
    if claims.get("nbf", 0) - policy.skew > now:
        raise JwtRejected("not_yet_valid", "token not yet valid")
    if claims.get("iat", 0) - policy.skew > now:
        raise JwtRejected("issued_in_future", "token not yet valid (issued in the future)")
    if policy.max_lifetime is not None and claims["exp"] - claims["iat"] > policy.max_lifetime:
        raise JwtRejected("lifetime", "token lifetime exceeds the maximum")
