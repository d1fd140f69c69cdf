"""Session-wide real dependencies: PostgreSQL, Redis, an OpenID provider, and a running stack
(mcp_server + gateway as uvicorn processes) configured to trust that provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from playwright.async_api import Browser, async_playwright

from oauth.keys import ensure_private_key_file, public_pem
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, ConnectStack, connect_stack
from tests.support.databases import Database, test_database, test_redis
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server, free_port, start_uvicorn


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gatehouse")


@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    with test_database() as db:
        yield db


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with test_redis() as url:
        redis.Redis.from_url(url).flushdb()
        yield url


@dataclass(frozen=True)
class InternalKeys:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def internal_keys(work_dir: Path) -> InternalKeys:
    private = work_dir / "internal.pem"
    public = work_dir / "internal.pub"
    public.write_bytes(public_pem(ensure_private_key_file(private)))
    return InternalKeys(private, public)


@pytest.fixture(scope="session")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


@pytest.fixture(scope="session")
def mcp_server(
    internal_keys: InternalKeys, work_dir: Path, database: Database, redis_url: str
) -> Iterator[Server]:
    """mcp_server with the token vault, and GitHub, Google and Slack enabled against loopback
    stand-ins (URLs, keyring and settings are in ``server.env``; see tests/support/)."""
    import json
    import uuid

    from oauth.keyring import generate_entry
    from tests.support.github_standin import RunningStandIn
    from tests.support.standin import Running
    from tests.support.workspace_standins import GoogleStandIn, SlackStandIn

    github, google, slack = RunningStandIn(), Running(GoogleStandIn().app), Running(
        SlackStandIn().app)
    client = {"client_id": "gatehouse-test", "client_secret": "test-secret"}
    providers = {
        "github": {**client, "api_base_url": github.url,
                   "token_endpoint": github.url + "/login/oauth/access_token"},
        "google": {**client, "api_base_url": google.url,
                   "userinfo_endpoint": google.url + "/v1/userinfo"},
        "slack": {**client, "api_base_url": slack.url + "/api"},
    }
    metrics_port = free_port()
    server = start_uvicorn(
        "mcp_server.app:create_app",
        {
            "GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE": str(internal_keys.public),
            "GATEHOUSE_DATABASE_URL": database.app_url,
            "GATEHOUSE_DATABASE_POOL_SIZE": "4",  # many stacks share one server's connections
            "GATEHOUSE_REDIS_URL": redis_url,
            "GATEHOUSE_TOKEN_KEYS": generate_entry("test1"),
            "GATEHOUSE_PUBLIC_URL": "https://gatehouse.test",
            "GATEHOUSE_PROVIDERS": json.dumps(providers),
            "GATEHOUSE_RESILIENCE_NAMESPACE": f"test-{uuid.uuid4().hex[:8]}",
            "GATEHOUSE_METRICS_PORT": str(metrics_port),
        },
        work_dir,
        "mcp_server",
    )
    # Tests start more servers from server.env: not on this port. Its /metrics is here:
    del server.env["GATEHOUSE_METRICS_PORT"]
    server.env["TEST_METRICS_URL"] = f"http://127.0.0.1:{metrics_port}/metrics"
    yield server
    server.stop()
    for standin in (github, google, slack):
        standin.stop()


GatewayFactory = Callable[..., Server]


@pytest.fixture(scope="session")
def gateway_env(
    database: Database,
    redis_url: str,
    internal_keys: InternalKeys,
    idp: OidcProvider,
    mcp_server: Server,
) -> dict[str, str]:
    """Settings of a gateway that trusts the test identity provider."""
    return {
        "GATEHOUSE_DATABASE_URL": database.app_url,
        "GATEHOUSE_DATABASE_POOL_SIZE": "4",
        "GATEHOUSE_REDIS_URL": redis_url,
        "GATEHOUSE_MCP_SERVER_URL": mcp_server.url + "/mcp",
        "GATEHOUSE_INTERNAL_KEY_FILE": str(internal_keys.private),
        "GATEHOUSE_ISSUER": idp.issuer,
        "GATEHOUSE_JWKS_URL": idp.jwks_url,
        "GATEHOUSE_AUDIENCE": idp.audience,
        "GATEHOUSE_USER_RATE_LIMIT": "100000/minute",
        "GATEHOUSE_JWKS_REFRESH_COOLDOWN_SECONDS": "30",
    }


@pytest.fixture(scope="session")
def start_gateway(gateway_env: dict[str, str], work_dir: Path) -> Iterator[GatewayFactory]:
    """Start extra gateways with settings overridden; all are stopped at the end."""
    started: list[Server] = []

    def start(**overrides: str) -> Server:
        env = {**gateway_env, **{f"GATEHOUSE_{k.upper()}": v for k, v in overrides.items()}}
        server = start_uvicorn("gateway.app:create_app", env, work_dir, "gateway")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def gateway(start_gateway: GatewayFactory) -> Server:
    return start_gateway()


@pytest.fixture(scope="session")
def alice_token(idp: OidcProvider) -> str:
    return idp.access_token("acme", "alice", ["member"])


ConnectStackFactory = Callable[..., ConnectStack]


@pytest.fixture(scope="module")
def start_connect_stack(
    database: Database, redis_url: str, internal_keys: InternalKeys,
    gateway_env: dict[str, str], work_dir: Path,
) -> Iterator[ConnectStackFactory]:
    """Start connect-flow stacks (``tests.support.browser.connect_stack``, its keyword options
    passed on); all are stopped when the module's tests are done."""
    with ExitStack() as started:
        yield lambda **options: started.enter_context(connect_stack(
            database, redis_url, internal_keys.public, gateway_env, work_dir, **options))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium driven by Playwright (test_connect_security's own ``browser``,
    an HTTP stand-in, overrides this one there)."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()
