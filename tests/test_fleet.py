"""`gatehouse up --replicas 2`: two gateways and two mcp_servers behind a real HAProxy, over
embedded PostgreSQL and Redis (issue 15 items 1 and 2).

A replica sent SIGTERM leaves the balancer's rotation before it stops accepting (its probe
answers 503 first), finishes what is in flight (a streamed tool call included), flushes its
queued audit entries and exits; `up` restarts it like any child that exits. Ctrl-C to `up`
under load with streams open stops every process within 5 s.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import embedded
from tests.support.fleet import (
    Fleet,
    Load,
    alive,
    clean_env,
    echo_request,
    echoed,
    mcp_headers,
    open_count_stream,
    read_count_stream,
    running_fleet,
    steady_load,
)

pytestmark = pytest.mark.timeout(240)

# Audit entries stay queued until a replica's shutdown flushes them (the test is shorter).
QUEUED_AUDIT = {"GATEHOUSE_AUDIT_FLUSH_SECONDS": "600"}


def banner_metrics(banner: str) -> dict[str, str]:
    """The banner's metrics block: replica name -> its /metrics URL."""
    found = re.findall(r"^  (?:metrics )?\s+(\S+)\s+(http://\S+/metrics)$", banner, re.M)
    return dict(found)


def operations_counted(url: str, tool: str) -> float:
    """mcp_server's own count of ``tool`` calls it served (its /metrics listener)."""
    text = httpx.get(url, timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "mcp_server_operation_duration_seconds_count"
               and sample.labels.get("gen_ai_tool_name") == tool)


