"""The private PostgreSQL cluster of ``gatehouse up`` (binaries from the ``pgserver`` wheel)."""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from gateway.cli.embedded.common import (
    PG_PORT,
    PG_SUPERUSER,
    PG_SYSTEM_USER,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Handle,
    acquire_lock,
    log_tail,
    package_dir,
    pid_alive,
    process_state,
    register_exit_safety_net,
    release_lock,
    require_posix,
    short_socket_dir,
    socket_fits,
)
from gateway.errors import EmbeddedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _PgRunner:
    """Runs the bundled PostgreSQL programs, as ``pgserver`` when we are root."""

    bin_dir: Path
    uid: int
    gid: int

    @property
    def as_other_user(self) -> bool:
        return self.uid != os.geteuid()

    def run(
        self,
        program: str,
        args: list[str],
        *,
        pgdata: Path,
        timeout: float,
        as_server: bool,
        stdin: str | None = None,
        new_session: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run with a clean ``PG*`` environment, so a user's PGPORT or PGDATA cannot interfere."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.setdefault("LC_ALL", "C")
        drop = as_server and self.as_other_user
        with tempfile.TemporaryFile("w+") as out:
            # pg_ctl's child inherits our descriptors for a moment; a pipe here can hang
            # (pgserver notes the same), so output goes to a file.
            try:
                done = subprocess.run(
                    [str(self.bin_dir / program), *args],
                    input=stdin,
                    stdin=None if stdin is not None else subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                    cwd=pgdata,
                    timeout=timeout,
                    check=False,
                    start_new_session=new_session,
                    user=self.uid if drop else None,
                    group=self.gid if drop else None,
                    extra_groups=[] if drop else None,
                )
            except subprocess.TimeoutExpired:
                raise EmbeddedError(f"{program} did not finish within {timeout:.0f}s") from None
            out.seek(0)
            return subprocess.CompletedProcess(done.args, done.returncode, out.read(), "")


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A private PostgreSQL cluster; ``stop()`` shuts it down (fast mode)."""

    admin_url: str  # superuser DSN for asyncpg: postgresql://postgres@/db?host=/dir&port=5432
    pgdata: Path
    socket_dir: Path
    database: str
    _runner: _PgRunner = field(repr=False, compare=False)
    _handle: Handle = field(repr=False, compare=False)

    def app_url(self, role: str) -> str:
        """Same database and socket, as ``role`` (local connections use trust auth)."""
        return _pg_url(role, self.database, self.socket_dir)

    def stop(self) -> None:
        """Stop the server: fast shutdown (rolls back sessions), immediate if that stalls."""
        handle = self._handle
        if handle.stopped or handle.owner_pid != os.getpid():
            return  # already stopped, or a forked child that does not own the server
        handle.stopped = True
        try:
            for mode in ("fast", "immediate"):
                done = self._runner.run(
                    "pg_ctl",
                    ["stop", "-D", str(self.pgdata), "-m", mode, "-w", "-t", str(STOP_TIMEOUT)],
                    pgdata=self.pgdata,
                    timeout=STOP_TIMEOUT + 10,
                    as_server=True,
                )
                if done.returncode == 0:
                    log.info("embedded PostgreSQL stopped (%s)", self.pgdata)
                    return
                if not _postmaster_alive(self.pgdata):
                    log.warning("embedded PostgreSQL in %s had already exited", self.pgdata)
                    return
                log.warning("pg_ctl stop -m %s failed: %s", mode, done.stdout.strip())
            raise EmbeddedError(f"could not stop PostgreSQL in {self.pgdata}")
        finally:
            release_lock(handle)


def _postmaster_alive(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return pid_alive(pid)


def _pg_url(user: str, database: str, socket_dir: Path) -> str:
    return (
        f"postgresql://{quote(user, safe='')}@/{quote(database, safe='')}"
        f"?host={quote(str(socket_dir), safe='/')}&port={PG_PORT}"
    )


def _pg_runner() -> _PgRunner:
    bin_dir = package_dir("pgserver") / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise EmbeddedError(f"pgserver's PostgreSQL binaries are missing from {bin_dir}")
    if os.geteuid() != 0:
        return _PgRunner(bin_dir, os.geteuid(), os.getegid())
    entry = _ensure_system_user(PG_SYSTEM_USER)
    return _PgRunner(bin_dir, entry.pw_uid, entry.pw_gid)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """PostgreSQL refuses root, so root runs it as a dedicated unprivileged user."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    log.info("running as root: creating system user %r to own the PostgreSQL cluster", name)
    command = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        name,
    ]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
        return pwd.getpwnam(name)
    except (OSError, subprocess.CalledProcessError, KeyError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise EmbeddedError(
            f"PostgreSQL cannot run as root and creating the system user {name!r} failed "
            f"({detail}); create it yourself, or run as a non-root user"
        ) from exc


def root_notice(data_dir: Path) -> str | None:
    """What starting the cluster as root changes on the system, to say before doing it."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
        user = f"runs it as the existing system user {PG_SYSTEM_USER!r}"
    except KeyError:
        user = f"creates the system user {PG_SYSTEM_USER!r} (no login, no home) to run it"
    bin_dir = package_dir("pgserver") / "pginstall" / "bin"
    closed = _untraversable(data_dir.resolve()) + _untraversable(bin_dir)
    folders = (
        "adds o+x (others may traverse, not list) to " + ", ".join(map(str, closed))
        if closed else "changes no folder permissions (they are already traversable)"
    )
    return (
        f"running as root: PostgreSQL refuses to run as root, so Gatehouse {user}, gives it "
        f"{data_dir / 'postgres'}, and {folders}; to avoid this, run as a normal user or set "
        "GATEHOUSE_DATABASE_URL"
    )


def _untraversable(path: Path) -> list[Path]:
    return [d for d in [path, *path.parents] if d.exists() and not d.stat().st_mode & stat.S_IXOTH]


def running_admin_url(data_dir: Path, database: str = "gatehouse") -> str | None:
    """The superuser DSN of the cluster running in ``data_dir`` (under ``up``), if one is."""
    try:
        lines = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
        pid, socket_dir = int(lines[0]), lines[4].strip()
    except (OSError, ValueError, IndexError):
        return None
    if not socket_dir or not pid_alive(pid):
        return None
    return _pg_url(PG_SUPERUSER, database, Path(socket_dir))


def _grant_traverse(path: Path) -> None:
    """Let the ``pgserver`` user reach ``path``: add o+x (search, not list) to its ancestors."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.warning(
                "granting o+x on %s so user %r can reach the cluster", directory, PG_SYSTEM_USER
            )
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for base, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(os.path.join(base, name), uid, gid, follow_symlinks=False)


