"""The OpenTelemetry SDK for one process, configured only by the standard ``OTEL_*`` variables.

Only the two roots call :func:`install` (from their app factories); every other package uses
the API alone (``trace.get_tracer(__name__)``), whose spans are non-recording no-ops until a
provider is installed. With no exporter configured (neither ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` nor ``OTEL_TRACES_EXPORTER``), or with
``OTEL_SDK_DISABLED=true``, nothing is installed at all, so tracing costs next to nothing.
The sampler comes from ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``, batching from
``OTEL_BSP_*``, the service name from ``OTEL_SERVICE_NAME`` (else the root's default).
Trace context travels as W3C ``traceparent``/``tracestate`` only (never caller baggage).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

W3C = TraceContextTextMapPropagator()
Instrument = Callable[[TracerProvider], None]


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces to be exported at all."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(exporters or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporters(environ: Mapping[str, str]) -> Iterator[SpanExporter]:
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                           environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
    for name in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(","):
        if name.strip() == "console":
            yield ConsoleSpanExporter()
        elif name.strip() == "otlp":
            if protocol != "http/protobuf":
                log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; using "
                            "http/protobuf", protocol)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            yield OTLPSpanExporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER %r is not supported; ignored", name)


def install(default_service: str, instrument: Instrument,
            environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """The process's tracer provider (batching to the configured exporters), with
    ``instrument(provider)`` run once; ``None``, and nothing installed, when tracing is off."""
    if not tracing_wanted(environ):
        return None
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # a second app in one process shares the first's
        return current
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(environ):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrument(provider)
    return provider


def instrument_storage(provider: TracerProvider) -> None:
    """Spans for asyncpg queries (SQL text, never parameters) and Redis commands (command
    name, arguments as ``?``): both instrumentations' defaults."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument(tracer_provider=provider)


def flushing(app: ASGIApp, provider: TracerProvider | None) -> ASGIApp:
    """``app``, exporting the spans still queued when its lifespan ends."""
    if provider is None:
        return app

    async def flushed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await asyncio.to_thread(provider.shutdown)
            await send(message)

        await app(scope, receive, sending)

    return flushed
