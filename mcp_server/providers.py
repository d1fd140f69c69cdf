"""Which providers this deployment enables: ``GATEHOUSE_PROVIDERS``, a JSON object.

Keys are provider names. A catalogue name (``github``, ``google``, ``microsoft``, ``slack``,
``atlassian``, ``notion``; see ``oauth/providers.json``) needs only its client credentials; any
other name needs the OpenID provider's ``discovery_url``::

    GATEHOUSE_PROVIDERS='{
      "github": {"client_id": "Iv1.abc", "client_secret": "..."},
      "corp":   {"discovery_url": "https://sso.corp.example/.well-known/openid-configuration",
                 "client_id": "gatehouse", "client_secret": "...", "scopes": ["openid", "email"]}
    }'

Optional per provider: ``scopes`` (replaces the default scopes), ``token_auth_method``,
``display_name``, and endpoint overrides ``api_base_url``, ``authorization_endpoint``,
``token_endpoint``, ``revocation_endpoint``, ``userinfo_endpoint``, ``issuer`` (for tests and
enterprise/sovereign deployments; https, or http to loopback only). Overriding ``api_base_url``
also moves a userinfo endpoint that lived under the old base.

Discovery documents are fetched at start-up, concurrently, with a timeout and a size cap. A
provider whose configuration or discovery fails is left out and logged (by name and reason,
never its secret); the server still starts, without that provider's tools.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Mapping

import aiohttp

from mcp_server.settings import ProviderConfig
from oauth.catalogue import (
    ConfiguredProvider,
    ProviderSpec,
    configure,
    discover,
    with_overrides,
)
from oauth.errors import CatalogueError

log = logging.getLogger(__name__)
_PROVIDER_NAME = re.compile(r"^[a-z0-9_-]{1,40}$")  # becomes part of tool names

_OVERRIDES = ("api_base_url", "authorization_endpoint", "token_endpoint", "revocation_endpoint",
              "userinfo_endpoint", "issuer")


async def _spec_for(
    session: aiohttp.ClientSession, name: str, config: ProviderConfig,
    catalogue: Mapping[str, ProviderSpec], fetch_seconds: float,
) -> ProviderSpec:
    if config.discovery_url is not None:
        spec = await discover(session, name, config.discovery_url, fetch_seconds=fetch_seconds)
    elif name in catalogue:
        spec = catalogue[name]
    else:
        raise CatalogueError(f"{name}: not in the catalogue and no discovery_url given")
    overrides = {k: getattr(config, k) for k in _OVERRIDES if getattr(config, k) is not None}
    spec = with_overrides(spec, overrides) if overrides else spec
    if config.display_name:
        spec = dataclasses.replace(spec, display_name=config.display_name)
    return spec


async def _configure_one(
    session: aiohttp.ClientSession, name: str, config: ProviderConfig,
    catalogue: Mapping[str, ProviderSpec], fetch_seconds: float,
) -> ConfiguredProvider | None:
    try:
        if not _PROVIDER_NAME.match(name):
            raise CatalogueError(f"{name[:64]!r}: provider names are 1-40 of [a-z0-9_-]")
        spec = await _spec_for(session, name, config, catalogue, fetch_seconds)
        secret = config.client_secret.get_secret_value() if config.client_secret else None
        return configure(spec, config.client_id, secret, scopes=config.scopes,
                         auth_method=config.token_auth_method)
    except CatalogueError as exc:
        log.error("provider %r disabled: %s", name, exc)
        return None


async def configure_providers(
    session: aiohttp.ClientSession,
    configs: Mapping[str, ProviderConfig],
    catalogue: Mapping[str, ProviderSpec],
    *,
    discovery_timeout: float = 5.0,
) -> dict[str, ConfiguredProvider]:
    """The enabled providers by name; misconfigured ones are logged and left out."""
    names = list(configs)
    results = await asyncio.gather(*(
        _configure_one(session, n, configs[n], catalogue, discovery_timeout) for n in names
    ))
    return {n: p for n, p in zip(names, results, strict=True) if p is not None}
