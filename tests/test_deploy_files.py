"""The deployment files parse with the real tools and keep their promises.

docker/compose.yaml goes through docker-compose's own parser (its normalised output is then
read back), docker/haproxy.cfg through HAProxy, docker/prometheus.yml through promtool, and the
Helm chart is rendered by Helm's Go engine (PyPI ``helm-python-sdk``, Helm v4) and every
manifest validated against the Kubernetes schemas (PyPI ``kubernetes-validate``). No Docker
engine or cluster is needed. ``.ci/run`` installs the tools; a missing one fails with a hint.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python as helm
import httpx
import kubernetes_validate
import pytest
import yaml

from oauth.keyring import Keyring
from oauth.keys import load_private_key, load_public_key
from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server, free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
CHART = DOCKER / "helm" / "gatehouse"
METRICS_PORT = 9464  # mcp_server's /metrics listener in compose and the chart
# The oldest Kubernetes still commonly run and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
IDP_ENV = {
    "GATEHOUSE_ISSUER": "https://idp.example.com/",
    "GATEHOUSE_JWKS_URL": "https://idp.example.com/jwks.json",
}
CHART_SECRETS = {
    "internalAssertionPrivateKey": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
    "internalAssertionPublicKey": "-----BEGIN PUBLIC KEY-----\ny\n-----END PUBLIC KEY-----\n",
    "tokenKeys": "k1:AAAA",
    "appDatabasePassword": "app-password",
    "adminDatabaseUrl": "postgresql://postgres:owner-password@db:5432/gatehouse",
}

Manifest = dict[str, Any]


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (.ci/run does)")
    return path


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env
    )


# --- docker compose -------------------------------------------------------------------------


def _compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose itself resolves it (anchors, merges, variables)."""
    binary = _tool("docker-compose", "docker-compose")
    argv = [binary, "-f", str(DOCKER / "compose.yaml")]
    quiet = _run([*argv, "config", "-q"], _compose_env(**IDP_ENV))
    assert quiet.returncode == 0, quiet.stderr
    resolved = _run([*argv, "config"], _compose_env(**IDP_ENV))
    assert resolved.returncode == 0, resolved.stderr
    parsed: dict[str, Any] = yaml.safe_load(resolved.stdout)
    return parsed


