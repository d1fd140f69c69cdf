"""Per-scenario figures, exact where Locust's CSV is per request name only.

Every request is counted under its scenario (the part of its name before ``:``) and under
``all``, in a histogram rounded as Locust rounds (to 1 ms below 100 ms, 10 ms below 1 s, then
100 ms), so memory stays bounded through a soak. Two files in ``LOADTEST_STATS_DIR`` tell the
runner when to read the processes' CPU: ``started`` when Locust starts spawning users, and
``scenarios.json`` (the figures) when the test stops, before Locust writes its reports. An
exception raised inside a task is no request, so it is counted apart (``user_errors``).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust import events

from loadtests.scenarios import STARTED, SUMMARY

FAILURE_SAMPLES = 5


def rounded(ms: float) -> int:
    if ms < 100:
        return round(ms)
    return int(round(ms, -1) if ms < 1000 else round(ms, -2))


@dataclass
class Histogram:
    counts: Counter[int] = field(default_factory=Counter)
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)

    def add(self, ms: float, failure: str | None) -> None:
        self.counts[rounded(ms)] += 1
        if failure is not None:
            self.failures += 1
            if len(self.failure_samples) < FAILURE_SAMPLES:
                self.failure_samples.append(failure[:300])

    def percentile(self, q: float) -> float:
        total = sum(self.counts.values())
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= q * total:
                return float(value)
        return 0.0

    def summary(self, seconds: float) -> dict[str, Any]:
        requests = sum(self.counts.values())
        return {"requests": requests, "failures": self.failures,
                "rps": requests / seconds if seconds > 0 else 0.0,
                "p50": self.percentile(0.50), "p95": self.percentile(0.95),
                "p99": self.percentile(0.99), "failure_samples": self.failure_samples}


class Recorder:
    def __init__(self) -> None:
        self.histograms: dict[str, Histogram] = {}
        self.user_errors: Counter[str] = Counter()  # exceptions raised in tasks, by message
        self.started = time.monotonic()

    def add(self, name: str, ms: float, failure: str | None) -> None:
        scenario = name.split(":", 1)[0] if ":" in name else "other"
        for key in (scenario, "all"):
            self.histograms.setdefault(key, Histogram()).add(ms, failure)

    def summary(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        return {"seconds": seconds, "user_errors": dict(self.user_errors),
                "scenarios": {k: h.summary(seconds) for k, h in self.histograms.items()}}


_recorder = Recorder()


def _directory() -> Path | None:
    value = os.environ.get("LOADTEST_STATS_DIR")
    return Path(value) if value else None


def _on_request(name: str, response_time: float, exception: BaseException | None,
                **_: Any) -> None:
    _recorder.add(name, response_time, None if exception is None else str(exception))


def _on_user_error(user_instance: object, exception: BaseException, **_: Any) -> None:
    _recorder.user_errors[f"{type(user_instance).__name__}: {exception}"[:300]] += 1


def _on_start(**_: Any) -> None:
    _recorder.histograms.clear()
    _recorder.user_errors.clear()
    _recorder.started = time.monotonic()
    if (directory := _directory()) is not None:
        (directory / STARTED).write_text(str(time.time()))


def _on_stop(**_: Any) -> None:
    if (directory := _directory()) is not None:
        partial = directory / (SUMMARY + ".tmp")
        partial.write_text(json.dumps(_recorder.summary()))
        partial.replace(directory / SUMMARY)


# Locust's EventHook is untyped.
events.request.add_listener(_on_request)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_on_start)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(_on_stop)  # type: ignore[no-untyped-call]
events.user_error.add_listener(_on_user_error)  # type: ignore[no-untyped-call]
