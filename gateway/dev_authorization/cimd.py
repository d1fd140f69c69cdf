"""Client ID Metadata Documents: a client whose ``client_id`` is the URL of its own metadata.

The document is fetched when the client shows up (no registration step), with a size cap, a
short timeout and no redirects, and must name itself (its ``client_id`` equals the URL it was
fetched from) and list the redirect URIs the client may use. In development an ``http`` URL on
a loopback address is accepted besides ``https``; only public clients (``none``) are supported,
since such a document has no place for a shared secret.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.dev_authorization.models import (
    GRANT_TYPES,
    Client,
    acceptable_redirect_uri,
    is_loopback_host,
)
from gateway.errors import ClientDocumentError

MAX_DOCUMENT_BYTES = 5 * 1024
FETCH_TIMEOUT_SECONDS = 3.0


def is_document_url(client_id: str) -> bool:
    return client_id.startswith(("https://", "http://"))


def check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ClientDocumentError("client_id is not a valid URL") from None
    secure = parts.scheme == "https" or (
        parts.scheme == "http" and is_loopback_host(parts.hostname))
    if not secure or not parts.hostname:
        raise ClientDocumentError("a client_id URL must use https (or http on a loopback address)")
    if parts.path in ("", "/") or parts.fragment or parts.username or parts.password:
        raise ClientDocumentError("a client_id URL needs a path and no fragment or credentials")
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        raise ClientDocumentError("a client_id URL must not contain dot segments")


async def fetch_client(http: aiohttp.ClientSession, url: str) -> Client:
    check_url(url)
    return client_from_document(url, await _fetch(http, url))


async def _fetch(http: aiohttp.ClientSession, url: str) -> bytes:
    try:
        async with http.get(
            url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS),
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
        ) as response:
            if response.status != 200:
                raise ClientDocumentError(
                    f"the client metadata document answered {response.status}")
            body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError):
        raise ClientDocumentError("the client metadata document could not be fetched") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ClientDocumentError(
            f"the client metadata document is over {MAX_DOCUMENT_BYTES} bytes")
    return body


def client_from_document(url: str, body: bytes) -> Client:
    try:
        document: Any = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ClientDocumentError("the client metadata document is not JSON") from None
    if not isinstance(document, dict) or document.get("client_id") != url:
        raise ClientDocumentError("the client metadata document must name its own URL as client_id")
    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise ClientDocumentError(
            "only public clients (token_endpoint_auth_method none) are supported")
    return Client(
        client_id=url,
        redirect_uris=_redirect_uris(document.get("redirect_uris")),
        grant_types=_string_list(document.get("grant_types", ["authorization_code"]),
                                 "grant_types", GRANT_TYPES),
        response_types=_string_list(document.get("response_types", ["code"]),
                                    "response_types", ("code",)),
        scope=scope if isinstance(scope := document.get("scope"), str) else "",
        client_name=str(document.get("client_name") or "")[:200],
        metadata_document=True,
    )


def _redirect_uris(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ClientDocumentError("the client metadata document lists no redirect_uris")
    if not all(isinstance(uri, str) and acceptable_redirect_uri(uri) for uri in value):
        raise ClientDocumentError("each redirect URI must be https or http on a loopback address")
    return tuple(value)


def _string_list(value: Any, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v in allowed for v in value):
        raise ClientDocumentError(f"{name} must be a list drawn from {', '.join(allowed)}")
    return tuple(value)
