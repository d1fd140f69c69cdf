"""A Redis and a PostgreSQL that a fault test owns: killed, stopped, frozen and started again.

Only these processes are ever signalled, by PID: the ``redis-server`` this module started, and
the postmaster of the private cluster in this module's data directory with its backends (a
frozen PostgreSQL means every one of its processes stopped, not only the postmaster, whose
backends would keep serving the connections already open).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from redis import Redis

from gateway.cli import embedded
from gateway.cli.embedded import EmbeddedPostgres
from tests.support.databases import _private_dir
from tests.support.processes import free_port

START_SECONDS = 15.0


class OwnRedis:
    """``redis-server`` on a free loopback port, no persistence: a restart starts it empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = _private_dir("redis-fault")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while not self.answers():
            assert self.process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def answers(self) -> bool:
        client = Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except OSError:
            return False
        except Exception:  # redis's own ConnectionError/TimeoutError: not up yet
            return False
        finally:
            client.close()

    def client(self) -> Redis:
        return Redis(port=self.port, socket_timeout=2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait(10)

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnPostgres:
    """A private cluster (the embedded one's binaries) the test may stop, start and freeze;
    its URLs survive a restart."""

    def __init__(self) -> None:
        self.dir = _private_dir("pg-fault")
        self.server: EmbeddedPostgres = embedded.start_postgres(self.dir)
        self.admin_url = self.server.admin_url
        self.app_url = self.server.app_url("gatehouse_app")
        self._frozen: list[int] = []

    def stop(self) -> None:
        self.server.stop()  # fast mode: open transactions are cut off

    def start(self) -> None:
        self.server = embedded.start_postgres(self.dir)

    def postmaster(self) -> int:
        return int((self.server.pgdata / "postmaster.pid").read_text().split()[0])

    def processes(self) -> list[int]:
        """The postmaster first, then its children (backends, checkpointer, ...)."""
        parent = self.postmaster()
        return [parent, *_children(parent)]

    def freeze(self) -> None:
        self._frozen = self.processes()
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in reversed(self._frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = []

    def close(self) -> None:
        self.thaw()
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found

