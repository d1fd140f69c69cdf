"""The official MCP conformance suite (npm @modelcontextprotocol/conformance, pinned with the
Node.js 22 it needs in tests/conformance/) against a real gateway.

The suite sends no Authorization header, so it talks to a loopback shim that adds alice's
token and forwards everything else verbatim (Origin and Host included). The gateway allows the
shim's origin, as it would a proxy in front of it; the suite's "valid" request therefore comes
from an allowed origin, and its rebinding request (Host and Origin evil.example.com) must not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import GatewayFactory
from tests.support.auth_shim import AuthShim
from tests.support.processes import free_port

CONFORMANCE_DIR = Path(__file__).resolve().parent / "conformance"
NODE = CONFORMANCE_DIR / "node_modules" / ".bin" / "node"
SUITE = CONFORMANCE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist"


def ensure_installed() -> None:
    """Install the pinned packages once (like tests/idp); later runs reuse node_modules."""
    if NODE.exists() and (SUITE / "index.js").exists():
        return
    npm = shutil.which("npm")
    assert npm is not None, "npm not found; it installs tests/conformance"
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=CONFORMANCE_DIR, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, f"npm ci failed in {CONFORMANCE_DIR}:\n{done.stderr}"


def run_scenario(url: str, scenario: str, output: Path) -> tuple[int, str, list[dict[str, Any]]]:
    """Exit code, console output, and the checks the suite wrote to ``output``."""
    done = subprocess.run(
        [str(NODE), str(SUITE / "index.js"), "server", "--url", url, "--scenario", scenario,
         "--output-dir", str(output)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    checks = [check for path in output.rglob("checks.json")
              for check in json.loads(path.read_text())]
    return done.returncode, done.stdout + done.stderr, checks


def test_dns_rebinding_protection_scenario_passes(
    start_gateway: GatewayFactory, alice_token: str, tmp_path: Path
) -> None:
    ensure_installed()
    shim_port = free_port()
    gateway = start_gateway(allowed_origins=json.dumps([f"http://127.0.0.1:{shim_port}"]))
    with AuthShim(gateway.url, alice_token, shim_port) as shim:
        code, output, checks = run_scenario(
            shim.url + "/mcp", "dns-rebinding-protection", tmp_path
        )
    assert {c["id"]: c["status"] for c in checks} == {
        "localhost-host-rebinding-rejected": "SUCCESS",
        "localhost-host-valid-accepted": "SUCCESS",
    }, output
    rejected = next(c for c in checks if c["id"] == "localhost-host-rebinding-rejected")
    assert rejected["details"]["statusCode"] == 403
    assert code == 0, output
