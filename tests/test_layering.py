"""Dependencies point one way (README "Architecture"):

    gateway | mcp_server  →  oauth  →  prompts | sql | resilience  →  telemetry

Checked on the source: every ``import`` of one of our packages in a module of another must go
down this graph (a module may import its own package freely)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BELOW = {
    "telemetry": set(),
    "sql": {"telemetry"},
    "resilience": {"telemetry"},
    "prompts": {"telemetry"},
    "oauth": {"sql", "resilience", "prompts", "telemetry"},
    "mcp_server": {"oauth", "sql", "resilience", "prompts", "telemetry"},
    "gateway": {"oauth", "sql", "resilience", "prompts", "telemetry"},
}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(BELOW)


@pytest.mark.parametrize("package", sorted(BELOW))
def test_imports_point_down_the_graph(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in imported_packages(path) - BELOW[package] - {package}
    }
    assert not wrong, sorted(wrong)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from gateway.errors import GatewayError\nimport oauth.vault\n")
    assert imported_packages(module) == {"gateway", "oauth"}
