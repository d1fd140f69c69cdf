"""The overhead benchmark (issue 14.1) runs end to end, briefly: every target and figure present
and sane, both tracing modes, and every process it started stopped when it exits."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
INVOLVED = {"bare": ("client", "bare"), "direct": ("client", "mcp_server"),
            "gateway": ("client", "gateway", "mcp_server")}


def run_benchmark(redis_url: str) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "GATEHOUSE_TEST_REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_overhead", "--seconds", "0.5", "--slice",
         "0.25", "--warmup", "10", "--tracing", "both", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_every_target_and_figure_in_both_modes_and_nothing_left_running(redis_url: str) -> None:
    report, text = run_benchmark(redis_url)

    assert [mode["tracing"] for mode in report["modes"]] == ["off", "on"]
    for mode in report["modes"]:
        assert set(mode["targets"]) == {"bare", "direct", "gateway"}
        for name, row in mode["targets"].items():
            assert row["rps_busy"] > 0 and row["calls"]["busy"] > 0 and row["calls"]["c1"] > 0
            assert 0 < row["p50_ms_c1"] <= row["p99_ms_c1"] < 1000
            for level in ("c1", "busy"):
                for process in INVOLVED[name]:
                    assert 0 < row["cpu_us_per_call"][level][process] < 100_000, (name, process)
        assert all(math.isfinite(v) for v in mode["ratios"].values())
        assert mode["ratios"]["throughput_gateway_over_bare"] > 0
        assert mode["ratios"]["gateway_cpu_us_per_call_busy"] > 0
        # Servers stopped (the client, this benchmark's own process, has exited too).
        assert not [p for name, p in mode["pids"].items() if alive(p)]

    # The human-readable report went to stderr: a row per target and every ratio, per mode.
    for line in ("tracing off:", "tracing on ", "through-gateway / bare throughput",
                 "added p50 at c=1: gateway - bare", "gateway CPU per forwarded call",
                 "our mcp_server's CPU per echo vs bare FastMCP's"):
        assert line in text
    for target in ("bare", "direct", "gateway"):
        assert len(re.findall(rf"^{target} +\d+ +\d+\.\d\d +\d+\.\d\d ", text, re.M)) == 2
