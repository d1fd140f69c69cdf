"""The HAProxy configuration of a local fleet (``gatehouse up --replicas N``).

Choices, and why:

* health checks every 500 ms, out at the first failure, back after two successes: a draining
  replica (probe 503 for its grace) is out of rotation before it stops accepting;
* gateways are checked on ``/readyz``, mcp_servers on ``/healthz`` (their liveness; nothing
  else of theirs says "send me nothing");
* each gateway is also listed as an unchecked backup: when *every* gateway reports unready (a
  shared dependency such as PostgreSQL is down, which every replica sees at once) traffic still
  reaches them and they answer what they can, with their own 503 problem and ``Retry-After`` for
  what needs the dependency, instead of HAProxy refusing everything;
* ``leastconn``: SSE streams hold connections for long, so counting connections beats turns;
* retries only on connection failures (the request never reached a server), never a
  re-send of a request a server may have acted on;
* HAProxy's own errors are problem documents like the gateway's;
* long client and server timeouts: MCP streams stay open while tools run.
"""

from __future__ import annotations

import json

_PROBLEMS = {
    502: ("bad_gateway", "No replica answered; retry shortly."),
    503: ("unavailable", "No replica is available; retry shortly."),
    504: ("gateway_timeout", "A replica did not answer in time."),
}

_GLOBAL = """\
global
    hard-stop-after 2s

defaults
    mode http
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout queue 5s
    timeout check 2s
    retries 2
    option redispatch 1
    retry-on conn-failure
    default-server inter 500ms fall 1 rise 2
"""


def config(host: str, public_port: int, mcp_port: int, stats_port: int,
           gateways: dict[str, int], mcp_servers: dict[str, int]) -> str:
    return "\n".join([
        _GLOBAL,
        *(_error(status) for status in _PROBLEMS),
        "",
        _frontend("gateway", host, public_port, "gateways"),
        _backend("gateways", "/readyz", gateways, fallback=True),
        _frontend("mcp_server", host, mcp_port, "mcp_servers"),
        _backend("mcp_servers", "/healthz", mcp_servers, fallback=False),
        "listen stats",
        f"    bind 127.0.0.1:{stats_port}",
        "    stats enable",
        "    stats uri /stats",
        "",
    ])


def _error(status: int) -> str:
    code, detail = _PROBLEMS[status]
    body = json.dumps({"type": "about:blank", "title": code.replace("_", " ").capitalize(),
                       "status": status, "code": code, "detail": detail})
    quoted = body.replace("\\", "\\\\").replace("'", "\\'")
    retry = ' hdr Retry-After "1"' if status == 503 else ""
    return (f"    http-error status {status} content-type application/problem+json "
            f"string '{quoted}'{retry}")


def _frontend(name: str, host: str, port: int, backend: str) -> str:
    address = f"[{host}]" if ":" in host else host
    return f"frontend {name}\n    bind {address}:{port}\n    default_backend {backend}\n"


def _backend(name: str, probe: str, servers: dict[str, int], *, fallback: bool) -> str:
    lines = [f"backend {name}", "    balance leastconn", "    option httpchk",
             f"    http-check send meth GET uri {probe}", "    http-check expect status 200"]
    lines += [f"    server {server} 127.0.0.1:{port} check" for server, port in servers.items()]
    if fallback:
        lines.append("    option allbackups")
        lines += [f"    server {server}-unchecked 127.0.0.1:{port} backup"
                  for server, port in servers.items()]
    return "\n".join(lines) + "\n"