def tool_calls_served(port: int) -> float:
    """The replica's own count of forwarded tools/call messages (its /metrics, not the LB's)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "gatehouse_mcp_requests_total"
               and sample.labels.get("method") == "tools/call")


async def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {seconds}s"
        await asyncio.sleep(0.05)


async def audited_tool_calls(admin_dsn: str, org: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE org_id = $1 AND event = 'tool.call'", org)
        return count
    finally:
        await conn.close()


def refuses_connections(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        pass
    return False


async def test_up_replicas_balances_both_tiers_behind_haproxy() -> None:
    with running_fleet(2) as fleet:
        banner = fleet.log()
        ports = fleet.ports()
        assert sorted(ports) == ["gateway-1", "gateway-2", "mcp_server-1", "mcp_server-2"]
        for name, port in ports.items():
            assert f"{name} :{port}" in banner
            assert alive(fleet.pid(name))
        assert alive(fleet.pid("haproxy"))
        assert f"gateway     {fleet.url}" in banner and "behind HAProxy" in banner
        assert {row["status"] for row in fleet.stats().values()} == {"UP"}

        token = fleet.token("fleet-a", "alice")
        before = {name: int(row["stot"]) for name, row in fleet.stats().items()}
        calls = 60
        async with httpx.AsyncClient(base_url=fleet.url, timeout=15,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            async def call(i: int) -> None:
                answer = await http.post("/mcp", json=echo_request(f"hi {i}", i),
                                         headers=mcp_headers(token, "echo"))
                assert answer.status_code == 200 and echoed(answer) == f"hi {i}", answer.text
                assert (await http.get("/v1/sessions")).status_code == 200

            for batch in range(0, calls, 6):
                await asyncio.gather(*(call(i) for i in range(batch, batch + 6)))

        # Each gateway replica forwarded some of the calls, by its own count.
        served = {name: tool_calls_served(ports[name]) for name in ("gateway-1", "gateway-2")}
        assert sum(served.values()) == calls and min(served.values()) >= calls / 4, served
        # Each mcp_server took a share through HAProxy's internal frontend (beyond the
        # gateways' readiness checks, about 2 a second each).
        after = {name: int(row["stot"]) for name, row in fleet.stats().items()}
        taken = {n: after[n] - before[n] for n in ("mcp_server-1", "mcp_server-2")}
        assert min(taken.values()) >= calls / 4, taken

        # The banner names every replica's /metrics: each gateway's on its own port, each
        # mcp_server's on a listener of its own; by those, the mcp_servers served every call.
        urls = banner_metrics(banner)
        assert sorted(urls) == sorted(ports), banner
        for name in ("gateway-1", "gateway-2"):
            assert urls[name] == f"http://127.0.0.1:{ports[name]}/metrics"
        mcp_urls = [urls["mcp_server-1"], urls["mcp_server-2"]]
        assert len(set(mcp_urls)) == 2, mcp_urls
        served_by = [operations_counted(url, "echo") for url in mcp_urls]
        assert sum(served_by) == calls and min(served_by) > 0, served_by

        # Every replica's lines say which replica wrote them; none reaches the log bare.
        log = fleet.log()
        for name, port in ports.items():
            assert f"{name} | " in log and re.search(
                rf"^{name} \| .*Uvicorn running on http://127\.0\.0\.1:{port} ", log, re.M), name
        bare = [ln for ln in log.splitlines() if re.search(r"(gateway|mcp_server)\.access", ln)
                and not re.match(r"(gateway|mcp_server)-\d \| ", ln)]
        assert bare == [], bare[:3]
        access = re.findall(r"^(gateway|mcp_server)-\d \| .* (gateway|mcp_server)\.access ",
                            log, re.M)
        assert access and all(who == what for who, what in access), access[:3]


async def test_sigterm_drains_a_gateway_replica_under_load_without_a_failure() -> None:
    """Readiness 503 first, HAProxy takes it out, the in-flight stream finishes during the
    drain, queued audit entries are written at its exit, and `up` starts it again."""
    with running_fleet(2, QUEUED_AUDIT) as fleet:
        token = fleet.token("fleet-b", "bob")
        ports = fleet.ports()
        mcp_pids = [fleet.pid("mcp_server-1"), fleet.pid("mcp_server-2")]
        old = fleet.pid("gateway-1")
        load, stop = Load(), asyncio.Event()
        loader = asyncio.create_task(steady_load(fleet.url, token, stop, load))
        try:
            await wait_for(lambda: load.ok >= 20, 30, "under load")
            # Hold the tool calls at mcp_server, so a stream is in flight on gateway-1 while
            # it drains (released once it no longer accepts connections).
            for pid in mcp_pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                stream = await open_count_stream(ports["gateway-1"], token)
                os.kill(old, signal.SIGTERM)
                await wait_for(lambda: fleet.stats()["gateway-1"]["status"] != "UP", 5,
                               "taken out of rotation by HAProxy")
                # Out because its probe answered 503 (L7STS), not because it refused (L4CON).
                assert fleet.stats()["gateway-1"]["check_status"] == "L7STS"
                assert alive(old)
                await wait_for(lambda: refuses_connections(ports["gateway-1"]), 5,
                               "closed to new connections")
            finally:
                for pid in mcp_pids:
                    os.kill(pid, signal.SIGCONT)
            status, events = await asyncio.wait_for(read_count_stream(*stream), 10)
            assert status == 200
            assert [e.get("method") for e in events] == ["notifications/progress"] * 3 + [None]
            await wait_for(lambda: not alive(old), 10, "exited")
            # Only the drained replica has written its queue (the others flush every 600 s).
            assert await audited_tool_calls(fleet.admin_dsn(), "fleet-b") > 0
            await wait_for(lambda: fleet.pid("gateway-1") != old, 15, "restarted")
            await wait_for(lambda: fleet.stats()["gateway-1"]["status"] == "UP", 60,
                           "back in rotation")
            served_before = tool_calls_served(ports["gateway-1"])
            await wait_for(lambda: tool_calls_served(ports["gateway-1"]) > served_before
                           or loader.done(), 30, "serving again")
        finally:
            stop.set()
            await asyncio.wait_for(loader, 30)
        assert load.failures == [], load.failures[:5]
        assert f"gateway-1 (pid {old})" in fleet.log() and "restarting it" in fleet.log()
        fleet.up.send_signal(signal.SIGINT)
        assert fleet.up.wait(30) == 0
        # Every call made is in the audit log: none lost at the replica's drain or the stop.
        assert await _count_with_cluster(fleet, "fleet-b") == load.tool_calls + 1


async def _count_with_cluster(fleet: Fleet, org: str) -> int:
    """Count rows with the fleet stopped: the test starts the embedded cluster for it."""
    postgres = embedded.start_postgres(fleet.data_dir)
    try:
        return await audited_tool_calls(postgres.admin_url, org)
    finally:
        postgres.stop()


async def test_ctrl_c_under_load_with_streams_open_stops_everything_within_5s() -> None:
    with running_fleet(2) as fleet:
        token = fleet.token("fleet-c", "carol")
        ports = fleet.ports()
        processes = fleet.processes()
        assert {"haproxy", "redis", "postgres", "gateway-1", "gateway-2"} <= set(processes)
        mcp_pids = [fleet.pid("mcp_server-1"), fleet.pid("mcp_server-2")]
        load, stop = Load(), asyncio.Event()
        loader = asyncio.create_task(steady_load(fleet.url, token, stop, load))
        await wait_for(lambda: load.ok >= 20, 30, "under load")
        for pid in mcp_pids:  # streams in flight on both gateways when Ctrl-C comes
            os.kill(pid, signal.SIGSTOP)
        try:
            streams = [await open_count_stream(ports[f"gateway-{1 + i % 2}"], token)
                       for i in range(4)]
            started = time.monotonic()
            fleet.up.send_signal(signal.SIGINT)
            await wait_for(lambda: refuses_connections(ports["gateway-1"]), 5, "draining")
        finally:
            for pid in mcp_pids:
                os.kill(pid, signal.SIGCONT)
        await asyncio.wait_for(asyncio.to_thread(fleet.up.wait, 30), 31)
        stopped_in = time.monotonic() - started
        assert fleet.up.returncode == 0
        stop_log = fleet.log()[fleet.log().rindex("gatehouse stopping"):]
        assert stopped_in < 5, f"stopped in {stopped_in:.1f}s:\n{stop_log}"
        left = {name: pid for name, pid in processes.items() if alive(pid)}
        assert left == {}, left
        for stream in streams:  # the in-flight streams finished during the drain
            status, events = await asyncio.wait_for(read_count_stream(*stream), 5)
            assert status == 200 and events[-1]["result"], events
        stop.set()
        await asyncio.wait_for(loader, 20)  # no request hangs once the fleet is gone
        print(f"\nstopped in {stopped_in:.2f}s; load: {load.ok} ok, {len(load.failures)} "
              f"failed at the stop, slowest {load.slowest:.2f}s")


def test_without_haproxy_up_replicas_says_how_to_install_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--data-dir", str(tmp_path / "data"), "up",
         "--replicas", "2"],
        cwd=tmp_path, env={**clean_env(), "PATH": str(empty)}, capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 2, done.stderr
    assert "apt-get install haproxy" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "data").exists()  # nothing started, nothing created
