"""Keeps ``gatehouse up``'s child processes running: start in order, restart after a crash.

Each child is started only once the previous one answers its health URL, so the gateway
never takes traffic before mcp_server listens. A child that dies later is restarted with an
exponential backoff (reset once it has stayed healthy for a while), one log line per restart;
the other children keep serving meanwhile. A child that exits by itself (also cleanly, e.g. a
replica an operator sent SIGTERM to drain it) is restarted the same way: under ``up`` only ``up``
decides that a child stops. SIGINT/SIGTERM to ``up`` stop everything, also during a backoff,
because the loop only ever sleeps in short slices and checks a flag.

A child whose spec says ``prefixed`` (a fleet's replicas, which would otherwise write to one
terminal with nothing saying who wrote what) has its stdout and stderr piped through ``up``,
each line prefixed with the child's name (``gateway-1 | ``) onto ``up``'s own stdout and stderr;
other children write to ``up``'s terminal directly.

Children started together (:meth:`Supervisor.start` with several specs, e.g. a fleet's replicas)
start in parallel and are stopped together, each tier in reverse start order: the gateways
drain at the same time, then what they depended on stops.

The loop is a small state machine per child rather than a blocking "restart" call, so a second
child crashing while the first is still starting is noticed at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, TextIO

from gateway.errors import SupervisorError

log = logging.getLogger("gatehouse")

_TICK = 0.1  # seconds between looks at the children; bounds how late a stop request is seen
_PROBE_TIMEOUT = 0.5
_STOP_TIMEOUT = 10.0  # per tier, a last resort: uvicorn ends open streams after its drain bound


@dataclass(frozen=True)
class ChildSpec:
    name: str
    command: list[str]
    env: dict[str, str]
    health_url: str
    # SIGINT: uvicorn stops at once (drains in-flight work, skips a SIGTERM readiness grace)
    stop_signal: int = signal.SIGTERM
    prefixed: bool = False  # each output line led by "<name> | "


@dataclass
class Backoff:
    """Delay before the next restart: doubles per crash, back to ``initial`` after a stable run."""

    initial: float = 0.5
    maximum: float = 10.0
    stable_after: float = 30.0
    _next: float = field(default=0.0, init=False)

    def after_crash(self, healthy_for: float) -> float:
        if not self._next or healthy_for >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


class State(Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"


@dataclass
class _Child:
    spec: ChildSpec
    backoff: Backoff
    process: subprocess.Popen[bytes] | None = None
    state: State = State.BACKOFF
    deadline: float = 0.0  # end of the backoff, or of the start-up allowance
    healthy_since: float = 0.0
    restarts: int = 0
    relays: list[threading.Thread] = field(default_factory=list)


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` or ``killed by SIGKILL`` (Popen reports a signal as -N)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT) as resp:  # noqa: S310 (loopback)
            return bool(resp.status == 200)
    except OSError:
        return False


class Supervisor:
    """Runs children in order and keeps them running until ``request_stop``."""

    def __init__(
        self,
        pid_dir: Path,
        *,
        start_timeout: float = 30.0,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self._pid_dir = pid_dir
        self._start_timeout = start_timeout
        self._backoff = backoff
        self._tiers: list[list[_Child]] = []
        self._stopping = False

    # -- control ------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def request_stop(self, signum: int = 0, frame: object = None) -> None:
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self, *specs: ChildSpec) -> bool:
        """Start ``specs`` together and wait until all are healthy; False if a stop was
        requested first."""
        tier = [_Child(spec, self._backoff()) for spec in specs]
        self._tiers.append(tier)
        now = time.monotonic()
        for child in tier:
            self._spawn(child, now)
        while any(c.state is State.STARTING for c in tier) and not self._stopping:
            self._sleep(_TICK)
            for child in tier:
                self._tick(child, time.monotonic(), restart=False)
        return all(c.state is State.RUNNING for c in tier)

    def run(self) -> int:
        """Watch and restart children until a stop is requested; then the caller calls stop()."""
        while not self._stopping:
            now = time.monotonic()
            for tier in self._tiers:
                for child in tier:
                    self._tick(child, now, restart=True)
            self._sleep(_TICK)
        log.info("stopping")
        return 0

    def stop(self) -> None:
        """Stop the children in reverse start order (the gateway before what it depends on),
        a tier at a time, the children of a tier together."""
        for tier in reversed(self._tiers):
            running = [c for c in tier if c.process is not None]
            _terminate([(c.process, c.spec.stop_signal) for c in running if c.process])
            for child in running:
                for relay in child.relays:  # what they said while stopping reaches the terminal
                    relay.join(timeout=1)
                self._pid_file(child.spec).unlink(missing_ok=True)

    # -- the state machine --------------------------------------------------------------------

    def _tick(self, child: _Child, now: float, *, restart: bool) -> None:
        if child.state is State.BACKOFF:
            if now >= child.deadline:
                self._spawn(child, now)
            return
        assert child.process is not None
        returncode = child.process.poll()
        if returncode is not None:
            self._crashed(child, returncode, now, restart=restart)
        elif child.state is State.STARTING:
            self._check_started(child, now, restart=restart)

    def _check_started(self, child: _Child, now: float, *, restart: bool) -> None:
        if healthy(child.spec.health_url):
            child.state, child.healthy_since = State.RUNNING, now
            log.info("%s is healthy (pid %d)", child.spec.name, _pid(child))
        elif now > child.deadline:
            log.error("%s not healthy after %.0fs; killing it", child.spec.name,
                      self._start_timeout)
            assert child.process is not None
            child.process.kill()
            self._crashed(child, child.process.wait(), now, restart=restart)

    def _crashed(self, child: _Child, returncode: int, now: float, *, restart: bool) -> None:
        name, how = child.spec.name, describe_exit(returncode)
        for relay in child.relays:  # its last words before ours about its exit
            relay.join(timeout=1)
        if not restart:
            raise SupervisorError(f"{name} {how} during start-up; see the log above")
        healthy_for = now - child.healthy_since if child.state is State.RUNNING else 0.0
        delay = child.backoff.after_crash(healthy_for)
        child.restarts += 1
        child.state, child.deadline = State.BACKOFF, now + delay
        log.warning("%s (pid %d) %s; restarting it in %.1fs (restart #%d)",
                    name, _pid(child), how, delay, child.restarts)

    def _spawn(self, child: _Child, now: float) -> None:
        spec = child.spec
        # A session of its own: Ctrl-C reaches only `up`, which then stops children in order.
        pipe = subprocess.PIPE if spec.prefixed else None
        child.process = subprocess.Popen(spec.command, env=spec.env, start_new_session=True,
                                         stdout=pipe, stderr=pipe)
        if spec.prefixed:
            child.relays = _relay(child.process, spec.name)
        child.state, child.deadline = State.STARTING, now + self._start_timeout
        _write_atomically(self._pid_file(spec), f"{child.process.pid}\n")
        log.info("started %s (pid %d)", spec.name, child.process.pid)

    def _pid_file(self, spec: ChildSpec) -> Path:
        return self._pid_dir / f"{spec.name}.pid"

    def _sleep(self, seconds: float) -> None:
        if not self._stopping:
            time.sleep(seconds)


def _pid(child: _Child) -> int:
    return child.process.pid if child.process is not None else 0


def _relay(process: subprocess.Popen[bytes], name: str) -> list[threading.Thread]:
    """Copy the child's stdout and stderr line by line, prefixed, until it closes them."""
    prefix = f"{name} | ".encode()
    threads = [
        threading.Thread(target=_copy_lines, args=(source, target, prefix), daemon=True,
                         name=f"{name}-{label}")
        for source, target, label in ((process.stdout, sys.stdout, "stdout"),
                                      (process.stderr, sys.stderr, "stderr"))
        if source is not None
    ]
    for thread in threads:
        thread.start()
    return threads


def _copy_lines(source: IO[bytes], target: TextIO, prefix: bytes) -> None:
    with source:
        for line in iter(source.readline, b""):
            # whole lines in one write each, so two replicas' lines never interleave mid-line
            target.buffer.write(prefix + line + (b"" if line.endswith(b"\n") else b"\n"))
            target.flush()


def _terminate(processes: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    """Signal every process, then wait for all within one shared deadline; kill what is left."""
    for process, stop_signal in processes:
        if process.poll() is None:
            process.send_signal(stop_signal)
    deadline = time.monotonic() + _STOP_TIMEOUT
    for process, _ in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _write_atomically(path: Path, text: str) -> None:
    """Readers (scripts, tests) never see a half-written PID file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
