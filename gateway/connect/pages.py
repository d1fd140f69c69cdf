"""Server-rendered pages of the connect flow: Jinja2 with autoescape, and the headers every
page and redirect carries (no framing, no caching, no referrer, a strict CSP with no script)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make Origin "null"
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_ENV = Environment(
    loader=PackageLoader("gateway.connect", "templates"),
    autoescape=True,  # every value is data: provider error descriptions are attacker text
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_CSS = resources.files("gateway.connect").joinpath("static/connect.css").read_bytes()


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _ENV.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def message(title: str, text: str, status: int) -> HTMLResponse:
    """A page that only explains what happened (errors, expired links)."""
    return render("message.html", status, title=title, text=text)


def stale_form() -> HTMLResponse:
    return message("Request refused", "This form is stale or did not come from this "
                   "page. Reload the page and try again.", status=403)


def redirect(url: str) -> RedirectResponse:
    """303 so the browser follows with GET; only to our own paths or a provider's endpoint."""
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


async def stylesheet(request: Request) -> Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"}
    return Response(_CSS, media_type="text/css", headers=headers)
