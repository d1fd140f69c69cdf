"""`gatehouse up` with no configuration: embedded PostgreSQL and Redis, a development issuer,
both processes, a real MCP client, a clean Ctrl-C, and a second start that reuses the data."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest
from fastmcp import Client
from mcp_types import TextContent

from gateway.cli import devissuer
from gateway.cli.supervisor import Backoff, ChildSpec, Supervisor, describe_exit
from gateway.dev_issuer_keys import public_jwks
from gateway.errors import SupervisorError
from oauth.keyring import Keyring, generate_entry
from oauth.store import TokenStore
from oauth.vault import TokenBundle
from sql import apply_migrations, create_pool
from tests.support.databases import Database, with_database, with_user
from tests.support.processes import free_port
from tests.support.tenants import Who as Tenant

GATEHOUSE = [sys.executable, "-m", "gateway"]
RESTART_DEADLINE = 30.0  # seconds for a killed child to be back and healthy


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}


@contextmanager
def gatehouse_up(cwd: Path, gateway_port: int, mcp_port: int) -> Iterator[subprocess.Popen[str]]:
    log_path = cwd / "up.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    log = log_path.open("a")
    process = subprocess.Popen(
        [*GATEHOUSE, "up", "--gateway-port", str(gateway_port), "--mcp-port", str(mcp_port)],
        cwd=cwd,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "Press Ctrl-C to stop." not in log_path.read_text()[offset:]:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        log.close()


def token(cwd: Path, port: int, org: str, user: str) -> str:
    return subprocess.run(
        [
            *GATEHOUSE,
            "token",
            "--org",
            org,
            "--user",
            user,
            "--public-url",
            f"http://127.0.0.1:{port}",
        ],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


async def whoami(port: int, bearer: str) -> dict[str, object]:
    async with Client(f"http://127.0.0.1:{port}/mcp", auth=bearer) as client:
        result = await client.call_tool("whoami", {})
    content = result.content[0]
    assert isinstance(content, TextContent)
    data: dict[str, object] = json.loads(content.text)
    return data


@pytest.fixture
def project_dir() -> Iterator[Path]:
    """A fresh working directory outside pytest's own temporary root, whose permissions
    pytest resets at every session start (the embedded cluster's user must traverse it)."""
    path = Path(tempfile.mkdtemp(prefix="gatehouse-up-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_up_runs_everything_and_stops_cleanly(project_dir: Path) -> None:
    tmp_path = project_dir
    gateway_port, mcp_port = free_port(), free_port()
    with gatehouse_up(tmp_path, gateway_port, mcp_port) as up:
        banner = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{gateway_port}" in banner
        assert "gatehouse token --org acme --user alice" in banner
        me = await whoami(gateway_port, token(tmp_path, gateway_port, "acme", "alice"))
        assert (me["org_id"], me["user_id"]) == ("acme", "alice")
        ready = httpx.get(f"http://127.0.0.1:{gateway_port}/readyz").json()
        assert ready["status"] == "ready"
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
    log = (tmp_path / "up.log").read_text()
    assert "embedded PostgreSQL stopped" in log and "embedded Redis stopped" in log
    for port in (gateway_port, mcp_port):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            raise AssertionError(f"port {port} still answers after Ctrl-C")
        except httpx.ConnectError:
            pass

    # A second start reuses the cluster: the organisation provisioned above is still there.
    with gatehouse_up(tmp_path, gateway_port, mcp_port):
        second = (tmp_path / "up.log").read_text()[len(log) :]
        assert "creating PostgreSQL cluster" not in second
        assert "applied migrations" not in second
        ready_line = [ln for ln in second.splitlines() if "embedded PostgreSQL ready" in ln][-1]
        conn = await asyncpg.connect(ready_line.rsplit(": ", 1)[1])
        try:
            assert await conn.fetchval("SELECT id FROM organizations") == "acme"
        finally:
            await conn.close()


async def test_migrate_command_applies_once_and_sets_the_app_password(
    database: Database,
) -> None:
    server = database.admin_url
    name = f"gatehouse_cli_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(server, name)
        env = {**clean_env(), "GATEHOUSE_ADMIN_DATABASE_URL": url, "APP_PW": "s3cret-pw"}
        command = [*GATEHOUSE, "migrate", "--app-password-env", "APP_PW"]
        first = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        assert "applied: 0001_initial" in first.stdout
        again = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        assert "database is up to date" in again.stdout
        assert "s3cret-pw" not in first.stdout + first.stderr + again.stdout + again.stderr
        hashed = await conn.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'gatehouse_app'"
        )
        assert hashed and hashed.startswith("SCRAM-SHA-256$")
    finally:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


async def test_keys_rotate_reencrypts_every_grant(database: Database) -> None:
    server = database.admin_url
    name = f"gatehouse_keys_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    try:
        await apply_migrations(url)
        owner = await asyncpg.connect(url)
        await owner.execute("INSERT INTO organizations VALUES ('rot-org')")
        await owner.execute(
            "INSERT INTO users (org_id, id) VALUES ('rot-org', 'u1'), ('rot-org', 'u2')"
        )
        await owner.close()
        old = generate_entry("k1")
        pool = await create_pool(with_user(url, "gatehouse_app"), min_size=1, max_size=2)
        store = TokenStore(pool, Keyring.parse(old))
        for user in ("u1", "u2"):
            await store.save(Tenant("rot-org", user), "github", TokenBundle(f"secret-{user}"))
        new = generate_entry("k2")
        env = {**clean_env(), "GATEHOUSE_TOKEN_KEYS": f"{new},{old}"}
        done = subprocess.run(
            [*GATEHOUSE, "keys", "rotate", "--database-url", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "2 grant(s) re-encrypted" in done.stdout
        assert "secret-" not in done.stdout + done.stderr
        only_new = TokenStore(pool, Keyring.parse(new))
        for user in ("u1", "u2"):
            bundle = await only_new.load(Tenant("rot-org", user), "github")
            assert bundle is not None and bundle.access_token == f"secret-{user}"
        await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def echo(port: int, bearer: str, text: str) -> str:
    async with Client(f"http://127.0.0.1:{port}/mcp", auth=bearer) as client:
        result = await client.call_tool("echo", {"text": text})
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


async def poll(check: Callable[[], Awaitable[bool]], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not await check():
        assert time.monotonic() < end, f"not {what} after {deadline:.0f}s"
        await asyncio.sleep(0.05)


async def test_up_restarts_a_killed_mcp_server_while_the_gateway_keeps_serving(
    project_dir: Path,
) -> None:
    """The probe's repro: SIGKILL mcp_server under `up`. /v1 keeps answering, /readyz names
    mcp_server, MCP answers a clear 502, and `up` brings mcp_server back and says so."""
    gateway_port, mcp_port = free_port(), free_port()
    log_path, pid_file = project_dir / "up.log", project_dir / ".gatehouse" / "mcp_server.pid"
    with gatehouse_up(project_dir, gateway_port, mcp_port) as up:
        started = log_path.read_text()
        # The gateway is started only once mcp_server answers /healthz.
        assert started.index("mcp_server is healthy") < started.index("started gateway")
        bearer = token(project_dir, gateway_port, "acme", "alice")
        assert await echo(gateway_port, bearer, "before") == "before"
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway_port}",
            headers={"Authorization": f"Bearer {bearer}"},
        ) as http:
            old_pid = int(pid_file.read_text())
            os.kill(old_pid, signal.SIGKILL)

            async def mcp_server_down() -> bool:
                ready = (await http.get("/readyz")).json()
                return ready["checks"]["mcp_server"]["ok"] is False

            await poll(mcp_server_down, 10, "reported down")
            down = await http.get("/readyz")
            assert down.status_code == 503 and down.json()["checks"]["database"]["ok"] is True
            assert (await http.get("/v1/sessions")).status_code == 200
            mcp = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
            assert mcp.status_code == 502, mcp.text
            assert mcp.headers["content-type"] == "application/problem+json"
            assert mcp.json()["code"] == "upstream_unavailable"

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await poll(ready, RESTART_DEADLINE, "ready again")
            assert (await http.get("/v1/sessions")).status_code == 200
        assert int(pid_file.read_text()) != old_pid
        assert await echo(gateway_port, bearer, "after") == "after"
        assert up.poll() is None
        stopping = time.monotonic()
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        assert time.monotonic() - stopping < 5
    log = log_path.read_text()
    assert f"mcp_server (pid {old_pid}) killed by SIGKILL; restarting it in 0.5s" in log
    assert not pid_file.exists()


INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


# -- the supervisor on its own, with a trivial child (fast, and controls the backoff) --------


@pytest.fixture
def static_child(tmp_path: Path) -> ChildSpec:
    """A real HTTP server whose /healthz answers 200 (a file of that name)."""
    (tmp_path / "healthz").write_text("ok")
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
               "--directory", str(tmp_path)]
    return ChildSpec("static", command, dict(os.environ), f"http://127.0.0.1:{port}/healthz")


@contextmanager
def running(supervisor: Supervisor) -> Iterator[threading.Thread]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()))
    thread.start()
    try:
        yield thread
    finally:
        supervisor.request_stop()
        thread.join(timeout=5)
        supervisor.stop()
    assert result == [0]


def wait_for(check: Callable[[], bool], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"not {what} after {deadline:.0f}s"
        time.sleep(0.05)


def test_supervisor_restarts_a_crashed_child_with_a_log_line(
    static_child: ChildSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatehouse")
    supervisor = Supervisor(tmp_path, backoff=lambda: Backoff(initial=0.1))
    assert supervisor.start(static_child)
    pid_file = tmp_path / "static.pid"
    first = int(pid_file.read_text())
    with running(supervisor):
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: int(pid_file.read_text()) != first, 10, "respawned")
        wait_for(lambda: "static is healthy (pid " + pid_file.read_text().strip() + ")"
                 in caplog.text, 10, "healthy again")
    assert f"static (pid {first}) killed by SIGKILL; restarting it in 0.1s (restart #1)" \
        in caplog.text
    assert not pid_file.exists()


def test_a_stop_during_the_restart_backoff_is_quick(
    static_child: ChildSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(tmp_path, backoff=lambda: Backoff(initial=60))
    assert supervisor.start(static_child)
    with running(supervisor) as thread:
        os.kill(int((tmp_path / "static.pid").read_text()), signal.SIGTERM)
        wait_for(lambda: "restarting it in 60.0s" in caplog.text, 10, "in backoff")
        stopping = time.monotonic()
        supervisor.request_stop()
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert time.monotonic() - stopping < 1
    assert "exited with code" in caplog.text or "killed by SIGTERM" in caplog.text


def test_a_child_that_dies_during_start_up_fails_the_start(tmp_path: Path) -> None:
    spec = ChildSpec("broken", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ),
                     f"http://127.0.0.1:{free_port()}/healthz")
    with pytest.raises(SupervisorError, match="broken exited with code 3 during start-up"):
        Supervisor(tmp_path).start(spec)


def test_backoff_doubles_to_a_ceiling_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(initial=0.5, maximum=10, stable_after=30)
    assert [backoff.after_crash(0) for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert backoff.after_crash(29) == 10
    assert backoff.after_crash(30) == 0.5
    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(3) == "exited with code 3"


# -- the launcher is not part of the server ----------------------------------------------------


def test_the_servers_do_not_import_the_launcher() -> None:
    """Issue 11.3: gateway.cli depends on the server, never the other way round."""
    probe = ("import sys, gateway.app, mcp_server.app; "
             "print(sorted(m for m in sys.modules if m.startswith('gateway.cli')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_dev_jwks_publishes_the_public_half_of_the_key_gatehouse_mints_with(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "dev_issuer.pem"
    assert public_jwks(key_file) == {"keys": []}  # the gateway never creates the key itself
    assert not key_file.exists()
    token = devissuer.mint(devissuer.ensure_key(key_file), issuer="https://gw/dev",
                           audience="https://gw/mcp", org="acme", user="alice", roles=["member"])
    (jwk,) = public_jwks(key_file)["keys"]
    assert "d" not in jwk and jwk["kid"] == jwt.get_unverified_header(token)["kid"]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="https://gw/mcp")
    assert (claims["iss"], claims["org_id"], claims["sub"]) == ("https://gw/dev", "acme", "alice")
