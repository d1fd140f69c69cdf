"""Every setting of both processes is documented in the README's configuration section."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from mcp_server.settings import McpServerSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("settings", [GatewaySettings, McpServerSettings])
def test_every_setting_is_in_the_readme(settings: type[BaseSettings]) -> None:
    missing = [name.upper() for name in settings.model_fields
               if f"`{name.upper()}`" not in README and f"{name.upper()}`" not in README]
    assert not missing, f"not documented in README.md: {missing}"
