"""mcp_server configuration: environment variables prefixed ``GATEHOUSE_``, or ``.env``.

Only ``INTERNAL_PUBLIC_KEY_FILE`` is required. Without ``DATABASE_URL``, ``REDIS_URL`` and
``TOKEN_KEYS`` the server still starts, offering only the tools that need no provider.
``PROVIDERS`` is described in :mod:`mcp_server.providers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProviderConfig(BaseModel):
    """One enabled provider (a value of ``GATEHOUSE_PROVIDERS``); ``repr`` hides the secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    discovery_url: str | None = None  # an OpenID provider not in the catalogue
    display_name: str | None = None
    scopes: tuple[str, ...] | None = None  # None: the catalogue's default scopes
    token_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] | None = None
    api_base_url: str | None = None
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    issuer: str | None = None


class McpServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_", env_file=".env", extra="ignore", frozen=True
    )

    internal_public_key_file: Path = Field(
        description="Ed25519 public key (PEM) that verifies the gateway's internal assertions"
    )
    database_url: str | None = Field(default=None, repr=False)  # gatehouse_app role
    database_pool_size: int = Field(default=10, ge=1, le=200)  # most connections per replica
    redis_url: str | None = Field(default=None, repr=False)
    token_keys: SecretStr | None = None  # keyring "kid:base64,..." (oauth/keyring.py)
    public_url: str = "http://127.0.0.1:8000"  # the gateway's URL, for connect links
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    discovery_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    provider_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # SIGTERM: seconds the readiness probe answers 503 before the server stops accepting, so a
    # balancer takes the replica out first (resilience/draining.py); 0: stop at once
    shutdown_grace_seconds: float = Field(default=0.0, ge=0, le=60)
    provider_max_response_bytes: int = Field(default=1_048_576, ge=1024, le=16_777_216)
    provider_rate_limit: str = "6000/minute"  # per provider, all organisations together
    org_provider_rate_limit: str = "1200/minute"  # per (organisation, provider)
    user_tool_rate_limit: str = "120/minute"  # per (user, tool)
    tool_rate_limits: dict[str, str] = Field(default_factory=dict)  # per-tool user limits
    rate_limit_fail_open: bool = True
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_window_seconds: float = Field(default=30.0, gt=0)
    breaker_reset_seconds: float = Field(default=30.0, gt=0)
    resilience_namespace: str = Field(default="gatehouse", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    token_cache_seconds: float = Field(default=5.0, ge=0, le=60)  # 0: no cache (token_cache.py)
    connect_link_ttl_seconds: int = Field(default=600, ge=30, le=3600)
    connect_state_ttl_seconds: int = Field(default=600, ge=1, le=3600)  # one authorization
    # json: one object a line (time, level, logger, message, request context); console: text.
    # gatehouse up defaults to console. LOG_LEVEL DEBUG opens only Gatehouse's own loggers.
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # /metrics on a listener of its own (no assertion); port 0: not served
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Tool arguments and results as span attributes (opt-in: they may hold personal data)
    trace_capture_arguments: bool = False
