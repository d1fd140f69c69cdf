"""mcp_server configuration: environment variables prefixed ``GATEHOUSE_``, or ``.env``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class McpServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_", env_file=".env", extra="ignore", frozen=True
    )

    internal_public_key_file: Path = Field(
        description="Ed25519 public key (PEM) that verifies the gateway's internal assertions"
    )
