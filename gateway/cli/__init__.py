"""The launcher and operator commands of the whole system (the ``gatehouse`` console script).

Not part of the server: nothing under ``gateway`` outside this package imports it. It runs
the embedded PostgreSQL and Redis (:mod:`gateway.cli.embedded`), supervises gateway and
mcp_server as child processes (:mod:`gateway.cli.supervisor`) and mints development tokens
(:mod:`gateway.cli.devissuer`).
"""

from gateway.cli.commands import main

__all__ = ["main"]
