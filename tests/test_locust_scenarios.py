"""The Locust runner end to end: a real stack (``gatehouse up``), Locust headless, all six
scenarios at a small user count for ~25 s (issue 15 item 4)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests import run_locust
from loadtests.scenarios import SCENARIOS
from loadtests.scenarios.fleet import Stack

REPO = Path(__file__).resolve().parents[1]
USERS = 6  # Locust gives each of the six user classes one user
# With a tenth of the think time each user runs ~100 tasks, so each dedicated scenario's rarest
# task (one in ten) comes up with odds of 1 - 0.9**100.
RUN_BUDGET = 85  # seconds: stack start, 24 s of load, Locust's reports, stack stop


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    output = tmp_path_factory.mktemp("locust")
    command = [sys.executable, "-m", "loadtests.run_locust", "--users", str(USERS),
               "--minutes", "0.4", "--think-scale", "0.1", "--output", str(output)]
    runner = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        stdout, stderr = runner.communicate(timeout=RUN_BUDGET)
    except subprocess.TimeoutExpired:
        runner.terminate()  # the runner stops Locust and the stack on SIGTERM
        stdout, stderr = runner.communicate(timeout=60)
        pytest.fail(f"the runner took over {RUN_BUDGET}s:\n{stdout[-3000:]}{stderr[-3000:]}")
    finished = subprocess.CompletedProcess(command, runner.returncode, stdout, stderr)
    return finished, output / f"users-{USERS}"


def rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "locust_stats.csv").open() as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def test_every_scenario_made_requests_and_none_failed(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    finished, out = run
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    summary = json.loads((out / "scenarios.json").read_text())
    assert summary["user_errors"] == {}  # no exception raised inside a task
    figures = summary["scenarios"]
    for scenario in SCENARIOS:
        assert figures[scenario]["requests"] > 0, scenario
        assert figures[scenario]["failures"] == 0, figures[scenario]["failure_samples"]
    assert figures["all"]["failures"] == 0


def test_each_kind_of_request_ran_and_refused_tokens_count_as_success(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    by_name = rows(run[1])
    for name in ("auth: expired token (401)", "auth: forged token (401)",
                 "connect: initialize 2025-11-25", "connect: server/discover 2026-07-28",
                 "tools: github_whoami 2026-07-28", "tools: whoami 2026-07-28",
                 "list_tools: tools/list 2025-11-25", "list_tools: tools/list 2026-07-28",
                 "disconnect: close session", "disconnect: disconnect github"):
        assert name in by_name, sorted(by_name)
        assert int(by_name[name]["Request Count"]) > 0, name
        assert by_name[name]["Failure Count"] == "0", name


def test_reports_are_kept_and_the_tables_name_every_scenario_and_process(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    finished, out = run
    for name in ("locust_stats.csv", "locust_failures.csv", "locust_stats_history.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "<html" in (out / "report.html").read_text()[:2000].lower()
    printed = finished.stdout
    for scenario in (*SCENARIOS, "all"):
        assert re.search(rf"^{scenario}\s+\d+\s+[\d.]+\s+\d+\s+\d+\s+\d+\s+0$", printed, re.M), \
            f"no row for {scenario} in:\n{printed}"
    for process in ("gateway", "mcp_server", "locust"):
        assert re.search(rf"^{process}\s+\w+\s+[\d.]+\s+[\d.]+$", printed, re.M), process


def test_chosen_tags_start_only_their_user_classes(tmp_path: Path) -> None:
    """Locust starts every class it is given, tagged tasks or not; one without a task of the
    chosen tags would raise in every user it starts."""
    args = run_locust._arguments(["--users", "5", "--tags", "mixed", "auth"])
    stack = Stack(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", "t", "k", None)  # type: ignore[arg-type]
    command = run_locust._locust_command(stack, 5, 1, 30, args.tags, tmp_path)
    start = command.index("-f") + 2
    assert command[start:command.index("--headless")] == ["MixedUser", "AuthUser"]
    assert command[-3:] == ["--tags", "mixed", "auth"]
    with pytest.raises(SystemExit):
        run_locust._arguments(["--users", "5", "--tags", "nonsense"])
