"""CSRF defence for the connect pages' POST forms (Connect, Disconnect, confirming a link).

A synchronizer token: a random value kept in the server-side session, rendered into each form
and compared in constant time on submission. ``SameSite=Lax`` already keeps the cookie off
cross-site POSTs; the token also covers same-site attackers and browsers without SameSite.
An ``Origin`` (or ``Sec-Fetch-Site``) showing another site is refused outright.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request

from gateway.connect.session import BrowserSession
from gateway.errors import CsrfRejected

FIELD = "csrf_token"
MAX_FORM_BYTES = 4096


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


async def read_form(request: Request) -> dict[str, str]:
    """A small ``application/x-www-form-urlencoded`` body (first value of each field)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {name: values[0] for name, values in fields.items()}


def check_origin(request: Request, public_url: str) -> None:
    """Refuse a form another site made the browser send, whatever it carries."""
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() != _origin(public_url):
        raise CsrfRejected("cross-origin form submission")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise CsrfRejected("cross-site form submission")


def check_token(form: dict[str, str], expected: str) -> None:
    token = form.get(FIELD, "")
    if not token or not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise CsrfRejected("missing or wrong CSRF token")


def check(request: Request, session: BrowserSession, form: dict[str, str], public_url: str) -> None:
    check_origin(request, public_url)
    check_token(form, session.csrf)
