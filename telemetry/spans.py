"""Child spans for any package, through the OpenTelemetry API alone.

A span is opened only under a recording parent (the SERVER span of a request being traced), so
without an SDK, for an unsampled request, or for background work it costs one context lookup
and no trace begins here. An exception ends the span as an error naming the exception's type,
never its message: messages can carry connect links or provider text, which never belong in a
trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, StatusCode
from opentelemetry.util.types import Attributes


@contextmanager
def child_span(tracer: trace.Tracer, name: str, attributes: Attributes = None,
               kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:
    if not trace.get_current_span().is_recording():
        yield INVALID_SPAN
        return
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes,
                                      record_exception=False,
                                      set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(StatusCode.ERROR)
            raise