def _services(compose: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = {name: s for name, s in compose["services"].items() if name.startswith(prefix)}
    assert found, f"no {prefix}* service"
    return found


def _secret_sources(service: dict[str, Any]) -> set[str]:
    return {s["source"] for s in service.get("secrets", [])}


def _secret_targets(service: dict[str, Any]) -> set[str]:
    return {s.get("target", s["source"]) for s in service.get("secrets", [])}


def test_compose_has_the_whole_fleet(compose: dict[str, Any]) -> None:
    names = set(compose["services"])
    assert {"postgres", "redis", "migrate", "haproxy", "prometheus"} <= names
    assert {"gateway-1", "gateway-2", "mcp-server-1", "mcp-server-2"} <= names
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["gatehouse", "migrate", "--app-password-env", "APP_DB_PASSWORD"]
    assert migrate["environment"]["GATEHOUSE_ADMIN_DATABASE_URL"].startswith("postgresql://")
    assert _secret_targets(migrate) == {"PGPASSWORD", "APP_DB_PASSWORD"}
    app = {**_services(compose, "gateway-"), **_services(compose, "mcp-server-")}
    for name, service in app.items():
        migrate_done = service["depends_on"]["migrate"]["condition"]
        assert migrate_done == "service_completed_successfully", name
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"], name
        assert service["cap_drop"] == ["ALL"], name


def test_compose_gives_key_material_only_to_its_process(compose: dict[str, Any]) -> None:
    for name, gateway in _services(compose, "gateway-").items():
        assert _secret_sources(gateway) == {"internal_assertion.pem", "app_db_password"}, name
        env = gateway["environment"]
        assert env["GATEHOUSE_INTERNAL_KEY_FILE"] == "/run/secrets/internal_assertion.pem"
        assert env["GATEHOUSE_MCP_SERVER_URL"] == "http://mcp-server:8001/mcp"
        assert not any("TOKEN_KEYS" in key for key in env)
    for name, server in _services(compose, "mcp-server-").items():
        assert _secret_sources(server) == {
            "internal_assertion.pub", "token_keys", "app_db_password"
        }, name
        assert "GATEHOUSE_TOKEN_KEYS" in _secret_targets(server)
        env = server["environment"]
        assert env["GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE"] == "/run/secrets/internal_assertion.pub"
        assert "GATEHOUSE_INTERNAL_KEY_FILE" not in env
    for service in compose["services"].values():
        for value in (service.get("environment") or {}).values():
            assert not re.search(r"://[^/@:]+:[^/@]+@", str(value)), value  # no password in a DSN


def test_compose_healthchecks_probe_readiness(compose: dict[str, Any]) -> None:
    for name, gateway in _services(compose, "gateway-").items():
        assert "/readyz" in " ".join(gateway["healthcheck"]["test"]), name
    for name, server in _services(compose, "mcp-server-").items():
        assert "/healthz" in " ".join(server["healthcheck"]["test"]), name
    for name in ("postgres", "redis"):
        assert compose["services"][name]["healthcheck"]["test"], name


def _seconds(duration: str) -> float:
    """A HAProxy or compose duration (``500ms``, ``2s``, ``1m30s``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def _drain_seconds(command: list[str]) -> int:
    return int(command[command.index("--timeout-graceful-shutdown") + 1])


def test_compose_replicas_leave_haproxy_then_drain_within_the_stop_grace_period(
    compose: dict[str, Any],
) -> None:
    """SIGTERM: the checked probe answers 503 for longer than HAProxy needs to take the replica
    out (inter x fall), then uvicorn drains, then the audit flush: all before Docker's SIGKILL."""
    defaults = re.search(r"^\s*default-server (.*)$", (DOCKER / "haproxy.cfg").read_text(), re.M)
    assert defaults, "docker/haproxy.cfg has no default-server line"
    options = defaults[1].split()
    detection = _seconds(options[options.index("inter") + 1]) * int(
        options[options.index("fall") + 1])
    replicas = _services(compose, "gateway-") | _services(compose, "mcp-server-")
    assert len(replicas) == 4
    for name, service in replicas.items():
        grace = float(service["environment"]["GATEHOUSE_SHUTDOWN_GRACE_SECONDS"])
        drain = _drain_seconds(service["command"])
        assert grace > detection, (name, grace, detection)
        assert drain > 0, name
        assert _seconds(service["stop_grace_period"]) >= grace + drain + 5, name


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Bind mounts as docker-compose resolves them: container path -> (host path, mode)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, mode = volume.split(":")
        found[target] = (source, mode)
    return found


def test_compose_serves_mcp_server_metrics_on_the_backend_only(compose: dict[str, Any]) -> None:
    """mcp_server's /metrics listener is on every replica, reachable on the backend network
    (Prometheus) and published nowhere."""
    for name, server in _services(compose, "mcp-server-").items():
        env = server["environment"]
        assert env["GATEHOUSE_METRICS_PORT"] == str(METRICS_PORT), name
        assert env["GATEHOUSE_METRICS_HOST"] == "0.0.0.0", name  # not loopback: Prometheus
        assert str(METRICS_PORT) in server["expose"], name
        assert "ports" not in server, name
        assert set(server["networks"]) == {"backend"}, name


def test_compose_grafana_is_provisioned_from_the_repository(compose: dict[str, Any]) -> None:
    """Grafana's provisioning reaches the Prometheus service and loads the dashboards from
    where compose mounts them; its port is published on loopback only."""
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == (str(DOCKER / "grafana" / "provisioning"), "ro")
    (source,) = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"]
    url = httpx.URL(source["url"])
    prometheus = compose["services"]["prometheus"]
    assert url.host == "prometheus" and set(grafana["networks"]) <= set(prometheus["networks"])
    assert any(p.endswith(f":{url.port}/tcp") for p in prometheus["ports"])
    (provider,) = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/gatehouse.yaml").read_text())["providers"]
    dashboards, mode = mounts[provider["options"]["path"]]
    assert mode == "ro" and (Path(dashboards) / "gatehouse.json").is_file()
    assert grafana["ports"] and all(p.startswith("127.0.0.1:") for p in grafana["ports"])
    assert grafana["read_only"] is True and grafana["cap_drop"] == ["ALL"]


def test_compose_refuses_to_run_without_an_identity_provider() -> None:
    binary = _tool("docker-compose", "docker-compose")
    result = _run([binary, "-f", str(DOCKER / "compose.yaml"), "config", "-q"], _compose_env())
    assert result.returncode != 0
    assert "GATEHOUSE_ISSUER" in result.stderr


def test_compose_runs_what_the_code_serves(compose: dict[str, Any]) -> None:
    """The commands name the real factories and console script of the current code."""
    import gateway.app
    import mcp_server.app

    assert callable(gateway.app.create_app) and callable(mcp_server.app.create_app)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gatehouse"] == "gateway.cli:main"
    gw = compose["services"]["gateway-1"]["command"]
    mcp = compose["services"]["mcp-server-1"]["command"]
    assert gw[:3] == ["uvicorn", "--factory", "gateway.app:create_app"]
    assert mcp[:3] == ["uvicorn", "--factory", "mcp_server.app:create_app"]


# --- the image ------------------------------------------------------------------------------


def _dockerignore() -> set[str]:
    return {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def test_dockerfile_builds_every_package_and_runs_unprivileged() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "\nCOPY . .\n" in dockerfile  # the context, filtered by .dockerignore
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    ignored = _dockerignore()
    needed = [p.rstrip("*") for p in include] + ["pyproject.toml", "README.md",
                                                 "docker/entrypoint.sh", "docker"]
    for path in needed:
        assert path not in ignored and not path.startswith(tuple(ignored)), path
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["/usr/local/bin/gatehouse-entrypoint"]' in dockerfile
    assert '"--factory", "gateway.app:create_app"' in dockerfile


def test_dockerignore_keeps_local_state_out_of_the_build() -> None:
    patterns = _dockerignore()
    for required in (".venv", ".gatehouse", ".git", "node_modules", "tests/idp/node_modules",
                     "tests/conformance/node_modules", "docker/secrets", ".env"):
        assert required in patterns, required
    assert "README.md" not in patterns  # pyproject's readme, needed by the build


def test_entrypoint_turns_upper_case_secret_files_into_variables(tmp_path: Path) -> None:
    (tmp_path / "GATEHOUSE_TOKEN_KEYS").write_text("k1:abc=\n")
    (tmp_path / "PGPASSWORD").write_text("p a$s")
    (tmp_path / "internal_assertion.pem").write_text("not an environment variable")
    env = {"PATH": os.environ["PATH"], "GATEHOUSE_SECRETS_DIR": str(tmp_path)}
    result = _run(["sh", str(DOCKER / "entrypoint.sh"), "env"], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "GATEHOUSE_TOKEN_KEYS=k1:abc=" in lines
    assert "PGPASSWORD=p a$s" in lines
    assert not any("internal_assertion" in line for line in lines)


def test_init_secrets_makes_keys_the_processes_load(tmp_path: Path) -> None:
    _tool("openssl", "openssl")
    target = tmp_path / "secrets"
    result = _run(["sh", str(DOCKER / "init-secrets.sh"), str(target)])
    assert result.returncode == 0, result.stderr
    private = load_private_key((target / "internal_assertion.pem").read_bytes())
    public = load_public_key((target / "internal_assertion.pub").read_bytes())
    assert private.public_key().public_bytes_raw() == public.public_bytes_raw()
    assert Keyring.parse((target / "token_keys").read_text()).active_id == "k1"
    assert (target / "app_db_password").read_text() != (target / "postgres_password").read_text()
    assert target.stat().st_mode & 0o077 == 0
    before = (target / "token_keys").read_text()
    assert _run(["sh", str(DOCKER / "init-secrets.sh"), str(target)]).returncode == 0
    assert (target / "token_keys").read_text() == before  # re-running never rotates a key


@pytest.fixture(scope="module")
def container_root() -> Iterator[Path]:
    """Secrets from init-secrets.sh in a folder outside pytest's tmp (which the read-only
    namespace below would not hide, but keeps paths short)."""
    root = Path(tempfile.mkdtemp(prefix="gatehouse-deploy-"))
    result = _run(["sh", str(DOCKER / "init-secrets.sh"), str(root / "secrets")])
    assert result.returncode == 0, result.stderr
    yield root
    shutil.rmtree(root, ignore_errors=True)


# In a private mount namespace: the root filesystem read-only, a tmpfs as the only writable
# place (as compose's read_only + tmpfs and the chart's readOnlyRootFilesystem + emptyDir).
_READ_ONLY = 'mount -o remount,bind,ro / && mount -t tmpfs -o size=64m tmpfs "$TMPDIR" && exec "$@"'


def _as_container(
    service: dict[str, Any], env: dict[str, str], root: Path, name: str
) -> Server:
    """Run a compose service's command through the image's entrypoint on a read-only root
    filesystem, with its compose secrets (and only those) as files."""
    unshare = _tool("unshare", "util-linux")
    secrets = root / name
    secrets.mkdir()
    for secret in service["secrets"]:
        shutil.copyfile(root / "secrets" / secret["source"],
                        secrets / secret.get("target", secret["source"]))
    scratch = root / f"{name}-tmp"
    scratch.mkdir()
    port = free_port()
    command = list(service["command"])
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    full_env = {
        **{k: v.replace("/run/secrets", str(secrets)) for k, v in env.items()},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": "/nonexistent", "TMPDIR": str(scratch), "PYTHONDONTWRITEBYTECODE": "1",
        "GATEHOUSE_SECRETS_DIR": str(secrets),
    }
    namespace = [unshare, "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    argv = [*namespace, "sh", "-c", _READ_ONLY, "sh", "sh", str(DOCKER / "entrypoint.sh"),
            *command]
    log = root / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=full_env, cwd=root, stdout=out, stderr=out)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    wait_healthy(server)
    return server


def _compose_env_for(
    service: dict[str, Any], overrides: dict[str, str]
) -> dict[str, str]:
    env: dict[str, str] = {k: str(v) for k, v in service["environment"].items()}
    assert set(overrides) <= set(env), set(overrides) - set(env)  # names the compose file sets
    return {**env, **overrides}


def test_compose_services_run_on_a_read_only_filesystem_with_their_secrets(
    compose: dict[str, Any], container_root: Path, database: Database, redis_url: str,
    idp: OidcProvider,
) -> None:
    """mcp_server and gateway as compose defines them (commands, settings, secret files via the
    entrypoint), addresses swapped for loopback, on a read-only root filesystem: both start,
    the gateway is ready and nothing tried to write."""
    services = compose["services"]
    data = {"GATEHOUSE_DATABASE_URL": database.app_url, "GATEHOUSE_REDIS_URL": redis_url}
    metrics_port = free_port()
    server = _as_container(
        services["mcp-server-1"],
        _compose_env_for(services["mcp-server-1"], {
            **data, "GATEHOUSE_METRICS_HOST": "127.0.0.1",
            "GATEHOUSE_METRICS_PORT": str(metrics_port),
        }),
        container_root, "mcp-server",
    )
    gateway_port_env = {
        **data, "GATEHOUSE_MCP_SERVER_URL": server.url + "/mcp",
        "GATEHOUSE_ISSUER": idp.issuer, "GATEHOUSE_JWKS_URL": idp.jwks_url,
        "GATEHOUSE_AUDIENCE": idp.audience,
    }
    gateway = None
    try:
        gateway = _as_container(
            services["gateway-1"], _compose_env_for(services["gateway-1"], gateway_port_env),
            container_root, "gateway",
        )
        ready = httpx.get(gateway.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert all(check["ok"] for check in ready.json()["checks"].values())
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert "mcp_server_operation_duration_seconds" in scraped.text
        on_mcp_port = httpx.get(server.url + "/metrics", timeout=10)  # needs an assertion
        assert on_mcp_port.status_code == 401 and "mcp_server_" not in on_mcp_port.text
    finally:
        for process in (gateway, server):
            if process is not None:
                process.stop()
    for process in (gateway, server):
        assert process is not None
        log = process.log_text()
        assert "Traceback" not in log and "Read-only file system" not in log, log


# --- HAProxy and Prometheus -----------------------------------------------------------------


def test_haproxy_accepts_its_config_without_dns() -> None:
    result = _run([_tool("haproxy", "haproxy"), "-c", "-f", str(DOCKER / "haproxy.cfg")])
    assert result.returncode == 0, result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


def test_haproxy_rejects_a_broken_config(tmp_path: Path) -> None:
    """The check above can fail: the same config with a typo is refused."""
    broken = tmp_path / "haproxy.cfg"
    broken.write_text((DOCKER / "haproxy.cfg").read_text().replace("balance leastconn", "balanse"))
    result = _run([_tool("haproxy", "haproxy"), "-c", "-f", str(broken)])
    assert result.returncode != 0


def _haproxy_sections() -> dict[str, str]:
    sections: dict[str, str] = {}
    current = ""
    for line in (DOCKER / "haproxy.cfg").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            current = line.strip()
            sections[current] = ""
        elif current:
            sections[current] += line.strip() + "\n"
    return sections


def test_haproxy_balances_every_replica_with_health_checks(compose: dict[str, Any]) -> None:
    sections = _haproxy_sections()
    gateways, servers = sections["backend gateways"], sections["backend mcp_servers"]
    assert "http-check send meth GET uri /readyz" in gateways
    assert "http-check send meth GET uri /healthz" in servers
    for name in _services(compose, "gateway-"):
        assert f"server {name} {name}:8000" in gateways
    for name in _services(compose, "mcp-server-"):
        assert f"server {name} {name}:8001" in servers
    assert "init-addr libc,none" in sections["defaults"]
    aliases = compose["services"]["haproxy"]["networks"]["backend"]["aliases"]
    assert "mcp-server" in aliases  # the one name gateways use


def test_prometheus_config_is_valid_and_scrapes_every_replica(compose: dict[str, Any]) -> None:
    """promtool checks the config and the rule files it names (a missing one fails it)."""
    result = _run([_tool("promtool", "prometheus"), "check", "config",
                   str(DOCKER / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", result.stdout), result.stdout
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert [(DOCKER / f).resolve() for f in config["rule_files"]] == [
        DOCKER / "prometheus" / "alerts.yml"
    ]
    targets = {
        job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]}
        for job in config["scrape_configs"]
    }
    assert targets["gateway"] == {f"{n}:8000" for n in _services(compose, "gateway-")}
    assert targets["mcp_server"] == {
        f"{n}:{METRICS_PORT}" for n in _services(compose, "mcp-server-")
    }


def test_prometheus_service_mounts_the_rules_where_its_config_finds_them(
    compose: dict[str, Any],
) -> None:
    """Relative rule_files resolve against the config file's folder, in the container too."""
    prometheus = compose["services"]["prometheus"]
    assert "command" not in prometheus  # the image's --config.file, below
    mounts = _mounts(prometheus)
    config_file = "/etc/prometheus/prometheus.yml"
    assert mounts[config_file] == (str(DOCKER / "prometheus.yml"), "ro")
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        in_container = str(PurePosixPath(config_file).parent / rule_file)
        assert mounts[in_container] == (str((DOCKER / rule_file).resolve()), "ro"), rule_file


# --- Helm -----------------------------------------------------------------------------------


def _render(values: dict[str, Any]) -> list[Manifest]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="gh", namespace="gatehouse")
    manifests: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            manifests += [doc for doc in yaml.safe_load_all(text) if doc]
    return manifests


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return _render({"secrets": CHART_SECRETS})


def _kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    found = {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}
    assert found, f"no {kind}"
    return found


def _pod_specs(manifests: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        if m["kind"] in ("Deployment", "Job"):
            yield m["metadata"]["name"], m["spec"]["template"]["spec"]


def test_chart_lints_clean() -> None:
    report = helm.lint(str(CHART), values={"secrets": CHART_SECRETS})
    assert report["errors"] == [], report
    assert all(m["severity"] <= 1 for m in report["messages"]), report  # info only


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid_kubernetes(manifests: list[Manifest], version: str) -> None:
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "Job", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    errors = []
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{manifest['kind']} {manifest['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_chart_with_secrets_managed_elsewhere_is_valid() -> None:
    """secrets.create false: no Secret is rendered, the pods and the Job use the named ones."""
    existing = {"create": False, "existingGatewaySecret": "gw", "existingMcpServerSecret": "mcp",
                "existingMigrationSecret": "mig"}
    fixed = {"enabled": False, "minReplicas": 1, "maxReplicas": 2,
             "targetCPUUtilizationPercentage": 50}
    manifests = _render({"secrets": existing, "gateway": {"autoscaling": fixed}})
    assert not [m for m in manifests if m["kind"] == "Secret"]
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSIONS[-1], strict=True)
    used = {name for _, spec in _pod_specs(manifests)
            for name, _ in _secret_keys_used(spec)}
    assert used == {"gw", "mcp", "mig"}
    assert _kind(manifests, "Deployment")["gh-gatehouse-gateway"]["spec"]["replicas"] == 2


def test_values_schema_rejects_bad_values() -> None:
    with pytest.raises(helm.HelmError, match="replicas"):
        _render({"secrets": CHART_SECRETS, "gateway": {"replicas": "two"}})
    with pytest.raises(helm.HelmError, match="unknownSetting"):
        _render({"secrets": CHART_SECRETS, "unknownSetting": 1})
    with pytest.raises(helm.HelmError, match="tokenKeys"):
        _render({"secrets": {k: v for k, v in CHART_SECRETS.items() if k != "tokenKeys"}})
    with pytest.raises(helm.HelmError, match="metricsPort"):
        _render({"secrets": CHART_SECRETS, "mcpServer": {"metricsPort": 0}})
    with pytest.raises(helm.HelmError, match="podSelectr"):  # a typo would allow everyone
        _render({"secrets": CHART_SECRETS, "networkPolicy": {"metricsFrom": [
            {"podSelectr": {"matchLabels": {"app": "prometheus"}}}]}})


def test_pods_drain_within_their_termination_grace_period(manifests: list[Manifest]) -> None:
    """preStop (endpoints catch up), the readiness grace (GATEHOUSE_SHUTDOWN_GRACE_SECONDS, in
    each process's ConfigMap), uvicorn's drain and 5 s to flush fit before the kubelet's kill."""
    configs = _kind(manifests, "ConfigMap")
    deployments = _kind(manifests, "Deployment")
    assert len(deployments) == 2
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        (source,) = container["envFrom"]
        grace = float(configs[source["configMapRef"]["name"]]["data"][
            "GATEHOUSE_SHUTDOWN_GRACE_SECONDS"])
        drain = _drain_seconds(container["args"])
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep", name
        assert (float(sleep[1]), grace, drain) == (5, 2, 20), name
        assert spec["terminationGracePeriodSeconds"] >= float(sleep[1]) + grace + drain + 5, name


def test_chart_refuses_a_termination_grace_period_shorter_than_the_shutdown() -> None:
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds must be at least 32"):
        _render({"secrets": CHART_SECRETS, "terminationGracePeriodSeconds": 31})
    longer = {"preStopSeconds": 10, "graceSeconds": 2.5, "drainSeconds": 60}
    with pytest.raises(helm.HelmError, match="at least 78"):
        _render({"secrets": CHART_SECRETS, "shutdown": longer})
    rendered = _render({"secrets": CHART_SECRETS, "shutdown": longer,
                        "terminationGracePeriodSeconds": 78})
    for deployment in _kind(rendered, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert _drain_seconds(container["args"]) == 60
    assert {c["data"]["GATEHOUSE_SHUTDOWN_GRACE_SECONDS"]
            for c in _kind(rendered, "ConfigMap").values()} == {"2.5"}


def test_only_gateways_reach_mcp_server(manifests: list[Manifest]) -> None:
    (policy,) = _kind(manifests, "NetworkPolicy").values()
    server = _kind(manifests, "Deployment")["gh-gatehouse-mcp-server"]
    gateway = _kind(manifests, "Deployment")["gh-gatehouse-gateway"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    server_labels = server["spec"]["template"]["metadata"]["labels"]
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert selected.items() <= server_labels.items()
    assert not selected.items() <= gateway_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector or ipBlock
    allowed = peer["podSelector"]["matchLabels"]
    assert allowed.items() <= gateway_labels.items()
    assert not allowed.items() <= server_labels.items()
    (container,) = server["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ports["http"] == 8001  # the MCP port, not the metrics one


def _mcp_server_container(manifests: list[Manifest]) -> dict[str, Any]:
    server = _kind(manifests, "Deployment")["gh-gatehouse-mcp-server"]
    (container,) = server["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_mcp_server_pods_serve_metrics_on_their_own_port(manifests: list[Manifest]) -> None:
    server = _kind(manifests, "Deployment")["gh-gatehouse-mcp-server"]
    container = _mcp_server_container(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == METRICS_PORT and ports["http"] != METRICS_PORT
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GATEHOUSE_METRICS_PORT"] == str(METRICS_PORT)
    assert env["GATEHOUSE_METRICS_HOST"] == "0.0.0.0"  # reachable at the pod's address
    annotations = server["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_metrics_peers_reach_only_the_metrics_port() -> None:
    """networkPolicy.metricsFrom opens mcp_server's metrics port to those peers, never its
    MCP port, which stays the gateways' alone."""
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    manifests = _render({"secrets": CHART_SECRETS,
                         "networkPolicy": {"enabled": True, "metricsFrom": [monitoring]}})
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSIONS[-1], strict=True)
    (policy,) = _kind(manifests, "NetworkPolicy").values()
    gateways, metrics = policy["spec"]["ingress"]
    assert monitoring not in gateways["from"]
    assert gateways["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert metrics["from"] == [monitoring]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    named = {p["name"] for p in _mcp_server_container(manifests)["ports"]}
    assert {"http", "metrics"} <= named  # the policy's named ports exist on the pod


def test_migration_runs_as_a_pre_install_and_pre_upgrade_hook(manifests: list[Manifest]) -> None:
    (job,) = _kind(manifests, "Job").values()
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["gatehouse", "migrate", "--app-password-env", "APP_DB_PASSWORD"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert set(env) == {"GATEHOUSE_ADMIN_DATABASE_URL", "APP_DB_PASSWORD"}
    secret = _kind(manifests, "Secret")[env["GATEHOUSE_ADMIN_DATABASE_URL"]]
    secret_hook = secret["metadata"]["annotations"]
    assert secret_hook["helm.sh/hook"] == job["metadata"]["annotations"]["helm.sh/hook"]
    assert int(secret_hook["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )  # the owner's credentials exist before the Job and are deleted after it
    assert "hook-succeeded" in secret_hook["helm.sh/hook-delete-policy"]


def test_every_container_is_non_root_on_a_read_only_filesystem(
    manifests: list[Manifest],
) -> None:
    for name, spec in _pod_specs(manifests):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        tmp = {v["name"]: v for v in spec["volumes"]}["tmp"]
        assert "emptyDir" in tmp, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["runAsUser"] != 0 and context["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp", name


def test_probes_check_health_and_readiness(manifests: list[Manifest]) -> None:
    deployments = _kind(manifests, "Deployment")
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
    (gateway,) = deployments["gh-gatehouse-gateway"]["spec"]["template"]["spec"]["containers"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (server,) = deployments["gh-gatehouse-mcp-server"]["spec"]["template"]["spec"]["containers"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/healthz"  # no /readyz there yet


def _secret_keys_used(spec: dict[str, Any]) -> set[tuple[str, str]]:
    used: set[tuple[str, str]] = set()
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            for item in volume["secret"]["items"]:
                used.add((volume["secret"]["secretName"], item["key"]))
    for container in spec["containers"]:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                used.add((ref["name"], ref["key"]))
        assert not any("secretRef" in source for source in container.get("envFrom", []))
    return used


def test_key_material_is_mounted_only_into_its_process(manifests: list[Manifest]) -> None:
    deployments = _kind(manifests, "Deployment")
    gateway = {k for _, k in _secret_keys_used(deployments["gh-gatehouse-gateway"]["spec"]
                                               ["template"]["spec"])}
    server = {k for _, k in _secret_keys_used(deployments["gh-gatehouse-mcp-server"]["spec"]
                                              ["template"]["spec"])}
    assert gateway == {"internal-assertion.pem", "app-database-password"}
    assert server == {"internal-assertion.pub", "token-keys", "app-database-password",
                      "providers"}
    secrets = _kind(manifests, "Secret")
    assert "token-keys" not in secrets["gh-gatehouse-gateway"]["data"]
    assert "internal-assertion.pem" not in secrets["gh-gatehouse-mcp-server"]["data"]
    for config in _kind(manifests, "ConfigMap").values():
        text = yaml.safe_dump(config)
        for secret_value in CHART_SECRETS.values():
            assert secret_value.strip() not in text


def test_autoscaling_and_disruption_budgets_cover_both_processes(
    manifests: list[Manifest],
) -> None:
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in
               _kind(manifests, "HorizontalPodAutoscaler").values()}
    assert targets == set(_kind(manifests, "Deployment"))
    for deployment in _kind(manifests, "Deployment").values():
        assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    budgets = _kind(manifests, "PodDisruptionBudget")
    assert len(budgets) == 2 and all(b["spec"]["minAvailable"] == 1 for b in budgets.values())