def _prepare_pgdata(pgdata: Path, runner: _PgRunner) -> None:
    try:
        pgdata.mkdir(mode=0o700)
        os.chown(pgdata, runner.uid, runner.gid)
    except FileExistsError:
        pass
    owner = pgdata.stat().st_uid
    if owner != runner.uid:
        if os.geteuid() != 0:
            raise EmbeddedError(
                f"{pgdata} belongs to uid {owner}, not to you (uid {runner.uid}); was it created "
                "by root? Run as the same user, or remove the directory"
            )
        log.warning("taking ownership of %s for user %r", pgdata, PG_SYSTEM_USER)
        _chown_tree(pgdata, runner.uid, runner.gid)
    pgdata.chmod(0o700)
    if runner.as_other_user:
        _grant_traverse(pgdata.parent)
        _grant_traverse(runner.bin_dir)


def _initdb(pgdata: Path, runner: _PgRunner) -> None:
    if (pgdata / "PG_VERSION").exists():
        return
    if any(pgdata.iterdir()):
        raise EmbeddedError(f"{pgdata} is neither empty nor a PostgreSQL cluster")
    log.info("creating PostgreSQL cluster in %s", pgdata)
    done = runner.run(
        "initdb",
        [
            "-D",
            str(pgdata),
            "-U",
            PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ],
        pgdata=pgdata,
        timeout=120,
        as_server=True,
    )
    if done.returncode != 0:
        raise EmbeddedError(f"initdb failed in {pgdata}:\n{done.stdout.strip()}")


