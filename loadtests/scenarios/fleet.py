"""The stack a load run meets, started by the runner, and the processes it watches.

``gatehouse up`` runs as a subprocess with a data directory of its own (embedded PostgreSQL and
Redis unless ``GATEHOUSE_DATABASE_URL`` / ``GATEHOUSE_REDIS_URL`` name configured ones), from a
scratch working directory so no ``.env`` of the checkout applies, with limits a load test does
not trip and GitHub configured against two loopback processes: the loopback provider answers
``github_whoami`` and the GitHub stand-in takes disconnects' revocations. ``--replicas K`` is
passed through to ``up`` when K > 1.

The Gatehouse processes are ``up``'s children, told apart by what they run; the embedded
PostgreSQL is found through its ``postmaster.pid`` (``pg_ctl`` detaches it), with its backends.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import psutil

from oauth.keyring import generate_entry
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
UNLIMITED = "100000000/minute"
PASSED_THROUGH = ("GATEHOUSE_DATABASE_URL", "GATEHOUSE_ADMIN_DATABASE_URL", "GATEHOUSE_REDIS_URL")
STANDIN_CLIENT = ("gatehouse-test", "test-secret")  # tests.support.github_standin's default
START_SECONDS = 180
# the loopback processes GitHub is configured against, by the name a run gives them
HELPERS = {"loopback": "loadtests.loopback_provider", "standin": "tests.support.github_standin"}


@dataclass
class Watched:
    """A process to report on; ``tree`` sums its descendants too (PostgreSQL's backends)."""

    label: str
    kind: str  # "gatehouse", "dependency" or "harness"
    process: psutil.Process
    tree: bool = False

    def _members(self) -> list[psutil.Process]:
        return [self.process, *(self.process.children(recursive=True) if self.tree else [])]

    def cpu_seconds(self) -> float:
        total = 0.0
        for member in self._members():
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def fds(self) -> int:
        return int(self.process.num_fds())


@dataclass
class Stack:
    work: Path
    gateway_url: str
    mcp_server_url: str  # base URL, without /mcp
    loopback_token: str
    token_keys: str
    up: subprocess.Popen[bytes]
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    standin_url: str = ""

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    def database_url(self) -> str:
        """The app role's DSN, as ``up`` handed it to mcp_server."""
        for watched in self.processes():
            if watched.label.startswith("mcp_server"):
                return str(watched.process.environ()["GATEHOUSE_DATABASE_URL"])
        raise RuntimeError("no mcp_server process under `gatehouse up`")

    def processes(self) -> list[Watched]:
        found = [Watched("loopback provider", "harness", psutil.Process(self.helpers[0].pid)),
                 Watched("github stand-in", "harness", psutil.Process(self.helpers[1].pid))]
        found += _children_of(self.up.pid)
        postmaster = self.data_dir / "postgres" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            pid = int(postmaster.read_text().split()[0])
            found.append(Watched("postgres", "dependency", psutil.Process(pid), tree=True))
        return found


def _children_of(pid: int) -> list[Watched]:
    kinds = {"gateway.app:create_app": ("gateway", "gatehouse"),
             "mcp_server.app:create_app": ("mcp_server", "gatehouse")}
    found: list[Watched] = []
    for child in sorted(psutil.Process(pid).children(recursive=True), key=lambda p: p.pid):
        with contextlib.suppress(psutil.Error):
            command = " ".join(child.cmdline())
            label, kind = next((v for k, v in kinds.items() if k in command),
                               (child.name(), "dependency"))
            if kind == "dependency" and child.name() not in ("redis-server", "haproxy"):
                continue
            found.append(Watched(label, kind, child))
    counts: dict[str, int] = {}
    for watched in found:
        counts[watched.label] = counts.get(watched.label, 0) + 1
    seen: dict[str, int] = {}
    for watched in found:  # gateway-1, gateway-2 when there are replicas
        if counts[watched.label] > 1:
            seen[watched.label] = seen.get(watched.label, 0) + 1
            watched.label = f"{watched.label}-{seen[watched.label]}"
    return found


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GATEHOUSE_") or k in PASSED_THROUGH}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | extra


def wait_until(check: Callable[[], bool], what: str, process: subprocess.Popen[bytes],
               log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}):\n"
                               + log.read_text(errors="replace")[-3000:])
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start in {START_SECONDS}s; see {log}")


def start_helper(module: str, port: int, env: dict[str, str], log: Path
                 ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module, "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def answers(url: str, status: int | None = None) -> bool:
    answer = httpx.get(url, timeout=2)
    return status is None or answer.status_code == status


def _up_command(data_dir: Path, gateway_port: int, mcp_port: int, replicas: int) -> list[str]:
    command = [sys.executable, "-m", "gateway", "--data-dir", str(data_dir), "up",
               "--gateway-port", str(gateway_port), "--mcp-port", str(mcp_port)]
    return command + (["--replicas", str(replicas)] if replicas > 1 else [])


def _up_environment(loopback_url: str, standin_url: str, keys: str) -> dict[str, str]:
    github = {"client_id": STANDIN_CLIENT[0], "client_secret": STANDIN_CLIENT[1],
              "api_base_url": loopback_url,
              "revocation_endpoint": standin_url + "/applications/{client_id}/grant"}
    return _environment({
        "GATEHOUSE_PROVIDERS": json.dumps({"github": github}),
        "GATEHOUSE_TOKEN_KEYS": keys,
        "GATEHOUSE_USER_RATE_LIMIT": UNLIMITED,
        "GATEHOUSE_USER_TOOL_RATE_LIMIT": UNLIMITED,
        "GATEHOUSE_ORG_PROVIDER_RATE_LIMIT": UNLIMITED,
        "GATEHOUSE_PROVIDER_RATE_LIMIT": UNLIMITED,
    })


def _stop(process: subprocess.Popen[bytes], sig: int, seconds: float) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def running_stack(work: Path, replicas: int = 1) -> Iterator[Stack]:
    """The loopback provider, the GitHub stand-in and ``gatehouse up``, ready; stopped after."""
    work.mkdir(parents=True, exist_ok=True)
    token = f"gho_{secrets.token_hex(16)}"
    env = _environment({"LOOPBACK_PROVIDER_TOKEN": token})
    ports = {name: free_port() for name in ("loopback", "standin", "gateway", "mcp")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    helpers = [start_helper(HELPERS[name], ports[name], env, work / f"{name}.log")
               for name in HELPERS]
    up: subprocess.Popen[bytes] | None = None
    try:
        for helper, name in zip(helpers, HELPERS, strict=True):
            wait_until(partial(answers, urls[name] + "/user"), name, helper,
                       work / f"{name}.log")
        keys = generate_entry("k1")
        (work / "data").mkdir(exist_ok=True)
        with (work / "up.log").open("wb") as log:
            up = subprocess.Popen(
                _up_command(work / "data", ports["gateway"], ports["mcp"], replicas),
                env=_up_environment(urls["loopback"], urls["standin"], keys), cwd=work,
                stdout=log, stderr=subprocess.STDOUT)
        for name, path in (("mcp", "/healthz"), ("gateway", "/readyz")):
            wait_until(partial(answers, urls[name] + path, 200),
                       f"gatehouse up ({name})", up, work / "up.log")
        yield Stack(work, urls["gateway"], urls["mcp"], token, keys, up, helpers,
                    urls["standin"])
    finally:
        if up is not None:
            _stop(up, signal.SIGINT, 30)
        for helper in helpers:
            _stop(helper, signal.SIGTERM, 10)
