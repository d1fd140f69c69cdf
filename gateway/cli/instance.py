"""One ``up`` per data directory, on ports nobody else holds, and what it serves for ``token``.

``up`` refuses before starting anything when another ``up`` drives the same data directory
(an flock on ``up.lock``, which the kernel drops when that process dies, however it dies) or
when a port it would listen on is taken: otherwise its health checks could be answered by the
*other* stack and it would report success while its own children fail to bind.

While it runs, ``up.json`` says which issuer and audience the running gateway expects, so
``gatehouse token`` mints tokens that stack accepts whatever ports or URL it was given.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.cli.embedded.common import pid_alive, pid_lock
from gateway.errors import LauncherError

LOCK_FILE = "up.lock"
STATE_FILE = "up.json"


def hold_lock(data_dir: Path) -> int:
    """Lock ``data_dir`` for this process's lifetime; the descriptor is the lock."""
    return pid_lock(data_dir / LOCK_FILE, lambda holder: LauncherError(
        f"another `gatehouse up` (pid {holder}) is already running on {data_dir}; "
        "stop it first, or give this one its own --data-dir"))


def check_ports_free(host: str, ports: dict[str, int], host_option: str = "--host") -> None:
    """Bind each port as uvicorn will (SO_REUSEADDR, so a TIME_WAIT leftover is no conflict)."""
    if len(set(ports.values())) < len(ports):
        raise LauncherError(f"{' and '.join(ports)} must differ (all are {ports.popitem()[1]})")
    for option, port in ports.items():
        try:
            _bind(host, port)
        except socket.gaierror as exc:
            raise LauncherError(f"{host_option} {host}: cannot resolve it ({exc.strerror})"
                                ) from None
        except OSError as exc:
            raise LauncherError(_bind_problem(exc, host, port, option)) from None


def port_or_free(host: str, preferred: int) -> int:
    """``preferred`` if nothing holds it on ``host``, else a free port the kernel picks."""
    try:
        return _bind(host, preferred)
    except OSError:
        return _bind(host, 0)


def _bind(host: str, port: int) -> int:
    """Bind and release ``host:port``; the port bound (the kernel's choice for 0)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        return int(probe.getsockname()[1])


def _bind_problem(exc: OSError, host: str, port: int, option: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} ({option}) is already in use; stop what listens there "
                f"or choose another {option}")
    return f"cannot listen on {host}:{port} ({option}): {exc.strerror}"


@dataclass(frozen=True)
class Running:
    """What a running ``up`` serves, as far as ``token`` needs to know."""

    pid: int
    public_url: str
    issuer: str
    audience: str
    dev_issuer: bool


def publish(data_dir: Path, running: Running) -> None:
    temporary = data_dir / (STATE_FILE + ".tmp")
    temporary.write_text(json.dumps(asdict(running)))
    os.replace(temporary, data_dir / STATE_FILE)


def withdraw(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)


def running(data_dir: Path) -> Running | None:
    """The ``up`` running on ``data_dir``; None if none is (a killed one leaves a stale file)."""
    try:
        state = Running(**json.loads((data_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return state if pid_alive(state.pid) else None
