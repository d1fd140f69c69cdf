"""What every scenario shares: where the stack is, who the simulated user is, its tokens.

The runner (:mod:`loadtests.run_locust`) tells Locust about the stack through the environment:

    LOADTEST_DATA_DIR        ``gatehouse up``'s data directory (development issuer and internal
                             assertion keys); default ``.gatehouse``
    LOADTEST_MCP_SERVER_URL  mcp_server's base URL (the internal disconnect route)
    LOADTEST_GRANTS_URL      the runner's grant service (:mod:`.grants`)
    LOADTEST_STATS_DIR       where :mod:`.stats` writes its per-scenario figures
    LOADTEST_THINK_SCALE     multiplies the think time between a user's tasks (default 1)

Tokens are minted with the development issuer, for the gateway Locust is pointed at
(``--host``), exactly as ``gatehouse token`` mints them.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
import uuid
from pathlib import Path
from typing import Protocol

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from locust import HttpUser, between

from gateway.cli import devissuer
from oauth.assertion import AssertionSigner, CallerIdentity
from oauth.keys import load_private_key

# An agent's calls are seconds apart: it reads, thinks (an LLM turn) and acts.
_SCALE = float(os.environ.get("LOADTEST_THINK_SCALE", "1"))
THINK = between(1.0 * _SCALE, 3.0 * _SCALE)
ORGANIZATIONS = 10
TOKEN_LIFETIME = 3600
REMINT_AFTER = 1800  # seconds; a soak outlives one token
_NUMBERS = itertools.count()


def data_dir() -> Path:
    return Path(os.environ.get("LOADTEST_DATA_DIR", ".gatehouse"))


@functools.cache
def issuer_key() -> rsa.RSAPrivateKey:
    return devissuer.ensure_key(data_dir() / "dev_issuer.pem")


@functools.cache
def forger_key() -> rsa.RSAPrivateKey:
    """A key the gateway has never seen; its tokens claim the development issuer's key id."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def internal_signer() -> AssertionSigner:
    key = load_private_key((data_dir() / "internal_assertion.pem").read_bytes())
    assert isinstance(key, Ed25519PrivateKey)
    return AssertionSigner(key, lifetime=30)


def mint(host: str, org: str, user: str, *, lifetime: int = TOKEN_LIFETIME,
         key: rsa.RSAPrivateKey | None = None) -> str:
    return devissuer.mint(
        key or issuer_key(), issuer=devissuer.dev_issuer(host),
        audience=host.rstrip("/") + "/mcp", org=org, user=user, roles=["member"],
        lifetime=lifetime,
    )


class Judged(Protocol):
    """A response of ``catch_response=True``, as far as a scenario judges it (locust's own
    class leaves ``success`` and ``failure`` untyped)."""

    status_code: int
    text: str

    def success(self) -> None: ...

    def failure(self, exc: object) -> None: ...


def expect_status(response: Judged, status: int) -> None:
    """A success if ``response`` answered ``status``, else a failure quoting its start."""
    if response.status_code == status:
        response.success()
    else:
        response.failure(f"HTTP {response.status_code}: {response.text[:200]}")


class GatehouseUser(HttpUser):
    """A distinct user of one of ten organisations, with a development token of its own."""

    abstract = True
    wait_time = THINK
    scenario = "base"

    def on_start(self) -> None:
        number = next(_NUMBERS)
        self.org = f"load-{number % ORGANIZATIONS}"
        self.user_id = f"{self.scenario}-{os.getpid()}-{number}"
        self._minted_at = 0.0
        self._token = ""

    @property
    def gateway(self) -> str:
        return self.host or "http://127.0.0.1:8000"

    def token(self) -> str:
        if time.monotonic() - self._minted_at > REMINT_AFTER:
            self._token = mint(self.gateway, self.org, self.user_id)
            self._minted_at = time.monotonic()
        return self._token

    def bearer(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": "Bearer " + (token or self.token())}

    def assertion(self) -> str:
        """What the gateway would send mcp_server for this user (internal routes)."""
        caller = CallerIdentity(self.org, self.user_id, uuid.uuid4().hex, ("member",))
        return internal_signer().sign(caller)

    def connect_grant(self, kind: str) -> None:
        """Ask the runner to connect this user's GitHub account (not a timed request: in real
        life this is the user's browser at the provider)."""
        answer = requests.post(os.environ["LOADTEST_GRANTS_URL"] + "/grants", timeout=30,
                               json={"org": self.org, "user": self.user_id, "kind": kind})
        answer.raise_for_status()