def _running_socket_dir(pgdata: Path, runner: _PgRunner) -> Path | None:
    """The socket directory of a server still running on ``pgdata`` (an earlier run crashed).

    Returns None when there is none. A postmaster killed with SIGKILL stays a zombie until
    init reaps it, and while it does, both ``pg_ctl status`` and PostgreSQL's own lock-file
    check think it alive; so wait for the reaping, and remove the lock file only if it never
    comes (its children exit by themselves once they notice the postmaster is gone).
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    deadline = time.monotonic() + 10
    while process_state(pid) == "Z":
        if time.monotonic() > deadline:
            log.warning("postmaster %d is a zombie nobody reaps; removing %s", pid, pid_file)
            pid_file.unlink(missing_ok=True)
            return None
        time.sleep(0.1)
    if process_state(pid) is None:
        return None  # stale lock file: PostgreSQL itself replaces it on start
    if len(lines) < 5 or not lines[4].strip() or lines[3].strip() != str(PG_PORT):
        raise EmbeddedError(
            f"a PostgreSQL server not started by Gatehouse (pid {pid}) is running on {pgdata}; "
            "stop it first"
        )
    socket_dir = Path(lines[4].strip())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ready = runner.run(
            "pg_isready",
            ["-h", str(socket_dir), "-p", str(PG_PORT), "-t", "2"],
            pgdata=pgdata,
            timeout=10,
            as_server=False,
        )
        if ready.returncode == 0:
            return socket_dir
        if not pid_alive(pid):
            return None  # it was shutting down; start afresh
        time.sleep(0.2)  # starting up, recovering or shutting down
    raise EmbeddedError(
        f"process {pid} holds {pid_file} but PostgreSQL does not answer on {socket_dir}; "
        "if no PostgreSQL is running there, delete that file"
    )


def _pg_socket_dir(pgdata: Path, runner: _PgRunner) -> Path:
    if socket_fits(pgdata, f".s.PGSQL.{PG_PORT}"):
        return pgdata
    directory = short_socket_dir(pgdata, "pg", runner.uid, runner.gid)
    log.info("data directory path too long for a Unix socket; socket goes in %s", directory)
    return directory


def _pg_start(pgdata: Path, socket_dir: Path, runner: _PgRunner) -> None:
    options = [
        "-p",
        str(PG_PORT),
        "-c",
        "listen_addresses=",
        "-c",
        'unix_socket_directories="' + str(socket_dir).replace('"', '""') + '"',
        "-c",
        "unix_socket_permissions=0700",
    ]
    server_log = pgdata / "server.log"
    # pg_ctl passes -o through /bin/sh, hence the quoting. A session of its own keeps
    # Ctrl-C (SIGINT to the terminal's process group) away from the postmaster.
    args = [
        "start",
        "-D",
        str(pgdata),
        "-w",
        "-t",
        str(START_TIMEOUT),
        "-l",
        str(server_log),
        "-o",
        " ".join(shlex.quote(option) for option in options),
    ]
    for attempt in range(3):
        done = runner.run(
            "pg_ctl",
            args,
            pgdata=pgdata,
            timeout=START_TIMEOUT + 10,
            as_server=True,
            new_session=True,
        )
        if done.returncode == 0:
            return
        tail = log_tail(server_log)
        # After a kill -9 of the postmaster its children may still hold shared memory for a
        # moment; they exit once they notice the postmaster is gone, so retry briefly.
        if "still in use" in log_tail(server_log, 5) and attempt < 2:
            log.info("old PostgreSQL processes still exiting; retrying start")
            time.sleep(2)
            continue
        raise EmbeddedError(
            f"PostgreSQL failed to start in {pgdata}:\n{done.stdout.strip()}\n"
            f"--- {server_log} (tail) ---\n{tail}"
        )


def _create_database(socket_dir: Path, database: str, runner: _PgRunner) -> None:
    """Create ``database`` unless it exists; psql's \\gexec keeps the name safely quoted."""
    sql = (
        "SELECT format('CREATE DATABASE %I', :'dbname') "
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname') \\gexec\n"
    )
    done = runner.run(
        "psql",
        [
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"dbname={database}",
            "-h",
            str(socket_dir),
            "-p",
            str(PG_PORT),
            "-U",
            PG_SUPERUSER,
            "-d",
            "postgres",
        ],
        pgdata=socket_dir,
        timeout=60,
        as_server=False,
        stdin=sql,
    )
    if done.returncode != 0:
        raise EmbeddedError(f"could not create database {database!r}:\n{done.stdout.strip()}")


def start_postgres(data_dir: Path, database: str = "gatehouse") -> EmbeddedPostgres:
    """Start (or reuse) the cluster in ``data_dir/postgres`` and make sure ``database`` exists."""
    require_posix()
    try:
        return _start_postgres(data_dir, database)
    except OSError as exc:  # permissions, disk full, ...: say which server could not start
        raise EmbeddedError(f"cannot start the embedded PostgreSQL in {data_dir}: {exc}") from exc


def _start_postgres(data_dir: Path, database: str) -> EmbeddedPostgres:
    started = time.monotonic()
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    runner = _pg_runner()
    pgdata = data_dir / "postgres"
    lock_fd = acquire_lock(data_dir / "postgres.lock", "the embedded PostgreSQL")
    try:
        _prepare_pgdata(pgdata, runner)
        _initdb(pgdata, runner)
        socket_dir = _running_socket_dir(pgdata, runner)
        if socket_dir is not None:
            log.warning("adopting PostgreSQL still running on %s (left by an earlier run)", pgdata)
        else:
            socket_dir = _pg_socket_dir(pgdata, runner)
            _pg_start(pgdata, socket_dir, runner)
        _create_database(socket_dir, database, runner)
    except BaseException:
        os.close(lock_fd)
        raise
    server = EmbeddedPostgres(
        admin_url=_pg_url(PG_SUPERUSER, database, socket_dir),
        pgdata=pgdata,
        socket_dir=socket_dir,
        database=database,
        _runner=runner,
        _handle=Handle(lock_fd),
    )
    register_exit_safety_net(server.stop)
    log.info("embedded PostgreSQL ready in %.1fs: %s", time.monotonic() - started, server.admin_url)
    return server
