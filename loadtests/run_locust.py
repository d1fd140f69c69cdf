"""Locust at scale: start the stack, run the scenarios headless, report per scenario and process.

    python -m loadtests.run_locust --users 100 [--spawn-rate 20] [--minutes 1]
        [--tags mixed ...] [--replicas 2]
    python -m loadtests.run_locust --curve 50,100,200 --minutes 0.5 --tags mixed
    python -m loadtests.run_locust --soak --users 100 --minutes 30 --tags mixed

Starts ``gatehouse up`` with a data directory of its own, the loopback provider and the GitHub
stand-in (:mod:`loadtests.scenarios.fleet`) and the grant service
(:mod:`loadtests.scenarios.grants`); runs Locust headless with its own ``--run-time`` for each
user count in turn (``--curve``), keeping its CSV files, HTML report and log under
``loadtests/results/<timestamp>/users-<N>/``; prints requests/s, p50/p95/p99 and failures per
scenario, then the CPU of Locust and of each process of the stack, and CPU per request. With
``--soak`` it also prints each Gatehouse process's RSS and open descriptors every minute and
their growth at the end. Everything stops by itself; all traffic stays on loopback.

Exits 1 when any request failed unexpectedly (a refused bad token is expected, not a failure).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil

from loadtests.scenarios import SCENARIOS, STARTED, SUMMARY, report
from loadtests.scenarios.fleet import REPO, Stack, Watched, running_stack
from loadtests.scenarios.grants import GrantConfig, GrantService

RESULTS = REPO / "loadtests" / "results"
USER_CLASSES = {"auth": "AuthUser", "connect": "ConnectUser", "tools": "ToolUser",
                "list_tools": "ListToolsUser", "disconnect": "DisconnectUser",
                "mixed": "MixedUser"}
START_DEADLINE = 60  # seconds for Locust to start spawning
STOP_GRACE = 10  # Locust's --stop-timeout: users finish the task they are in
REPORT_DEADLINE = 120  # seconds past the run time for Locust to stop and write its reports


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.run_locust",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, help="simulated users (or use --curve)")
    parser.add_argument("--curve", help="comma-separated user counts, run in turn")
    parser.add_argument("--spawn-rate", type=float, help="users started per second "
                        "(default: all within 5 s)")
    parser.add_argument("--minutes", type=float, default=1.0, help="per user count")
    parser.add_argument("--tags", nargs="*", default=[], choices=SCENARIOS, metavar="SCENARIO",
                        help=f"some of {', '.join(SCENARIOS)} (default: all six)")
    parser.add_argument("--think-scale", type=float, default=1.0,
                        help="multiplies the 1-3 s think time between a user's tasks")
    parser.add_argument("--replicas", type=int, default=1, help="passed to `gatehouse up`")
    parser.add_argument("--soak", action="store_true",
                        help="print RSS and descriptors every minute and their growth")
    parser.add_argument("--output", type=Path, help="default loadtests/results/<timestamp>")
    args = parser.parse_args(argv)
    if (args.users is None) == (args.curve is None):
        parser.error("give --users or --curve")
    args.counts = [args.users] if args.curve is None else [
        int(n) for n in args.curve.split(",") if n.strip()]
    if min(args.counts) < 1 or args.minutes <= 0:
        parser.error("user counts and --minutes must be positive")
    return args


def _locust_command(stack: Stack, users: int, rate: float, seconds: int, tags: list[str],
                    out: Path) -> list[str]:
    # Locust would still start users of classes none of whose tasks carry a chosen tag.
    classes = [USER_CLASSES[t] for t in tags]
    command = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"),
               *classes, "--headless", "--users", str(users), "--spawn-rate", f"{rate:g}",
               "--run-time", f"{seconds}s", "--stop-timeout", str(STOP_GRACE),
               "--host", stack.gateway_url, "--csv", str(out / "locust"),
               "--html", str(out / "report.html"), "--only-summary",
               "--exit-code-on-error", "0"]
    return command + (["--tags", *tags] if tags else [])


def _locust_environment(stack: Stack, grants_url: str, out: Path,
                        think_scale: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "LOCUST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | {"LOADTEST_DATA_DIR": str(stack.data_dir),
                  "LOADTEST_MCP_SERVER_URL": stack.mcp_server_url,
                  "LOADTEST_GRANTS_URL": grants_url, "LOADTEST_STATS_DIR": str(out),
                  "LOADTEST_THINK_SCALE": f"{think_scale:g}"}


class Soak:
    """RSS and descriptors of each Gatehouse process, read once a minute."""

    def __init__(self, watched: list[Watched]) -> None:
        self.watched = [w for w in watched if w.kind == "gatehouse"]
        self.samples: dict[str, list[report.Sample]] = {w.label: [] for w in self.watched}
        self.started = time.monotonic()
        self.minute = 0

    def tick(self, final: bool = False) -> None:
        """Read every minute; ``final``: once more as the run stops, so the last reading is at
        the end of the soak (numbered as the minute it falls in)."""
        elapsed = time.monotonic() - self.started
        if elapsed < (self.minute + 1) * 60 and not final:
            return
        self.minute = max(self.minute + 1, math.ceil(elapsed / 60)) if final else self.minute + 1
        now: dict[str, report.Sample] = {}
        for w in self.watched:
            with contextlib.suppress(psutil.Error):
                now[w.label] = report.Sample(self.minute, w.rss(), w.fds())
                self.samples[w.label].append(now[w.label])
        print(report.soak_line(self.minute, now), flush=True)


def _wait_for(path: Path, locust: subprocess.Popen[bytes], deadline: float, log: Path,
              soak: Soak | None = None) -> None:
    """Until Locust writes ``path``; a Locust that exits first or misses the deadline raises."""
    while not path.exists():
        if locust.poll() is not None and not path.exists():
            raise RuntimeError(f"Locust exited ({locust.returncode}) before {path.name}:\n"
                               + log.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            raise RuntimeError(f"Locust did not write {path.name} in time; see {log}")
        if soak is not None:
            soak.tick()
        time.sleep(0.1)


def _cpu(watched: list[Watched]) -> dict[str, float]:
    return {w.label: w.cpu_seconds() for w in watched}


def run_once(stack: Stack, grants_url: str, users: int, args: argparse.Namespace,
             out: Path) -> report.RunResult:
    """One headless Locust run at ``users``; CPU counted from its first user to its stop."""
    out.mkdir(parents=True, exist_ok=True)
    seconds = max(1, round(args.minutes * 60))
    rate = args.spawn_rate or max(1.0, users / 5)
    log = out / "locust.log"
    with log.open("wb") as sink:
        locust = subprocess.Popen(
            _locust_command(stack, users, rate, seconds, args.tags, out), cwd=REPO,
            env=_locust_environment(stack, grants_url, out, args.think_scale),
            stdout=sink, stderr=subprocess.STDOUT)
    try:
        watched = [*stack.processes(), Watched("locust", "harness", psutil.Process(locust.pid))]
        _wait_for(out / STARTED, locust, time.monotonic() + START_DEADLINE, log)
        before, started = _cpu(watched), time.monotonic()
        soak = Soak(watched) if args.soak else None
        deadline = started + seconds + STOP_GRACE + REPORT_DEADLINE
        _wait_for(out / SUMMARY, locust, deadline, log, soak)
        after, wall = _cpu(watched), time.monotonic() - started
        if soak is not None:
            soak.tick(final=True)
        locust.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.wait(10)
    summary = json.loads((out / SUMMARY).read_text())
    cpu = {w.label: (w.kind, max(0.0, after[w.label] - before[w.label])) for w in watched}
    return report.RunResult(users, summary, wall, cpu, soak.samples if soak else {})


def _print_run(result: report.RunResult, args: argparse.Namespace, out: Path) -> None:
    tags = " ".join(args.tags) or "all scenarios"
    print(f"\n== {result.users} users, {args.minutes:g} min, {tags}: "
          f"{result.wall:.0f} s measured; Locust's CSV and HTML in {out}", flush=True)
    print(report.scenario_table(result))
    print(report.process_table(result), flush=True)
    if result.soak:
        print(report.soak_summary(result.soak), flush=True)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop everything


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    signal.signal(signal.SIGTERM, _terminate)
    output = (args.output or RESULTS / datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gatehouse-locust-"))  # short: Unix socket paths
    results: list[report.RunResult] = []
    try:
        with running_stack(work, args.replicas) as stack:
            grants = GrantService(GrantConfig(stack.database_url(), stack.token_keys,
                                              stack.loopback_token, stack.standin_url))
            try:
                grants_url = grants.start()
                for users in args.counts:
                    out = output / f"users-{users}"
                    results.append(run_once(stack, grants_url, users, args, out))
                    _print_run(results[-1], args, out)
            finally:
                grants.stop()
    finally:
        for name in ("up.log", "loopback.log", "standin.log"):
            with contextlib.suppress(OSError):
                shutil.copy(work / name, output / name)
        shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        print("\n== curve\n" + report.curve_table(results), flush=True)
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
