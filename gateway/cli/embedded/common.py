"""Shared helpers of the embedded servers: locks, socket paths, process checks."""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import importlib.util
import logging
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import EmbeddedError

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "pgserver"  # the OS user that runs PostgreSQL when we are root
PG_SUPERUSER = "postgres"
PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432); there is no TCP listener
START_TIMEOUT = 60  # seconds
STOP_TIMEOUT = 30  # seconds
# sun_path is 108 bytes on Linux (104 on macOS), including the terminating NUL.
MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107


# --------------------------------------------------------------------------------------------
# shared helpers


@dataclass
class Handle:
    """Mutable state behind the frozen public dataclasses (so ``stop()`` is idempotent)."""

    lock_fd: int | None
    owner_pid: int = field(default_factory=os.getpid)
    stopped: bool = False


def package_dir(package: str) -> Path:
    """Locate an installed package without importing it: both import with side effects."""
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise EmbeddedError(f"the {package!r} package is not installed")
    return Path(next(iter(locations)))


def require_posix() -> None:
    if os.name != "posix":
        raise EmbeddedError("embedded PostgreSQL/Redis need a POSIX system (Linux or macOS)")


def pid_lock(path: Path, refusal: Callable[[str], Exception]) -> int:
    """Lock ``path`` exclusively for this process's lifetime (the descriptor is the lock; the
    kernel drops it however we die) and write our pid in it; if another process holds it,
    raise ``refusal(its pid)``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise refusal(holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def acquire_lock(path: Path, what: str) -> int:
    """Hold an exclusive lock for the server's lifetime."""
    return pid_lock(path, lambda holder: EmbeddedError(
        f"{what} in {path.parent} is already in use by another process (pid {holder}); "
        "stop it first or use another --data-dir"))


def release_lock(handle: Handle) -> None:
    if handle.lock_fd is not None:
        os.close(handle.lock_fd)  # closing the descriptor releases the flock
        handle.lock_fd = None


def socket_fits(directory: Path, name: str) -> bool:
    return len(os.fsencode(directory / name)) <= MAX_SOCKET_PATH


def short_socket_dir(data_dir: Path, kind: str, owner_uid: int, owner_gid: int) -> Path:
    """A short private directory for a socket whose natural path would be too long."""
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:12]
    for base in (Path(tempfile.gettempdir()), Path("/tmp")):  # noqa: S108 (private 0700 dir)
        candidate = base / f"gatehouse-{kind}-{os.geteuid()}-{digest}"
        if socket_fits(candidate, f".s.PGSQL.{PG_PORT}"):
            break
    else:
        raise EmbeddedError(f"no directory short enough for a Unix socket for {data_dir}")
    try:
        candidate.mkdir(mode=0o700)
        if owner_uid != os.geteuid():  # root, preparing it for the pgserver user
            os.chown(candidate, owner_uid, owner_gid)
    except FileExistsError:
        pass
    info = candidate.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner_uid:
        raise EmbeddedError(f"{candidate} exists but is not a directory owned by uid {owner_uid}")
    candidate.chmod(0o700)
    return candidate


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def process_state(pid: int) -> str | None:
    """The process state letter ("R", "S", "Z" for zombie, ...), or None if there is none."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        return stat_line.rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None
    except OSError:
        pass  # no /proc (macOS): ask ps
    done = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    state = done.stdout.strip()[:1]
    return state if done.returncode == 0 and state else None


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie: an orphan killed by a signal stays a zombie until init reaps it."""
    return process_state(pid) not in (None, "Z")


def register_exit_safety_net(stop: Callable[[], None]) -> None:
    """Stop a server the caller forgot to stop; ``stop()`` remains the way to do it."""
    atexit.register(stop)
