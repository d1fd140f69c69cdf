"""Everything a request may need, created once in the lifespan and handed to each request
through ``scope["state"]["services"]`` (never a module global)."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from gateway.activity import SessionActivity
from gateway.audit import AuditTrail
from gateway.jwks import JwksCache
from gateway.metrics import Metrics
from gateway.principal import ClaimMapping
from gateway.provisioning import Provisioner
from gateway.settings import GatewaySettings
from gateway.tokens import TokenVerifier
from gateway.tool_catalogue import ToolCatalogue
from gateway.upstream import Upstream
from oauth.assertion import AssertionSigner
from prompts import PromptComposer

if TYPE_CHECKING:  # gateway.connect's routes import this module
    from gateway.connect.signin_oidc import SigninClient
from resilience import RateLimiter


@dataclass(frozen=True)
class Services:
    settings: GatewaySettings
    pool: asyncpg.Pool
    redis: Redis
    http: aiohttp.ClientSession
    jwks: JwksCache
    verifier: TokenVerifier
    claims: ClaimMapping
    provisioner: Provisioner
    user_limiter: RateLimiter
    signer: AssertionSigner
    metrics: Metrics
    audit: AuditTrail
    activity: SessionActivity
    composer: PromptComposer
    signin: SigninClient | None  # only when sign-in to /connect is configured
    upstream: Upstream  # keep-alive connections to mcp_server's MCP endpoint
    tools: ToolCatalogue = field(default_factory=ToolCatalogue)  # names for allowed_tools


def services_of(scope: MutableMapping[str, Any]) -> Services:
    state = scope["state"]
    assert isinstance(state, dict)
    services = state["services"]
    assert isinstance(services, Services)
    return services
