"""What one provider tool call tells the metrics: the provider call's latency by status class,
and the organisation's breaker state as admission saw it (and, after a failure that counts
against the breaker, as the breaker now says)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp_server.metrics import ServerMetrics, status_class
from oauth.errors import ProviderCallError, ProviderRejected, ProviderUnavailable
from oauth.provider_client import is_breaker_failure
from resilience import BreakerState, CircuitBreaker


def call_status(exc: BaseException | None) -> str | None:
    """The status class of a provider call that ended with ``exc`` (None: success); None
    when the call never reached the provider's answer (e.g. refused before sending)."""
    if exc is None:
        return "2xx"
    if isinstance(exc, ProviderRejected):
        return status_class(exc.status)
    if isinstance(exc, ProviderUnavailable):
        if exc.reason.startswith("HTTP "):  # see oauth.provider_client._interpret
            return "5xx"
        if exc.reason.startswith("rate limited"):  # 429, or GitHub's spent-quota 403
            return "4xx"
        return "timeout" if "Timeout" in exc.reason else "network"
    if isinstance(exc, ProviderCallError):  # 401, or 403 for a missing scope
        return "4xx"
    return None


class BreakerWatch:
    def __init__(self, metrics: ServerMetrics, provider: str, org_id: str,
                 breaker: CircuitBreaker) -> None:
        self.metrics = metrics
        self._provider = metrics.provider(provider)
        self._org_id = org_id
        self._breaker = breaker

    def seen(self, state: BreakerState) -> None:
        self.metrics.breakers.observe(self._provider, self._org_id, state.value)

    @asynccontextmanager
    async def timed(self) -> AsyncIterator[None]:
        """Time the provider call inside; afterwards, note the breaker if the call failed
        in a way that counts against it (one more Redis round trip, on failures only)."""
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield
        except Exception as exc:
            failure = exc
            raise
        finally:
            status = call_status(failure)
            if status is not None:
                self.metrics.provider_latency.labels(self._provider, status).observe(
                    time.perf_counter() - started)
            if isinstance(failure, Exception) and is_breaker_failure(failure):
                self.seen(await self._breaker.state())
