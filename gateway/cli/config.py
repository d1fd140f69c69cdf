"""What every ``gatehouse`` command reads from the environment and ``.env``, in one place.

``up`` and ``token`` must agree on the gateway's public URL, issuer and audience, or ``token``
mints what the running gateway refuses; both read these settings, and derive the URL alike.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".gatehouse")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_GATEWAY_PORT = 8000
DEFAULT_MCP_PORT = 8001


class UpSettings(BaseSettings):
    """What ``up`` needs to decide between embedded and configured dependencies."""

    model_config = SettingsConfigDict(env_prefix="GATEHOUSE_", env_file=".env", extra="ignore")

    database_url: str | None = None
    admin_database_url: str | None = None
    redis_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    internal_key_file: Path | None = None
    public_url: str | None = None
    token_keys: str | None = None
    # uvicorn's --timeout-graceful-shutdown for up's children: in-flight requests and open
    # streams get this long after a stop; 3 keeps up's whole stop within 5 s
    shutdown_drain_seconds: int = Field(default=3, ge=0, le=300)
    # mcp_server's /metrics listener (its own settings): unset, up picks 9464 if free, else a
    # free port; 0 turns it off. A fleet gives each replica a free port of its own.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)


def public_url(settings: UpSettings, host: str = DEFAULT_HOST,
               port: int = DEFAULT_GATEWAY_PORT) -> str:
    """GATEHOUSE_PUBLIC_URL, else where ``up`` binds the gateway; without a trailing slash."""
    if settings.public_url:
        return check_url(settings.public_url, "GATEHOUSE_PUBLIC_URL")
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def audience(settings: UpSettings, url: str) -> str:
    """The gateway's default audience is its MCP endpoint (GatewaySettings.resource_url)."""
    return settings.audience or url.rstrip("/") + "/mcp"


def check_url(value: str, what: str) -> str:
    """``value`` without its trailing slash if it is an http(s) base URL, else ValueError."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError on a port out of range or not a number)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or any(ch.isspace() for ch in value)
    ):
        raise ValueError(
            f"{what} must be an http(s) base URL such as http://127.0.0.1:8000, not {value!r}"
        )
    return value.rstrip("/")
