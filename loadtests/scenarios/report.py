"""The runner's tables: per scenario, per process, the curve, and the soak's memory and
descriptors. CPU % is of one core (200 % is both cores of this machine); CPU per request
divides a process's CPU time by every request Locust made in the run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from loadtests.scenarios import SCENARIOS

MB = 1024 * 1024
SOAK_BASELINE_MINUTE = 5


@dataclass
class Sample:
    """One soak reading of a process: resident memory (bytes) and open descriptors."""

    minute: int
    rss: int
    fds: int


@dataclass
class RunResult:
    users: int
    summary: dict[str, Any]  # loadtests.scenarios.stats' scenarios.json
    wall: float  # seconds between Locust's start and stop
    cpu: dict[str, tuple[str, float]]  # label -> (kind, CPU seconds in the run)
    soak: dict[str, list[Sample]] = field(default_factory=dict)

    @property
    def all(self) -> dict[str, Any]:
        figures: dict[str, Any] = self.summary["scenarios"].get("all", {})
        return figures

    @property
    def failures(self) -> int:
        """Failed requests and exceptions raised in tasks."""
        errors = sum(self.summary.get("user_errors", {}).values())
        return int(self.all.get("failures", 0)) + int(errors)

    def cpu_percent(self, label: str) -> float:
        return self.cpu[label][1] / self.wall * 100 if self.wall > 0 else 0.0

    def grouped_percent(self, predicate: str) -> float:
        """CPU % of every process whose label (replica suffix dropped) or kind is ``predicate``."""
        return sum(self.cpu_percent(label) for label, (kind, _) in self.cpu.items()
                   if predicate in (kind, re.sub(r"-\d+$", "", label)))


def scenario_table(result: RunResult) -> str:
    lines = [f"{'scenario':<12}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
             f"{'p99 ms':>9}{'failures':>10}"]
    scenarios = result.summary["scenarios"]
    for name in [*SCENARIOS, "all"]:
        if name not in scenarios:
            continue
        s = scenarios[name]
        lines.append(f"{name:<12}{s['requests']:>10}{s['rps']:>9.1f}{s['p50']:>9.0f}"
                     f"{s['p95']:>9.0f}{s['p99']:>9.0f}{s['failures']:>10}")
    for name in SCENARIOS:
        for sample in scenarios.get(name, {}).get("failure_samples", []):
            lines.append(f"  failure in {name}: {sample}")
    for message, count in result.summary.get("user_errors", {}).items():
        lines.append(f"  {count} exception(s) in a task: {message}")
    return "\n".join(lines)


def process_table(result: RunResult) -> str:
    requests = max(1, int(result.all.get("requests", 0)))
    lines = [f"{'process':<20}{'kind':<12}{'CPU %':>8}{'CPU ms/request':>16}"]
    for label, (kind, seconds) in sorted(result.cpu.items(), key=lambda i: (i[1][0], i[0])):
        lines.append(f"{label:<20}{kind:<12}{result.cpu_percent(label):>8.1f}"
                     f"{seconds * 1000 / requests:>16.3f}")
    return "\n".join(lines)


def curve_table(results: list[RunResult]) -> str:
    lines = [f"{'users':>6}{'req/s':>9}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'failures':>10}"
             f"{'gateway %':>11}{'mcp_srv %':>11}{'deps %':>8}{'locust %':>10}"]
    for r in results:
        a = r.all
        lines.append(f"{r.users:>6}{a.get('rps', 0):>9.1f}{a.get('p50', 0):>8.0f}"
                     f"{a.get('p95', 0):>8.0f}{a.get('p99', 0):>8.0f}{r.failures:>10}"
                     f"{r.grouped_percent('gateway'):>11.1f}"
                     f"{r.grouped_percent('mcp_server'):>11.1f}"
                     f"{r.grouped_percent('dependency'):>8.1f}{r.grouped_percent('locust'):>10.1f}")
    return "\n".join(lines)


def soak_line(minute: int, samples: dict[str, Sample]) -> str:
    parts = [f"{label} {s.rss / MB:.1f} MB {s.fds} fds" for label, s in sorted(samples.items())]
    return f"soak minute {minute:>3}: " + " | ".join(parts)


def soak_summary(soak: dict[str, list[Sample]]) -> str:
    """Growth from the first reading at or after minute 5 (the first reading when the soak is
    shorter) to the last."""
    lines = [f"{'process':<16}{'from min':>9}{'RSS MB':>9}{'->':>4}{'RSS MB':>9}{'growth %':>10}"
             f"{'fds':>6}{'->':>4}{'fds':>6}{'growth':>8}"]
    for label, samples in sorted(soak.items()):
        if not samples:
            continue
        base = next((s for s in samples if s.minute >= SOAK_BASELINE_MINUTE), samples[0])
        last = samples[-1]
        growth = (last.rss - base.rss) / base.rss * 100 if base.rss else 0.0
        lines.append(f"{label:<16}{base.minute:>9}{base.rss / MB:>9.1f}{'':>4}"
                     f"{last.rss / MB:>9.1f}{growth:>10.1f}{base.fds:>6}{'':>4}{last.fds:>6}"
                     f"{last.fds - base.fds:>8}")
    return "\n".join(lines)
