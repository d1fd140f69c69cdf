"""Log lines as JSON objects (or readable text), each carrying the context of its request.

Both roots call :func:`configure` from their app factory, so the format holds however uvicorn
was started (``gatehouse up`` or ``uvicorn --factory``). uvicorn's and FastMCP's loggers are
rerouted through the same handler, and uvicorn's access log is switched off in favour of
:class:`AccessLogMiddleware`, whose line names the route template instead of the raw path.

Context travels in one context variable holding a mutable mapping: the outermost middleware
opens it, inner layers :func:`bind` what they learn (request id, organisation, user, session),
and :class:`ContextFilter` copies it onto every record, with OpenTelemetry's trace and span ids
when a span is recording.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from contextvars import ContextVar, Token
from typing import Literal

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LogFormat = Literal["json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogContext = dict[str, str]

_context: ContextVar[LogContext | None] = ContextVar("gatehouse_log_context", default=None)
# Libraries log at DEBUG what no log line may hold (header values, message bodies), so DEBUG
# opens only the application's own loggers.
_LIBRARY_FLOOR = logging.INFO
_REROUTED = ("uvicorn", "uvicorn.error", "fastmcp", "mcp")


def bind(**fields: str | None) -> None:
    """Add what this layer knows to the current request's context (outside a request: no-op)."""
    current = _context.get()
    if current is not None:
        current.update({key: value for key, value in fields.items() if value})


class ContextFilter(logging.Filter):
    """Copies the request's context and the current span's ids onto each record. Tasks the
    request starts (FastMCP runs tools in one) copy the context variable, so they share it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            record.__dict__.setdefault(key, value)
        span = trace.get_current_span().get_span_context()  # INVALID_SPAN without tracing
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


def configure(log_format: LogFormat, level: LogLevel, own_loggers: Iterable[str]) -> None:
    """One handler on the root logger for every line of the process, uvicorn's included;
    ``level`` applies to ``own_loggers``, libraries log at INFO or above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for previous in root.handlers[:]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(max(logging.getLevelNamesMapping()[level], _LIBRARY_FLOOR))
    for name in own_loggers:
        logging.getLogger(name).setLevel(level)
    _reroute_libraries()
    logging.captureWarnings(True)


def _formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "console":
        return logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s",
            defaults={"request_id": "-"},
        )
    # orjson: a line costs ~14 µs instead of ~22 µs, and every request writes one per process
    return OrjsonFormatter(
        ["message", "levelname", "name"],
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
        timestamp="time",  # RFC 3339 in UTC
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's ANSI-coloured copy
    )


def _reroute_libraries() -> None:
    """uvicorn and FastMCP install handlers of their own (plain text, Rich); those go, so every
    line leaves through the root's handler at the root's level."""
    loggers = [logging.getLogger(name) for name in _REROUTED]
    loggers += [
        logger for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
        and any(not isinstance(h, logging.NullHandler) for h in logger.handlers)
    ]
    for logger in loggers:
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False  # with no handler in reach, uvicorn skips its access lines


def open_context() -> Token[LogContext | None]:
    """Start the current request's log context (the outermost layer does, once)."""
    return _context.set({})


def close_context(token: Token[LogContext | None]) -> None:
    _context.reset(token)


class AccessLog:
    """The access line of a request as it ends: method, route template, status, duration and
    body bytes sent, with the request's context. ``routes`` names the template of a request
    answered before routing (a 401 from authentication); by default the Starlette app's own."""

    def __init__(self, logger: str, routes: Sequence[BaseRoute] | None = None) -> None:
        self.log = logging.getLogger(logger)
        self.routes = routes

    def line(self, scope: Scope, status: int, sent: int, seconds: float) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        route = self._template(scope)
        self.log.info("%s %s %d", scope["method"], route or "-", status, extra={
            "method": scope["method"], "route": route, "status": status,
            "duration_ms": round(seconds * 1000, 2), "bytes": sent,
        })

    def _template(self, scope: Scope) -> str | None:
        """The matched route's path template; never the raw path, which holds ids."""
        route = scope.get("route")
        if route is None:
            routes = self.routes
            if routes is None:
                routes = getattr(scope.get("app"), "routes", ())
            route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else None


class AccessLogMiddleware:
    """One :class:`AccessLog` line per HTTP request. Outermost, so it opens the context the
    inner layers bind to. (The gateway's edge layer does the same inside its one ``send``.)"""

    def __init__(
        self, app: ASGIApp, logger: str, routes: Sequence[BaseRoute] | None = None
    ) -> None:
        self.app = app
        self.access = AccessLog(logger, routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = open_context()
        started = time.perf_counter()
        status, sent = 500, 0  # what the server answers for an app that fails before starting

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.access.line(scope, status, sent, time.perf_counter() - started)
            close_context(token)
