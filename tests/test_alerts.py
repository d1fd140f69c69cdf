"""The alert rules (docker/prometheus/alerts.yml) pass promtool's checks and unit tests, and
those tests can fail: for every alert, a rule that fires on everything breaks a case that
expects silence, and a rule that never fires breaks a case that expects the alert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

RULES_DIR = Path(__file__).resolve().parent.parent / "docker" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
TESTS = RULES_DIR / "alerts_test.yml"
# Per alert, (threshold as written, a threshold every series passes).
ALWAYS = {
    "GatehouseGateway5xxRatio": [("> 0.05", "> -1")],
    "GatehouseLatencyP95OverObjective": [(") > 1", ") > -1")],
    "GatehouseProviderBreakerOpen": [("> 0", ">= 0")],
    "GatehouseTokenRefreshFailing": [("> 0.2", ">= 0")],
    "GatehouseAuthFailureSpike": [("> 1\n", "> -1\n"), ("> 5 *", "> -1 *")],
    "GatehouseAuditEntriesDropped": [("> 0", ">= 0")],
    "GatehouseAuditBacklog": [("> 10000", "> -1")],
    "GatehouseDependencyNotReady": [("== 0", ">= 0")],
}


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def alert_names() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.MULTILINE)


def mutated(tmp_path: Path, alert: str, change: str) -> Path:
    """A copy of the rules and their tests in which ``alert``'s expression always fires
    (``change="always"``) or never does (``"never"``)."""
    text = RULES.read_text()
    start = text.index(f"- alert: {alert}\n")
    end = text.find("- alert:", start + 1)
    rule = text[start:end if end != -1 else len(text)]
    changed = rule
    if change == "always":
        for before, after in ALWAYS[alert]:
            assert before in changed, (alert, before)
            changed = changed.replace(before, after, 1)
    else:
        changed = re.sub(r"expr: (\|\n(?:\s{10}.*\n)+|.*\n)", _never, changed, count=1)
    assert changed != rule
    (tmp_path / "alerts.yml").write_text(text.replace(rule, changed))
    shutil.copy(TESTS, tmp_path / "alerts_test.yml")
    return tmp_path


def _never(match: re.Match[str]) -> str:
    expression = match.group(1).removeprefix("|\n").strip().replace("\n", " ")
    return f"expr: ({expression}) and on() (vector(0) > 1)\n"


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert set(alert_names()) == set(ALWAYS)


def test_every_alert_the_issue_asks_for_exists() -> None:
    names = alert_names()
    for wanted in ("5xx", "P95", "Breaker", "Refresh", "AuthFailure", "AuditEntriesDropped",
                   "AuditBacklog", "DependencyNotReady"):
        assert any(wanted in name for name in names), wanted


@pytest.mark.parametrize("alert", sorted(ALWAYS))
def test_each_alert_has_a_non_firing_case(alert: str, tmp_path: Path) -> None:
    result = promtool("test", "rules", "alerts_test.yml",
                      cwd=mutated(tmp_path, alert, "always"))
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr


@pytest.mark.parametrize("alert", sorted(ALWAYS))
def test_each_alert_has_a_firing_case(alert: str, tmp_path: Path) -> None:
    result = promtool("test", "rules", "alerts_test.yml", cwd=mutated(tmp_path, alert, "never"))
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr
