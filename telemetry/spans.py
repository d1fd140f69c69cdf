"""Child spans for any package, through the OpenTelemetry API alone.

A span is opened only under a recording parent (the SERVER span of a request being traced), so
without an SDK, for an unsampled request, or for background work it costs one context lookup
and no trace begins here. An exception ends the span as an error naming the exception's type,
never its message: messages can carry connect links or provider text, which never belong in a
trace.

:class:`child_span` and :class:`current` are plain context-manager classes: the API's
``start_as_current_span`` nests three generator-based context managers, and on a traced request
the gateway opens several spans (issue 14 measured the difference).
"""

from __future__ import annotations

from types import TracebackType

from opentelemetry import context, trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, StatusCode
from opentelemetry.util.types import Attributes


class current:  # used like a function: ``with current(span):``
    """``span`` is the current span inside the block, and ends when the block does."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        context.detach(self._token)  # type: ignore[arg-type]
        self._span.end()


class child_span:  # used like a function: ``with child_span(tracer, name):``
    """A child of the current span, current inside the block; the non-recording
    ``INVALID_SPAN`` (and nothing else) when the current span is not recording."""

    __slots__ = ("_attributes", "_current", "_kind", "_name", "_tracer")

    def __init__(self, tracer: trace.Tracer, name: str, attributes: Attributes = None,
                 kind: SpanKind = SpanKind.INTERNAL) -> None:
        self._tracer, self._name, self._attributes, self._kind = tracer, name, attributes, kind
        self._current: current | None = None

    def __enter__(self) -> Span:
        if not trace.get_current_span().is_recording():
            return INVALID_SPAN
        span = self._tracer.start_span(self._name, kind=self._kind, attributes=self._attributes,
                                       record_exception=False, set_status_on_exception=False)
        self._current = current(span)
        return self._current.__enter__()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._current is None:
            return
        if kind is not None:
            self._current._span.set_attribute("error.type", kind.__qualname__)
            self._current._span.set_status(StatusCode.ERROR)
        self._current.__exit__(kind, exc, tb)
