"""gatehouse: run the whole system on one machine (up) and operate it.

``up`` is the one command that runs everything on a laptop: with no database or Redis URL it
starts private ones under ``./.gatehouse/``, applies migrations, creates the internal-assertion
key pair and a development issuer, then runs gateway and mcp_server as child processes until
Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from gateway.cli import devissuer, devtoken, embedded, fleet, instance
from gateway.cli.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_GATEWAY_PORT,
    DEFAULT_HOST,
    DEFAULT_MCP_PORT,
    UpSettings,
    audience,
)
from gateway.cli.config import public_url as configured_public_url
from gateway.cli.supervisor import ChildSpec, Supervisor
from gateway.errors import LauncherError, SupervisorError
from oauth.keyring import Keyring, generate_entry
from oauth.keys import ensure_private_key_file, public_pem
from oauth.rotation import rotate
from sql import apply_migrations, set_app_password, verify_audit_chain

log = logging.getLogger("gatehouse")

APP_ROLE = "gatehouse_app"
GATEWAY_APP = "gateway.app:create_app"
MCP_SERVER_APP = "mcp_server.app:create_app"
METRICS_PORT = 9464  # mcp_server's /metrics under up: OpenTelemetry's Prometheus default


class _Parser(argparse.ArgumentParser):
    """A refused argument is one line on stderr and exit code 2 (argparse's code)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gatehouse", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="where up keeps its databases, keys and PID files, and where the "
                        "other commands find them (default: ./.gatehouse)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up", help="run gateway and mcp_server (embedded PostgreSQL and Redis unless configured)")
    up.add_argument("--host", default=DEFAULT_HOST,
                    help="address both servers listen on (default: 127.0.0.1)")
    up.add_argument("--gateway-port", type=_port, default=DEFAULT_GATEWAY_PORT,
                    help="the gateway's port, the one MCP clients use (default: 8000)")
    up.add_argument("--mcp-port", type=_port, default=DEFAULT_MCP_PORT,
                    help="mcp_server's port, reached only by the gateway (default: 8001)")
    up.add_argument("--replicas", type=_replicas, default=0, metavar="N",
                    help="run N gateways and N mcp_servers on free loopback ports behind HAProxy "
                    "(apt-get install haproxy), which then listens on --gateway-port and "
                    "--mcp-port")

    devtoken.add_parser(commands)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument(
        "--database-url", default=None, help="owner DSN (default: GATEHOUSE_ADMIN_DATABASE_URL)"
    )
    migrate.add_argument(
        "--app-password-env",
        metavar="VAR",
        help="also set the gatehouse_app role's password from this environment variable",
    )
    keys = commands.add_parser("keys", help="token-vault encryption keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser(
        "generate", help="print a new key entry to put first in GATEHOUSE_TOKEN_KEYS"
    )
    generate.add_argument("--id", required=True, dest="key_id", help="e.g. k2")
    rotate_cmd = keys_commands.add_parser(
        "rotate",
        help="re-encrypt every stored grant under the first key of GATEHOUSE_TOKEN_KEYS "
        "(resumable; needs a role that bypasses RLS)",
    )
    rotate_cmd.add_argument(
        "--database-url", default=None, help="default: GATEHOUSE_ADMIN_DATABASE_URL"
    )

    audit = commands.add_parser("audit", help="audit log tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check every organisation's hash chain; names the first broken row"
    )
    verify.add_argument(
        "--database-url",
        default=None,
        help="DSN of a role that bypasses RLS, e.g. the superuser "
        "(default: GATEHOUSE_ADMIN_DATABASE_URL)",
    )
    return parser


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, not {value!r}")
    return int(value)


