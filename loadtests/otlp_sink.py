"""A loopback OTLP/HTTP receiver for the overhead benchmark: it accepts and counts, nothing more.

Tracing at 100% sampling is measured exporting to a real receiver, so the exporter's work (and
its HTTP requests) is paid as it would be against a collector; a receiver that decoded the
protobuf would only add its own CPU to the machine being measured. Answers 200 with an empty
``ExportTraceServiceResponse`` (zero bytes in protobuf, ``{}`` in JSON) to ``POST /v1/traces``
(and ``/v1/metrics``, ``/v1/logs``), and reports what it received at ``GET /stats``::

    python -m loadtests.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
from collections import Counter

from aiohttp import web

STATS = web.AppKey("stats", Counter[str])


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    stats = request.app[STATS]
    signal = request.match_info["signal"]
    stats[f"{signal}_requests"] += 1
    stats[f"{signal}_bytes"] += len(body)
    if request.content_type == "application/json":
        return web.json_response({})
    return web.Response(body=b"", content_type="application/x-protobuf")


async def stats(request: web.Request) -> web.Response:
    counts = request.app[STATS]
    return web.json_response(dict(counts))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATS] = Counter[str]()
    app.router.add_post("/v1/{signal:traces|metrics|logs}", receive)
    app.router.add_get("/stats", stats)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
