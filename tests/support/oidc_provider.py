"""A real OpenID provider (npm ``oidc-provider``) run as an external IdP for tests.

Gatehouse validates tokens issued by a third-party identity provider, so the
tests run a genuine one instead of hand-rolled JWTs: ``tests/idp/server.mjs``
wraps ``oidc-provider`` and is started here as a subprocess on 127.0.0.1.
The signing key is generated on the Python side and handed to the provider,
so tests can also forge tokens with exactly the same key (``private_key`` /
``kid``) for negative cases.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

IDP_DIR = Path(__file__).resolve().parent.parent / "idp"
DEFAULT_AUDIENCE = "https://gatehouse.test/mcp"

# Mirrors the constants in tests/idp/server.mjs.
MINT_GRANT = "urn:gatehouse:test:mint"
TEST_CLIENT_ID = "gatehouse-test"
TEST_CLIENT_SECRET = "gatehouse-test-secret"
TEST_REDIRECT_URI = "http://127.0.0.1/callback"


class OidcProviderError(RuntimeError):
    """The provider could not be started or refused a token request."""


def _b64url_uint(value: int) -> str:
    """Encode an RSA integer as JWK base64url (big-endian, no padding)."""
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _private_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    """Build the private JWK oidc-provider needs to sign with ``key``."""
    priv = key.private_numbers()
    pub = priv.public_numbers
    return {
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": _b64url_uint(pub.n),
        "e": _b64url_uint(pub.e),
        "d": _b64url_uint(priv.d),
        "p": _b64url_uint(priv.p),
        "q": _b64url_uint(priv.q),
        "dp": _b64url_uint(priv.dmp1),
        "dq": _b64url_uint(priv.dmq1),
        "qi": _b64url_uint(priv.iqmp),
    }


def _free_port() -> int:
    """Ask the OS for a currently unused TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OidcProvider:
    """Runs ``tests/idp/server.mjs`` and mints genuine tokens from it.

    Use as a context manager (or call :meth:`start` / :meth:`stop`).
    """

    def __init__(
        self,
        audience: str = DEFAULT_AUDIENCE,
        *,
        startup_timeout: float = 30.0,
        clients: list[dict[str, Any]] | None = None,
        node: str = "node",
    ) -> None:
        self.audience = audience
        self.startup_timeout = startup_timeout
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.kid = f"gatehouse-test-{uuid.uuid4().hex[:12]}"
        self.private_key: rsa.RSAPrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
        self.private_jwks: dict[str, list[dict[str, str]]] = {
            "keys": [_private_jwk(self.private_key, self.kid)]
        }
        self.client_id = TEST_CLIENT_ID
        self.client_secret = TEST_CLIENT_SECRET
        self._clients = clients or []
        self._node = node
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: list[str] = []
        self._stdout: list[str] = []
        self._http: httpx.Client | None = None

    # -- lifecycle -----------------------------------------------------------

    @property
    def jwks_url(self) -> str:
        """The JWKS endpoint (oidc-provider default path, also in discovery)."""
        return f"{self.issuer}/jwks"

    @property
    def discovery_url(self) -> str:
        """OpenID Connect discovery document URL."""
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def token_url(self) -> str:
        """Token endpoint (oidc-provider default path)."""
        return f"{self.issuer}/token"

    def start(self) -> OidcProvider:
        """Start node, wait for its READY line; raise with stderr on failure."""
        if self._proc is not None:
            return self
        self._ensure_node_modules()
        env = {
            **os.environ,
            "PORT": str(self.port),
            "ISSUER": self.issuer,
            "AUDIENCE": self.audience,
            "JWKS_PRIVATE": json.dumps(self.private_jwks),
            "CLIENTS_JSON": json.dumps(self._clients),
            "NODE_ENV": "test",
        }
        self._proc = subprocess.Popen(
            [self._node, "server.mjs"],
            cwd=IDP_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        threading.Thread(
            target=self._pump, args=(self._proc.stdout, self._stdout, ready), daemon=True
        ).start()
        threading.Thread(
            target=self._pump, args=(self._proc.stderr, self._stderr, None), daemon=True
        ).start()

        deadline = time.monotonic() + self.startup_timeout
        while not ready.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                reason = (
                    f"exited with code {self._proc.returncode}"
                    if self._proc.returncode is not None
                    else f"not ready after {self.startup_timeout:.0f}s"
                )
                self.stop()
                time.sleep(0.1)  # let the pump threads drain the pipes
                raise OidcProviderError(
                    f"oidc-provider {reason}.\nstdout:\n{''.join(self._stdout)}"
                    f"\nstderr:\n{''.join(self._stderr)}"
                )
        self._http = httpx.Client(timeout=10.0)
        return self

    def stop(self) -> None:
        """Terminate the node process by PID and wait for it to exit."""
        if self._http is not None:
            self._http.close()
            self._http = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _pump(stream: IO[str], sink: list[str], ready: threading.Event | None) -> None:
        """Drain a pipe so node never blocks on a full buffer; spot READY."""
        for line in stream:
            sink.append(line)
            if ready is not None and line.startswith("READY "):
                ready.set()

    @staticmethod
    def _ensure_node_modules() -> None:
        """Install the pinned npm deps once; later runs reuse node_modules."""
        if (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise OidcProviderError("npm not found; cannot install tests/idp dependencies")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=IDP_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise OidcProviderError(f"npm ci failed in {IDP_DIR}:\n{result.stderr}")

    @property
    def client(self) -> httpx.Client:
        """HTTP client for talking to the running provider."""
        if self._http is None:
            raise OidcProviderError("provider is not running")
        return self._http

    # -- tokens --------------------------------------------------------------

    def mint(
        self,
        org: str,
        user: str,
        roles: Sequence[str] = ("member",),
        *,
        scope: str | None = None,
    ) -> dict[str, Any]:
        """Run the custom mint grant and return the raw token response."""
        data = {
            "grant_type": MINT_GRANT,
            "user": user,
            "org": org,
            "roles": " ".join(roles),
            "resource": self.audience,
        }
        if scope:
            data["scope"] = scope
        response = self.client.post(
            self.token_url, data=data, auth=(self.client_id, self.client_secret)
        )
        if response.status_code != 200:
            raise OidcProviderError(f"token request failed: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        return body

    def access_token(self, org: str, user: str, roles: Sequence[str] = ("member",)) -> str:
        """A genuine RFC 9068 access token (typ at+jwt, aud = audience)."""
        token: str = self.mint(org, user, roles)["access_token"]
        return token

    def id_token(self, org: str, user: str, roles: Sequence[str] = ("member",)) -> str:
        """A genuine ID token (typ JWT, aud = client id) for the same user."""
        token: str = self.mint(org, user, roles, scope="openid")["id_token"]
        return token

    def authorization_code_tokens(
        self, user: str, *, scope: str = "openid", password: str = "any"
    ) -> dict[str, Any]:
        """Drive code + PKCE through devInteractions over plain HTTP.

        Proves the browser flow works; returns the token endpoint response
        (access_token for ``audience`` and id_token). The user's org/roles
        are those of the last :meth:`mint` for that user, if any.
        """
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        state = secrets.token_urlsafe(12)
        with httpx.Client(base_url=self.issuer, timeout=10.0) as browser:
            response = browser.get(
                "/auth",
                params={
                    "client_id": self.client_id,
                    "response_type": "code",
                    "redirect_uri": TEST_REDIRECT_URI,
                    "scope": scope,
                    "state": state,
                    "resource": self.audience,
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                    "prompt": "consent",
                },
            )
            for _ in range(10):
                if response.status_code not in (302, 303):
                    raise OidcProviderError(
                        f"unexpected {response.status_code} during login: {response.text[:500]}"
                    )
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(TEST_REDIRECT_URI):
                    break
                page = browser.get(location)
                if page.status_code in (302, 303):
                    response = page
                    continue
                prompt = "login" if 'name="login"' in page.text else "consent"
                form = {"prompt": prompt}
                if prompt == "login":
                    form |= {"login": user, "password": password}
                response = browser.post(location, data=form)
            else:
                raise OidcProviderError("authorization flow did not reach the redirect URI")

        query = parse_qs(urlparse(location).query)
        if "error" in query:
            raise OidcProviderError(f"authorization failed: {query}")
        if query.get("state") != [state]:
            raise OidcProviderError("state mismatch in authorization response")
        token_response = self.client.post(
            self.token_url,
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": TEST_REDIRECT_URI,
                "code_verifier": verifier,
                "resource": self.audience,
            },
            auth=(self.client_id, self.client_secret),
        )
        if token_response.status_code != 200:
            raise OidcProviderError(
                f"code exchange failed: {token_response.status_code} {token_response.text}"
            )
        body: dict[str, Any] = token_response.json()
        return body
