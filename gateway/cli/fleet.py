"""``gatehouse up --replicas N``: N gateways and N mcp_servers on loopback behind HAProxy.

The ports ``up`` is given become HAProxy's: ``--gateway-port`` the public frontend balancing the
gateways, ``--mcp-port`` the internal one balancing the mcp_servers, which the gateways forward
to. Replicas listen on free loopback ports. HAProxy (Debian's ``haproxy``) is one more
supervised child, its configuration generated into the data directory (:mod:`gateway.cli.haproxy`).

Start order: the mcp_servers together, HAProxy, the gateways together, then ``up`` waits until
HAProxy has every replica in rotation. Replicas get ``GATEHOUSE_SHUTDOWN_GRACE_SECONDS`` (1 s
unless set): SIGTERM to one makes its probe answer 503 long enough for HAProxy (checking every
500 ms, out at the first failure) to stop sending to it before it stops accepting. Each
mcp_server replica serves its ``/metrics`` on a free loopback port of its own
(``GATEHOUSE_METRICS_PORT``); each gateway replica on its own port. Every child's output lines
reach ``up``'s terminal prefixed with its name (``gateway-1 | ``).
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.cli import haproxy
from gateway.cli.supervisor import ChildSpec

INSTALL_HINT = ("`gatehouse up --replicas` runs its replicas behind HAProxy, which is not "
                "installed (no `haproxy` on PATH); install it with: apt-get install haproxy")
GRACE_SECONDS = "1"  # > HAProxy's detection (inter 500ms, fall 1) plus a check's own time
ROTATION_TIMEOUT = 20.0


@dataclass(frozen=True)
class Layout:
    """Which process listens where."""

    host: str
    public_port: int
    mcp_port: int
    stats_port: int
    gateways: dict[str, int]
    mcp_servers: dict[str, int]
    mcp_metrics: dict[str, int]  # each mcp_server replica's /metrics port

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}/stats"

    def mcp_server_url(self, probe_host: str) -> str:
        """Where the gateways forward MCP traffic: HAProxy's internal frontend."""
        return f"http://{probe_host}:{self.mcp_port}/mcp"


def haproxy_path() -> str | None:
    return shutil.which("haproxy")


def plan(host: str, public_port: int, mcp_port: int, replicas: int) -> Layout:
    ports = free_loopback_ports(3 * replicas + 1)
    return Layout(
        host, public_port, mcp_port, ports[0],
        {f"gateway-{i + 1}": ports[1 + i] for i in range(replicas)},
        {f"mcp_server-{i + 1}": ports[1 + replicas + i] for i in range(replicas)},
        {f"mcp_server-{i + 1}": ports[1 + 2 * replicas + i] for i in range(replicas)},
    )


def free_loopback_ports(count: int) -> list[int]:
    """Ports the kernel hands out, all held until all are chosen, so none repeats."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def replica_env(env: dict[str, str], metrics_port: int | None = None) -> dict[str, str]:
    """``env`` for a replica; an mcp_server's carries its own metrics port."""
    own = {} if metrics_port is None else {"GATEHOUSE_METRICS_PORT": str(metrics_port)}
    return {"GATEHOUSE_SHUTDOWN_GRACE_SECONDS": GRACE_SECONDS} | env | own


def haproxy_spec(layout: Layout, data_dir: Path, executable: str) -> ChildSpec:
    config = data_dir / "haproxy.cfg"
    config.write_text(haproxy.config(layout.host, layout.public_port, layout.mcp_port,
                                     layout.stats_port, layout.gateways, layout.mcp_servers))
    # -db: foreground, its warnings (a server DOWN or UP) on up's terminal
    return ChildSpec("haproxy", [executable, "-db", "-f", str(config)], {}, layout.stats_url,
                     prefixed=True)


def in_rotation(layout: Layout, timeout: float = ROTATION_TIMEOUT,
                stopping: Callable[[], bool] = lambda: False) -> bool:
    """Wait until HAProxy reports every replica UP (False after ``timeout`` or on a stop)."""
    wanted = set(layout.gateways) | set(layout.mcp_servers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        if wanted <= up_servers(layout.stats_url):
            return True
        time.sleep(0.1)
    return False


def up_servers(stats_url: str) -> set[str]:
    return {row["svname"] for row in server_stats(stats_url) if row["status"] == "UP"}


def server_stats(stats_url: str) -> list[dict[str, str]]:
    """HAProxy's CSV statistics, one row per primary server (``stot``: requests it took)."""
    try:
        with urllib.request.urlopen(stats_url + ";csv", timeout=1) as resp:  # noqa: S310
            text = resp.read().decode()
    except OSError:
        return []
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return [row for row in rows if row["pxname"] in ("gateways", "mcp_servers")
            and row["svname"] not in ("FRONTEND", "BACKEND") and row["bck"] == "0"]


def metrics_urls(layout: Layout, metrics_host: str) -> dict[str, str]:
    """Every replica's /metrics, by name: a scrape through HAProxy would reach any one of them."""
    return ({name: f"http://127.0.0.1:{port}/metrics" for name, port in layout.gateways.items()}
            | {name: f"http://{metrics_host}:{port}/metrics"
               for name, port in layout.mcp_metrics.items()})


def banner(layout: Layout, public_url: str, probe_host: str, config: Path) -> list[str]:
    def replicas(ports: dict[str, int]) -> str:
        return ", ".join(f"{name} :{port}" for name, port in ports.items())

    return [
        "",
        f"Gatehouse is running: {len(layout.gateways)} gateways and {len(layout.mcp_servers)} "
        "mcp_servers behind HAProxy.",
        f"  gateway     {public_url}  (MCP endpoint: {public_url}/mcp)",
        f"              HAProxy -> {replicas(layout.gateways)} on 127.0.0.1",
        f"  mcp_server  {layout.mcp_server_url(probe_host)}  (internal)",
        f"              HAProxy -> {replicas(layout.mcp_servers)} on 127.0.0.1",
        f"  haproxy     statistics {layout.stats_url}, configuration {config}",
    ]
