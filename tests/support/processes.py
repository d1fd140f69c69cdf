"""Starting Gatehouse processes for tests: real uvicorn servers on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A child process serving HTTP; ``url`` is its base URL."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_uvicorn(factory: str, env: dict[str, str], log_dir: Path, name: str) -> Server:
    port = free_port()
    log = log_dir / f"{name}-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    full_env.update(env)
    if factory.startswith("gateway."):
        full_env.setdefault("GATEHOUSE_PUBLIC_URL", f"http://127.0.0.1:{port}")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                factory,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),  # uvicorn's access log on, as in production: the app turns it off
            ],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log, env)
    wait_healthy(server)
    return server


def wait_healthy(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.url} exited during start-up:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.url} not healthy after {timeout}s:\n{server.log_text()}")