def _replicas(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 32:
        raise argparse.ArgumentTypeError(f"replicas is a number from 1 to 32, not {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except LauncherError as exc:  # the operator's problem, said in their terms: no traceback
        print(f"gatehouse {args.command}: {exc.detail}", file=sys.stderr, flush=True)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "token":
        return devtoken.run(args)
    if args.command == "migrate":
        return _migrate(args)
    if args.command == "audit":
        return _audit_verify(args)
    if args.command == "keys":
        return _keys(args)
    return _up(args)


@contextmanager
def _admin_dsn(args: argparse.Namespace) -> Iterator[str | None]:
    """The configured owner DSN; else the embedded cluster of ``--data-dir``, started if need be.

    With ``up`` running its cluster is used as it is; otherwise it is started for the command
    and stopped after (its lock keeps an ``up`` starting meanwhile from driving it too).
    """
    dsn = args.database_url or UpSettings().admin_database_url
    data_dir: Path = args.data_dir
    if dsn or not (data_dir / "postgres" / "PG_VERSION").exists():
        if not dsn:
            print("set GATEHOUSE_ADMIN_DATABASE_URL or pass --database-url (no embedded "
                  f"cluster in {data_dir})", file=sys.stderr)
        yield dsn
        return
    running = embedded.running_admin_url(data_dir)
    if running is not None:
        log.info("using the embedded PostgreSQL of %s", data_dir)
        yield running
        return
    postgres = embedded.start_postgres(data_dir)
    try:
        yield postgres.admin_url
    finally:
        postgres.stop()


def _migrate(args: argparse.Namespace) -> int:
    with _admin_dsn(args) as dsn:
        return _migrate_with(args, dsn) if dsn else 2


def _migrate_with(args: argparse.Namespace, dsn: str) -> int:
    applied = asyncio.run(apply_migrations(dsn))
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    if args.app_password_env:
        asyncio.run(set_app_password(dsn, os.environ.get(args.app_password_env, "")))
        print("set the password of gatehouse_app")
    return 0


def _keys(args: argparse.Namespace) -> int:
    if args.keys_command == "generate":
        print(generate_entry(args.key_id))
        return 0
    config, source = _token_keys_config(UpSettings(), args.data_dir)
    if not config:
        print("set GATEHOUSE_TOKEN_KEYS (new key first, old keys after)", file=sys.stderr)
        return 2
    with _admin_dsn(args) as dsn:
        return _rotate(dsn, Keyring.parse(config), source) if dsn else 2


def _token_keys_config(settings: UpSettings, data_dir: Path) -> tuple[str | None, str]:
    """The keyring ``up`` gives mcp_server: GATEHOUSE_TOKEN_KEYS, else the data directory's."""
    if settings.token_keys:
        return settings.token_keys, "GATEHOUSE_TOKEN_KEYS"
    path = data_dir / "token_keys"
    return (path.read_text().strip() if path.exists() else None), str(path)


def _rotate(dsn: str, keyring: Keyring, source: str) -> int:
    with tqdm(desc=f"re-encrypting under {keyring.active_id}", unit="grant") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        rewritten = asyncio.run(rotate(dsn, keyring, progress))
    print(f"{rewritten} grant(s) re-encrypted; keys other than {keyring.active_id} "
          f"can now be removed from {source}")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    with _admin_dsn(args) as dsn:
        if not dsn:
            return 2
        report = asyncio.run(verify_audit_chain(dsn))
    if report.first_break is not None:
        org_id, seq = report.first_break
        print(f"audit chain BROKEN: organisation {org_id!r}, first broken row seq={seq} "
              f"({report.broken_rows} row(s) fail verification)")
        return 1
    print(f"audit chain intact: {report.rows} row(s) in {report.organizations} organization(s)")
    return 0


def _up(args: argparse.Namespace) -> int:
    settings = UpSettings()
    haproxy = fleet.haproxy_path()
    if args.replicas and haproxy is None:
        print(f"gatehouse up: {fleet.INSTALL_HINT}", file=sys.stderr, flush=True)
        return 2
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        public_url = configured_public_url(settings, args.host, args.gateway_port)
    except ValueError as exc:
        raise LauncherError(str(exc)) from None
    with ExitStack() as stack:
        # Both checks come before anything starts, so a refused `up` leaves nothing behind.
        stack.callback(os.close, instance.hold_lock(data_dir))
        instance.check_ports_free(
            args.host, {"--gateway-port": args.gateway_port, "--mcp-port": args.mcp_port})
        # a fleet gives each mcp_server replica a metrics port of its own
        metrics = {} if args.replicas else {"GATEHOUSE_METRICS_PORT": _metrics_port(settings)}
        env = _environment(settings, data_dir, stack, public_url, args) | metrics
        supervisor = Supervisor(data_dir)
        supervisor.install_signal_handlers()
        stack.callback(supervisor.stop)
        drain = settings.shutdown_drain_seconds
        started: fleet.Layout | int | None
        if args.replicas:
            assert haproxy is not None
            started = _start_fleet(supervisor, args, env, (data_dir, haproxy, drain))
        else:
            started = _start_children(supervisor, args, env, drain)
        if isinstance(started, int):
            return started
        instance.publish(data_dir, instance.Running(
            os.getpid(), public_url, env.get("GATEHOUSE_ISSUER", settings.issuer or ""),
            audience(settings, public_url), settings.issuer is None))
        stack.callback(instance.withdraw, data_dir)
        metrics_host = _probe_host(settings.metrics_host)
        if started is None:
            layout, urls = None, _metrics_urls(args, env, metrics_host)
        else:
            layout = fleet.banner(started, public_url, _probe_host(args.host),
                                  data_dir / "haproxy.cfg")
            urls = fleet.metrics_urls(started, metrics_host)
        _banner(public_url, env, settings.issuer is None, args.data_dir, layout, urls)
        return supervisor.run()


def _environment(
    settings: UpSettings, data_dir: Path, stack: ExitStack, public_url: str,
    args: argparse.Namespace,
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(_database(settings, data_dir, stack))
    env.update(_redis(settings, data_dir, stack))
    env.update(_internal_keys(settings, data_dir))
    env.update(_token_keys(settings, data_dir))
    env.update(_issuer(settings, data_dir, public_url))
    env["GATEHOUSE_PUBLIC_URL"] = public_url
    env["GATEHOUSE_MCP_SERVER_URL"] = f"http://{args.host}:{args.mcp_port}/mcp"
    env.setdefault("GATEHOUSE_LOG_FORMAT", "console")  # a terminal, not a log shipper
    return env


def _metrics_port(settings: UpSettings) -> str:
    """GATEHOUSE_METRICS_PORT as the operator set it (0: off), else 9464 if free, else any."""
    if settings.metrics_port is None:
        return str(instance.port_or_free(settings.metrics_host, METRICS_PORT))
    if settings.metrics_port:  # refused now rather than by a crash-looping mcp_server
        instance.check_ports_free(settings.metrics_host,
                                  {"GATEHOUSE_METRICS_PORT": settings.metrics_port},
                                  "GATEHOUSE_METRICS_HOST")
    return str(settings.metrics_port)


def _metrics_urls(args: argparse.Namespace, env: dict[str, str], metrics_host: str,
                  ) -> dict[str, str]:
    port = env["GATEHOUSE_METRICS_PORT"]
    return {
        "gateway": f"http://{_probe_host(args.host)}:{args.gateway_port}/metrics",
        "mcp_server": (f"http://{metrics_host}:{port}/metrics" if port != "0"
                       else "off (GATEHOUSE_METRICS_PORT=0)"),
    }


def _start_children(
    supervisor: Supervisor, args: argparse.Namespace, env: dict[str, str], drain: int
) -> int | None:
    """Start mcp_server, then the gateway; None once both are healthy, else `up`'s exit code.

    mcp_server first: the gateway must not take MCP traffic before its upstream listens.
    """
    return _start_tiers(supervisor, [
        [_child("mcp_server", MCP_SERVER_APP, args.host, args.mcp_port, env, drain)],
        [_child("gateway", GATEWAY_APP, args.host, args.gateway_port, env, drain)],
    ])


def _start_fleet(
    supervisor: Supervisor, args: argparse.Namespace, env: dict[str, str],
    where: tuple[Path, str, int],
) -> fleet.Layout | int:
    """The mcp_servers, HAProxy, the gateways; the layout once HAProxy has every replica in
    rotation, else `up`'s exit code."""
    data_dir, haproxy, drain = where
    layout = fleet.plan(args.host, args.gateway_port, args.mcp_port, args.replicas)
    failed = _start_tiers(supervisor, [
        [_replica(name, MCP_SERVER_APP, port,
                  fleet.replica_env(env, layout.mcp_metrics[name]), drain)
         for name, port in layout.mcp_servers.items()],
        [fleet.haproxy_spec(layout, data_dir, haproxy)],
        [_replica(name, GATEWAY_APP, port, fleet.replica_env(env), drain)
         for name, port in layout.gateways.items()],
    ])
    if failed is not None:
        return failed
    if fleet.in_rotation(layout, stopping=lambda: supervisor.stopping):
        return layout
    if supervisor.stopping:
        return 0
    log.error("HAProxy did not put every replica in rotation within %.0fs; see %s",
              fleet.ROTATION_TIMEOUT, layout.stats_url)
    return 1


def _start_tiers(supervisor: Supervisor, tiers: list[list[ChildSpec]]) -> int | None:
    for tier in tiers:
        try:
            if not supervisor.start(*tier):
                return 0  # Ctrl-C during start-up
        except SupervisorError as exc:
            log.error("%s", exc)
            return 1
    return None


def _database(settings: UpSettings, data_dir: Path, stack: ExitStack) -> dict[str, str]:
    if settings.database_url:
        if settings.admin_database_url:
            asyncio.run(apply_migrations(settings.admin_database_url))
        return {}
    notice = embedded.root_notice(data_dir)
    if notice:
        log.warning("%s", notice)
    postgres = embedded.start_postgres(data_dir)
    stack.callback(postgres.stop)
    applied = asyncio.run(apply_migrations(postgres.admin_url))
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return {"GATEHOUSE_DATABASE_URL": postgres.app_url(APP_ROLE)}


def _redis(settings: UpSettings, data_dir: Path, stack: ExitStack) -> dict[str, str]:
    if settings.redis_url:
        return {}
    redis = embedded.start_redis(data_dir)
    stack.callback(redis.stop)
    return {"GATEHOUSE_REDIS_URL": redis.url}


def _internal_keys(settings: UpSettings, data_dir: Path) -> dict[str, str]:
    if settings.internal_key_file:
        return {}
    private = data_dir / "internal_assertion.pem"
    public = data_dir / "internal_assertion.pub"
    key = ensure_private_key_file(private)
    public.write_bytes(public_pem(key))
    return {
        "GATEHOUSE_INTERNAL_KEY_FILE": str(private),
        "GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE": str(public),
    }


def _token_keys(settings: UpSettings, data_dir: Path) -> dict[str, str]:
    """The token vault's keyring; in development, one generated key kept in ``.gatehouse/``."""
    if settings.token_keys:
        return {}
    path = data_dir / "token_keys"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_entry("k1"))
    return {"GATEHOUSE_TOKEN_KEYS": path.read_text().strip()}


def _issuer(settings: UpSettings, data_dir: Path, public_url: str) -> dict[str, str]:
    if settings.issuer:
        return {}
    key_file = data_dir / "dev_issuer.pem"
    devissuer.ensure_key(key_file)
    return {
        "GATEHOUSE_ISSUER": devissuer.dev_issuer(public_url),
        "GATEHOUSE_JWKS_URL": devissuer.dev_jwks_url(public_url),
        "GATEHOUSE_DEV_ISSUER_KEY_FILE": str(key_file),
    }


def _child(
    name: str, factory: str, host: str, port: int, env: dict[str, str], drain: int,
    stop_signal: int = signal.SIGTERM, *, prefixed: bool = False,
) -> ChildSpec:
    command = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", host,
               "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", str(drain)]
    # Probed where it listens, not at the public URL (which may be a proxy in front of it).
    return ChildSpec(name, command, env, f"http://{_probe_host(host)}:{port}/healthz",
                     stop_signal=stop_signal, prefixed=prefixed)


def _replica(name: str, factory: str, port: int, env: dict[str, str], drain: int) -> ChildSpec:
    # SIGINT: up stops the whole fleet, so no balancer needs the SIGTERM readiness grace.
    # Prefixed: N replicas share one terminal.
    return _child(name, factory, "127.0.0.1", port, env, drain, signal.SIGINT, prefixed=True)


def _probe_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):  # noqa: S104 (a wildcard bind is reachable on loopback)
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _token_command(data_dir: Path) -> str:
    """The exact command for this stack: ``token`` finds its URL through the data directory."""
    if data_dir == DEFAULT_DATA_DIR:
        return "gatehouse token --org acme --user alice"
    return f"gatehouse --data-dir {shlex.quote(str(data_dir))} token --org acme --user alice"


def _banner(public_url: str, env: dict[str, str], dev_issuer: bool, data_dir: Path,
            layout: list[str] | None, metrics: dict[str, str]) -> None:
    lines = layout or [
        "",
        "Gatehouse is running.",
        f"  gateway     {public_url}  (MCP endpoint: {public_url}/mcp)",
        f"  mcp_server  {env['GATEHOUSE_MCP_SERVER_URL']}  (internal)",
    ]
    width = max(map(len, metrics))
    lines += [f"  {'' if i else 'metrics':<12}{name:<{width}}  {url}"
              for i, (name, url) in enumerate(metrics.items())]
    if dev_issuer:
        lines += [
            f"  issuer      development issuer (keys in {data_dir}/)",
            "",
            f"Get a token:   {_token_command(data_dir)}",
            f"Use it:        Authorization: Bearer <token>  against {public_url}/mcp",
            f"Or by URL:     give any MCP client {public_url}/mcp; it signs in through the",
            f"               development issuer ({public_url}/dev, OAuth 2.1, no password)",
        ]
    lines += ["", "Press Ctrl-C to stop.", ""]
    print("\n".join(lines), flush=True)
