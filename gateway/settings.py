"""Gateway configuration: environment variables prefixed ``GATEHOUSE_``, or a ``.env`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_", env_file=".env", extra="ignore", frozen=True
    )

    public_url: str = "http://127.0.0.1:8000"
    # Browser origins allowed on /mcp besides PUBLIC_URL's own (a JSON list of scheme://host[:port]).
    allowed_origins: list[str] = []
    database_url: str = Field(description="DSN of the gatehouse_app login role")
    database_pool_size: int = Field(default=10, ge=1, le=200)  # most connections per replica
    redis_url: str
    mcp_server_url: str = "http://127.0.0.1:8001/mcp"
    internal_key_file: Path = Field(description="Ed25519 private key (PEM) for assertions")

    issuer: str
    jwks_url: str
    audience: str = ""
    algorithms: list[str] = ["RS256", "PS256", "ES256", "EdDSA"]
    accepted_token_types: list[str] = ["at+jwt", "application/at+jwt"]
    clock_skew_seconds: int = Field(default=60, ge=0, le=300)
    max_token_bytes: int = Field(default=8192, ge=512, le=65536)
    jwks_cache_ttl_seconds: float = Field(default=300, gt=0)
    jwks_refresh_cooldown_seconds: float = Field(default=30, ge=0)
    jwks_fetch_timeout_seconds: float = Field(default=2, gt=0, le=30)

    org_claim: str = "org_id"
    user_claim: str = "sub"
    roles_claim: str = "roles"
    platform_admin_claim: str = "gatehouse_platform_admin"
    default_roles: list[str] = ["member"]
    provisioning_cache_seconds: float = Field(default=30, ge=0)

    session_default_ttl_seconds: int = Field(default=86_400, ge=60)
    session_max_ttl_seconds: int = Field(default=30 * 86_400, ge=60)
    session_max_active_per_user: int = Field(default=50, ge=1)
    session_max_active_per_org: int = Field(default=10_000, ge=1)
    session_activity_flush_seconds: float = Field(default=5, gt=0)
    # A retried create with the same Idempotency-Key replays its first answer this long.
    idempotency_key_ttl_seconds: int = Field(default=86_400, ge=86_400)
    audit_flush_seconds: float = Field(default=1, gt=0)
    audit_auth_failure_limit: str = Field(default="60/minute", description="per source")
    audit_auth_failure_ceiling: str = Field(default="6000/minute", description="all sources")
    audit_queue_max: int = Field(default=100_000, ge=100)

    user_rate_limit: str = "600/minute"
    rate_limit_fail_open: bool = True
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Past either bound a request is answered 431 (uvicorn's httptools parser has no limit).
    max_header_bytes: int = Field(default=65_536, ge=16_384)
    max_header_count: int = Field(default=200, ge=32)
    upstream_timeout_seconds: float = Field(default=60, gt=0)
    # SIGTERM: seconds the readiness probe answers 503 before the server stops accepting, so a
    # balancer takes the replica out first (resilience/draining.py); 0: stop at once
    shutdown_grace_seconds: float = Field(default=0.0, ge=0, le=60)
    assertion_lifetime_seconds: int = Field(default=30, ge=1, le=60)
    connect_session_ttl_seconds: int = Field(default=1800, ge=60, le=86_400)

    # Signing people in to /connect through ISSUER (authorization code + PKCE); off when empty.
    signin_client_id: str = ""
    signin_client_secret: SecretStr | None = Field(
        default=None, description="absent: a public client (PKCE only)"
    )
    signin_scopes: str = "openid"
    signin_resource: str = Field(
        default="", description="RFC 8707 resource to request (e.g. AUDIENCE), so the access "
        "token can carry the organisation claim when the ID token does not"
    )
    signin_state_ttl_seconds: int = Field(default=600, ge=30, le=3600)

    # json: one object a line (time, level, logger, message, request context); console: text.
    # gatehouse up defaults to console. LOG_LEVEL DEBUG opens only Gatehouse's own loggers.
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    dev_issuer_key_file: Path | None = Field(
        default=None, description="development mode only: serve this key's JWKS at /dev/jwks.json"
    )

    @model_validator(mode="after")
    def _default_audience(self) -> GatewaySettings:
        if not self.audience:
            object.__setattr__(self, "audience", self.resource_url)
        return self

    @property
    def resource_url(self) -> str:
        """The protected resource's identifier (RFC 9728): the public MCP endpoint."""
        return self.public_url.rstrip("/") + "/mcp"
