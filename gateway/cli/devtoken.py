"""``gatehouse token``: a development access token the running stack accepts.

Issuer and audience come from the ``up`` running on the data directory (``up.json``), so the
token matches its ports and URL; with no ``up`` running, from the same settings ``up`` reads
(``GATEHOUSE_PUBLIC_URL``, ``.env``); ``--public-url`` overrides both. Arguments the gateway
would refuse later (an empty or reserved id, an unknown role) are refused here, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli import config, devissuer, instance
from gateway.errors import Unauthenticated
from gateway.permissions import ROLE_PERMISSIONS
from gateway.principal import ClaimMapping

MAX_LIFETIME = 365 * 86_400
# Claims the token's identity rests on: set only by their own flags (or not at all).
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "org_id", "roles", "client_id", "name",
     "email"}
)
_FLAG_OF = {"sub": "--user", "org_id": "--org", "roles": "--role", "exp": "--lifetime",
            "iss": "--public-url", "aud": "--public-url", "name": "--name", "email": "--email"}


def add_parser(commands: Any) -> None:
    token = commands.add_parser(
        "token", help="print a development access token for the running stack",
        description=__doc__.splitlines()[0])
    token.add_argument("--org", required=True, type=_identifier("organisation"),
                       help="organisation id (org_id claim)")
    token.add_argument("--user", required=True, type=_identifier("user"),
                       help="user id (sub claim)")
    token.add_argument("--role", action="append", dest="roles", type=_role,
                       help=f"repeatable; one of {', '.join(ROLE_PERMISSIONS)} (default: member)")
    token.add_argument("--lifetime", type=_lifetime, default=3600,
                       help="seconds until it expires (default: 3600)")
    token.add_argument("--public-url", type=_url, default=None,
                       help="the gateway's public URL (default: the running `up`'s, else "
                       "GATEHOUSE_PUBLIC_URL, else http://127.0.0.1:8000)")
    token.add_argument("--name", type=_text("--name"), help="profile claim: display name")
    token.add_argument("--email", type=_text("--email"), help="profile claim: email address")
    token.add_argument("--claim", action="append", dest="claims", type=_claim, default=[],
                       metavar="KEY=VALUE",
                       help="repeatable; any other claim; VALUE is JSON if it parses, else text")


def run(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    key_file = data_dir / "dev_issuer.pem"
    target = _target(args, data_dir)
    if isinstance(target, str):
        print(f"gatehouse token: {target}", file=sys.stderr)
        return 2
    if not key_file.exists():
        print(f"gatehouse token: no development issuer key at {key_file}; run `gatehouse up` "
              "first (or pass the --data-dir it uses)", file=sys.stderr)
        return 2
    issuer, aud = target
    print(devissuer.mint(devissuer.ensure_key(key_file), issuer=issuer, audience=aud,
                         org=args.org, user=args.user, roles=args.roles or ["member"],
                         lifetime=args.lifetime, extra=_profile(args)))
    return 0


def _target(args: argparse.Namespace, data_dir: Path) -> tuple[str, str] | str:
    """(issuer, audience), or why there is none."""
    settings = config.UpSettings()
    if args.public_url:
        return devissuer.dev_issuer(args.public_url), config.audience(settings, args.public_url)
    running = instance.running(data_dir)
    if running is not None:
        if not running.dev_issuer:
            return (f"the `up` running on {data_dir} trusts the issuer {running.issuer}, not the "
                    "development issuer; get a token from that issuer")
        return running.issuer, running.audience
    if settings.issuer:
        return ("GATEHOUSE_ISSUER is set, so `up` does not use the development issuer; get a "
                "token from that issuer (or pass --public-url to mint one anyway)")
    try:
        url = config.public_url(settings)
    except ValueError as exc:
        return str(exc)
    return devissuer.dev_issuer(url), config.audience(settings, url)


def _profile(args: argparse.Namespace) -> dict[str, Any]:
    extra: dict[str, Any] = dict(args.claims)
    if args.name is not None:
        extra["name"] = args.name
    if args.email is not None:
        extra["email"] = args.email
    return extra


# -- argument types: a ValueError/ArgumentTypeError becomes argparse's one-line error, exit 2 --


def _identifier(what: str) -> Any:
    def parse(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"the {what} id must not be empty")
        claims = {"org_id": value, "sub": "u"} if what == "organisation" else \
            {"org_id": "o", "sub": value}
        try:  # the gateway's own rule, so a token minted here is never refused for its ids
            ClaimMapping().principal(claims)
        except Unauthenticated as exc:
            raise argparse.ArgumentTypeError(
                f"{value!r} would be refused by the gateway: {exc.detail}") from None
        return value

    return parse


def _role(value: str) -> str:
    if value not in ROLE_PERMISSIONS:
        raise argparse.ArgumentTypeError(
            f"unknown role {value!r}; known roles: {', '.join(ROLE_PERMISSIONS)}")
    return value


def _lifetime(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if not 0 < seconds <= MAX_LIFETIME:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of seconds from 1 to {MAX_LIFETIME}, not {value!r}")
    return seconds


def _url(value: str) -> str:
    try:
        return config.check_url(value, "the URL")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _text(flag: str) -> Any:
    def parse(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"{flag} must not be empty")
        return value

    return parse


def _claim(value: str) -> tuple[str, Any]:
    key, sep, raw = value.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {value!r}")
    if key in RESERVED_CLAIMS:
        flag = _FLAG_OF.get(key)
        how = f"use {flag}" if flag else "gatehouse token sets it"
        raise argparse.ArgumentTypeError(f"the {key!r} claim is reserved; {how}")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw
