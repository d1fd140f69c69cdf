"""`gatehouse up` with no configuration: embedded PostgreSQL and Redis, a development issuer,
both processes, a real MCP client, a clean Ctrl-C, and a second start that reuses the data."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest
from fastmcp import Client
from mcp_types import TextContent
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import commands, devissuer, instance
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
def gatehouse_up(
    cwd: Path, gateway_port: int, mcp_port: int, data_dir: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    log_path = cwd / "up.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    log = log_path.open("a")
    where = ["--data-dir", data_dir] if data_dir else []
    process = subprocess.Popen(
        [*GATEHOUSE, *where, "up", "--gateway-port", str(gateway_port),
         "--mcp-port", str(mcp_port)],
        cwd=cwd,
        env=clean_env() | (env or {}),
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


def metrics_urls(banner: str) -> dict[str, str]:
    """The banner's metrics block: process name -> URL."""
    lines = banner[banner.index("  metrics "):].splitlines()
    rest = itertools.takewhile(lambda ln: ln.startswith(" " * 14), lines[1:])
    pairs = (ln.split(maxsplit=1) for ln in [lines[0].removeprefix("  metrics"), *rest])
    return {pair[0]: pair[1] for pair in pairs}


def served_tool_calls(url: str, family: str, tool: str) -> float:
    """How many calls of ``tool`` the ``family`` histogram at ``url`` has counted."""
    text = httpx.get(url, timeout=5).text
    return sum(sample.value for metric in text_string_to_metric_families(text)
               if metric.name == family for sample in metric.samples
               if sample.name == f"{family}_count"
               and sample.labels.get("gen_ai_tool_name") == tool)


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
        # Both processes' /metrics are in the banner: the gateway's on its port, mcp_server's
        # on a listener of its own (9464 unless taken), and each counted the call.
        urls = metrics_urls(banner)
        assert urls["gateway"] == f"http://127.0.0.1:{gateway_port}/metrics"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", urls["mcp_server"]), urls
        assert served_tool_calls(urls["mcp_server"], "mcp_server_operation_duration_seconds",
                                 "whoami") == 1
        assert served_tool_calls(urls["gateway"], "mcp_client_operation_duration_seconds",
                                 "whoami") == 1
        ready = httpx.get(f"http://127.0.0.1:{gateway_port}/readyz").json()
        assert ready["status"] == "ready"
        # Beside .gatehouse/ and with no configuration, the operator commands find the cluster.
        verified = gatehouse(tmp_path, "audit", "verify")
        assert verified.returncode == 0 and "audit chain intact" in verified.stdout, verified
        rotated = gatehouse(tmp_path, "keys", "rotate")
        assert rotated.returncode == 0, rotated.stderr
        assert "grant(s) re-encrypted" in rotated.stdout
        assert ".gatehouse/token_keys" in rotated.stdout
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
    log = (tmp_path / "up.log").read_text()
    assert "embedded PostgreSQL stopped" in log and "embedded Redis stopped" in log
    assert_root_notice(log, tmp_path)
    # Under up both processes log readable text (GATEHOUSE_LOG_FORMAT defaults to console).
    for access in ("gateway.access", "mcp_server.access"):
        assert re.search(rf" INFO +{access} \[\S+\] POST /mcp 200$", log, re.M), log
    assert not [line for line in log.splitlines() if line.startswith("{")], log
    # One gateway and one mcp_server: their lines as they wrote them, no replica prefixes.
    assert not re.search(r"^(gateway|mcp_server)\S* \| ", log, re.M), log
    # With `up` stopped, `audit verify` starts the cluster for itself and stops it again.
    verified = gatehouse(tmp_path, "audit", "verify")
    assert verified.returncode == 0 and "audit chain intact" in verified.stdout, verified
    assert "embedded PostgreSQL stopped" in verified.stderr
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


def gatehouse(cwd: Path, *argv: str, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEHOUSE, *argv], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=90)


ROOT_NOTICE = "running as root: PostgreSQL refuses to run as root, so Gatehouse"


def assert_root_notice(log: str, project: Path) -> None:
    """As root, `up` says what it does to the system (the pgserver user, o+x on folders),
    before it does any of it; as anyone else it has nothing to say."""
    if os.geteuid() != 0:
        assert ROOT_NOTICE not in log
        return
    notice = next(line for line in log.splitlines() if ROOT_NOTICE in line)
    # mkdtemp made the project 0700, so the pgserver user cannot reach it without a change.
    assert "system user 'pgserver'" in notice and f"adds o+x (others may traverse, not list) " \
        f"to {project}" in notice
    assert log.index(ROOT_NOTICE) < log.index("embedded PostgreSQL ready")
    if "granting o+x" in log:
        assert log.index(ROOT_NOTICE) < log.index("granting o+x")


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


# -- the CLI tells the truth (issue 12 item 3) ---------------------------------------------------


@dataclass(frozen=True)
class Stack:
    cwd: Path
    gateway_port: int
    mcp_port: int
    metrics_port: int  # set by the operator (GATEHOUSE_METRICS_PORT)
    banner: str


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """One `up` on ports and a data directory that are not the defaults, shared by the tests
    below (each start costs seconds)."""
    cwd = Path(tempfile.mkdtemp(prefix="gatehouse-up-"))
    gateway_port, mcp_port, metrics_port = free_port(), free_port(), free_port()
    try:
        with gatehouse_up(cwd, gateway_port, mcp_port, data_dir="state",
                          env={"GATEHOUSE_METRICS_PORT": str(metrics_port)}) as up:
            yield Stack(cwd, gateway_port, mcp_port, metrics_port, (cwd / "up.log").read_text())
            assert up.poll() is None, "the stack died during the tests"
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


async def test_the_banner_token_command_is_accepted_by_a_stack_on_other_ports(
    stack: Stack,
) -> None:
    """`up --gateway-port N` once printed a command whose token that stack refused."""
    (line,) = [ln for ln in stack.banner.splitlines() if ln.startswith("Get a token:")]
    command = shlex.split(line.removeprefix("Get a token:"))
    assert command[:3] == ["gatehouse", "--data-dir", "state"]
    printed = gatehouse(stack.cwd, *command[1:])
    assert printed.returncode == 0, printed.stderr
    bearer = printed.stdout.strip()
    assert await echo(stack.gateway_port, bearer, "banner") == "banner"
    claims = jwt.decode(bearer, options={"verify_signature": False})
    assert claims["aud"] == f"http://127.0.0.1:{stack.gateway_port}/mcp"
    # The running stack's URL wins over a different GATEHOUSE_PUBLIC_URL in this shell.
    other = {**clean_env(), "GATEHOUSE_PUBLIC_URL": "http://127.0.0.1:1"}
    again = gatehouse(stack.cwd, *command[1:], env=other)
    assert await echo(stack.gateway_port, again.stdout.strip(), "env") == "env"


async def test_profile_claims_are_in_the_token_and_the_stack_accepts_it(stack: Stack) -> None:
    minted = gatehouse(
        stack.cwd, "--data-dir", "state", "token", "--org", "acme", "--user", "bob",
        "--role", "admin", "--role", "viewer", "--name", "Bob Builder",
        "--email", "bob@example.com", "--claim", "team=core", "--claim", 'groups=["a", 1]',
        "--claim", "level=3", "--claim", "gatehouse_platform_admin=false")
    assert minted.returncode == 0, minted.stderr
    bearer = minted.stdout.strip()
    claims = jwt.decode(bearer, options={"verify_signature": False})
    assert (claims["name"], claims["email"]) == ("Bob Builder", "bob@example.com")
    assert (claims["team"], claims["groups"], claims["level"]) == ("core", ["a", 1], 3)
    assert claims["gatehouse_platform_admin"] is False
    assert (claims["sub"], claims["org_id"]) == ("bob", "acme")
    assert claims["roles"] == ["admin", "viewer"]
    assert await echo(stack.gateway_port, bearer, "profile") == "profile"


async def test_up_serves_mcp_server_metrics_on_the_port_the_operator_set(stack: Stack) -> None:
    url = metrics_urls(stack.banner)["mcp_server"]
    assert url == f"http://127.0.0.1:{stack.metrics_port}/metrics"
    minted = gatehouse(stack.cwd, "--data-dir", "state", "token", "--org", "acme", "--user", "al")
    assert minted.returncode == 0, minted.stderr
    bearer = minted.stdout.strip()
    before = served_tool_calls(url, "mcp_server_operation_duration_seconds", "echo")
    assert await echo(stack.gateway_port, bearer, "counted") == "counted"
    after = served_tool_calls(url, "mcp_server_operation_duration_seconds", "echo")
    assert after == before + 1


def test_metrics_port_is_the_preferred_one_unless_taken() -> None:
    free = free_port()
    assert instance.port_or_free("127.0.0.1", free) == free
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        other = instance.port_or_free("127.0.0.1", held)
        assert other != held
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", other))  # and it is really free


def test_a_second_up_on_the_same_data_dir_says_so_in_one_line(stack: Stack) -> None:
    done = gatehouse(stack.cwd, "--data-dir", "state", "up", "--gateway-port",
                     str(free_port()), "--mcp-port", str(free_port()))
    assert done.returncode == 1
    (line,) = done.stdout.splitlines() + done.stderr.splitlines()
    assert "another `gatehouse up`" in line and "already running on" in line
    assert "Traceback" not in line
    assert httpx.get(f"http://127.0.0.1:{stack.gateway_port}/readyz").status_code == 200


def test_a_second_up_on_the_ports_of_a_running_stack_refuses_before_starting_anything(
    stack: Stack, project_dir: Path,
) -> None:
    """It used to health-check the *other* stack and print "Gatehouse is running."."""
    done = gatehouse(project_dir, "up", "--gateway-port", str(stack.gateway_port),
                     "--mcp-port", str(free_port()))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"gatehouse up: port {stack.gateway_port} on 127.0.0.1 (--gateway-port) is already in "
        "use; stop what listens there or choose another --gateway-port")
    assert "Gatehouse is running." not in done.stdout
    assert sorted(p.name for p in (project_dir / ".gatehouse").iterdir()) == ["up.lock"]


@pytest.mark.parametrize("option", ["--gateway-port", "--mcp-port"])
def test_up_refuses_a_port_someone_else_listens_on_before_starting_anything(
    project_dir: Path, option: str,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--gateway-port": free_port(), "--mcp-port": free_port(), option: port}
        done = gatehouse(project_dir, "up", *(str(x) for kv in ports.items() for x in kv))
    assert done.returncode == 1, done.stdout
    assert done.stderr.splitlines() == [
        f"gatehouse up: port {port} on 127.0.0.1 ({option}) is already in use; stop what "
        f"listens there or choose another {option}"]
    assert sorted(p.name for p in (project_dir / ".gatehouse").iterdir()) == ["up.lock"]


@pytest.mark.parametrize(("argv", "env", "says"), [
    (["--gateway-port", "8300", "--mcp-port", "8300"], {},
     "gatehouse up: --gateway-port and --mcp-port must differ (all are 8300)"),
    ([], {"GATEHOUSE_PUBLIC_URL": "127.0.0.1:8000"},
     "gatehouse up: GATEHOUSE_PUBLIC_URL must be an http(s) base URL such as "
     "http://127.0.0.1:8000, not '127.0.0.1:8000'"),
])
def test_up_refuses_a_wrong_setup_in_one_line_before_starting_anything(
    argv: list[str], env: dict[str, str], says: str, project_dir: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    data_dir = project_dir / ".gatehouse"
    assert commands.main(["--data-dir", str(data_dir), "up", *argv]) == 1
    assert capsys.readouterr().err.splitlines() == [says]
    assert [p.name for p in data_dir.iterdir()] in ([], ["up.lock"])


def test_help_lists_every_command_and_explains_every_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = commands._parser()
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(subparsers.choices) == {"up", "token", "migrate", "keys", "audit"}
    for name in subparsers.choices:
        assert re.search(rf"^    {name} +\S", text, re.MULTILINE), f"{name} not described"
    assert_all_explained(parser)


def assert_all_explained(parser: argparse.ArgumentParser) -> None:
    """Every option and every (sub)command of ``parser`` has a help text."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            described = {a.dest: a.help for a in action._get_subactions()}
            for name, sub in action.choices.items():
                assert described.get(name), f"{parser.prog} {name} has no description"
                assert_all_explained(sub)
        else:
            assert action.help and action.help.strip(), f"{parser.prog} {action.option_strings}"


@pytest.mark.parametrize(("argv", "says"), [
    (["--lifetime", "-60"], "argument --lifetime: must be a whole number of seconds from 1"),
    (["--lifetime", "0"], "argument --lifetime: must be a whole number of seconds from 1"),
    (["--org", ""], "argument --org: the organisation id must not be empty"),
    (["--user", "  "], "argument --user: the user id must not be empty"),
    (["--org", "_platform"], "would be refused by the gateway"),
    (["--user", "al ice"], "would be refused by the gateway"),
    (["--role", "superuser"], "unknown role 'superuser'; known roles: owner, admin, member, "
                              "viewer"),
    (["--public-url", "localhost:8000"], "argument --public-url: the URL must be an http(s)"),
    (["--public-url", "http://"], "argument --public-url: the URL must be an http(s)"),
    (["--public-url", "http://h:99999"], "argument --public-url: the URL must be an http(s)"),
    (["--claim", "iss=https://evil"], "the 'iss' claim is reserved; use --public-url"),
    (["--claim", "org_id=other"], "the 'org_id' claim is reserved; use --org"),
    (["--claim", "exp=1"], "the 'exp' claim is reserved; use --lifetime"),
    (["--claim", "name=x"], "the 'name' claim is reserved; use --name"),
    (["--claim", "novalue"], "argument --claim: expected KEY=VALUE"),
    (["--name", ""], "--name must not be empty"),
])
def test_token_refuses_bad_arguments_in_one_line(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    devissuer.ensure_key(tmp_path / "dev_issuer.pem")  # so only the argument can be the problem
    # A repeated --org/--user replaces the valid one given first.
    with pytest.raises(SystemExit) as exited:
        commands.main(["--data-dir", str(tmp_path), "token", "--org", "acme", "--user", "alice",
                       *argv])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("gatehouse token: ") and says in line, line


def test_token_reads_the_settings_up_reads(tmp_path: Path) -> None:
    """GATEHOUSE_PUBLIC_URL from .env or the environment (which wins), as `up` does."""
    devissuer.ensure_key(tmp_path / ".gatehouse" / "dev_issuer.pem")
    (tmp_path / ".env").write_text("GATEHOUSE_PUBLIC_URL=https://gw.example.com/\n")

    def claims(env: dict[str, str]) -> dict[str, object]:
        done = gatehouse(tmp_path, "token", "--org", "acme", "--user", "alice", env=env)
        assert done.returncode == 0, done.stderr
        decoded: dict[str, object] = jwt.decode(done.stdout.strip(),
                                                options={"verify_signature": False})
        return decoded

    from_file = claims(clean_env())
    assert (from_file["iss"], from_file["aud"]) == (
        "https://gw.example.com/dev", "https://gw.example.com/mcp")
    from_env = claims({**clean_env(), "GATEHOUSE_PUBLIC_URL": "http://10.0.0.5:8200",
                       "GATEHOUSE_AUDIENCE": "api://gatehouse"})
    assert (from_env["iss"], from_env["aud"]) == ("http://10.0.0.5:8200/dev", "api://gatehouse")
    (tmp_path / ".env").write_text("GATEHOUSE_PUBLIC_URL=not a url\n")
    refused = gatehouse(tmp_path, "token", "--org", "acme", "--user", "alice")
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("gatehouse token: GATEHOUSE_PUBLIC_URL must be an http(s) "
                                      "base URL such as http://127.0.0.1:8000, not 'not a url'")


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
