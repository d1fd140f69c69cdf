"""The development sign-in page: pick organisation, user, roles and profile; no password."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from gateway.dev_authorization.models import Client, DevUser
from gateway.errors import Unauthenticated
from gateway.permissions import ROLE_PERMISSIONS
from gateway.principal import ClaimMapping

ROLES = tuple(ROLE_PERMISSIONS)
IDENTITY_FIELDS = frozenset({"org", "user", "role", "name", "email", "decision"})
_MAX_PROFILE = 256
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    # No form-action: Chromium applies it to the redirect back to the client as well.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
_ENV = Environment(
    loader=PackageLoader("gateway.dev_authorization", "templates"),
    autoescape=select_autoescape(default=True), undefined=StrictUndefined,
)


@dataclass(frozen=True)
class SigninForm:
    org: str = "acme"
    user: str = "alice"
    roles: tuple[str, ...] = ("member",)
    name: str = ""
    email: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_items(cls, items: Sequence[tuple[str, str]]) -> SigninForm:
        values = dict(items)
        return cls(org=values.get("org", "").strip(), user=values.get("user", "").strip(),
                   roles=tuple(v for k, v in items if k == "role"),
                   name=values.get("name", "").strip(), email=values.get("email", "").strip())

    def user_or_error(self) -> DevUser | str:
        """The chosen identity, or why the gateway would refuse it (as the page says)."""
        try:
            principal = ClaimMapping().principal(
                {"org_id": self.org, "sub": self.user, "roles": list(self.roles)})
        except Unauthenticated as exc:
            return exc.detail
        if not self.roles or any(role not in ROLES for role in self.roles):
            return "Choose at least one role."
        if len(self.name) > _MAX_PROFILE or len(self.email) > _MAX_PROFILE:
            return f"Name and email may be at most {_MAX_PROFILE} characters."
        if self.email and "@" not in self.email:
            return "The email address needs an @."
        return DevUser(principal.org_id, principal.user_id, self.roles, self.name, self.email)


def signin_page(
    *, action: str, client: Client, redirect_uri: str, oauth_params: Sequence[tuple[str, str]],
    form: SigninForm, error: str = "", status: int = 200,
) -> HTMLResponse:
    target = urlsplit(redirect_uri)
    html = _ENV.get_template("signin.html").render(
        action=action, client_id=client.client_id,
        client_name=client.client_name or "An MCP client",
        redirect_to=f"{target.scheme}://{target.netloc}{target.path}",
        oauth_params=[(k, v) for k, v in oauth_params if k not in IDENTITY_FIELDS],
        roles=ROLES, form=form, error=error,
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)
