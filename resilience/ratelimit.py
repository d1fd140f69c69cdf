"""Distributed rate limits over Redis, built on the ``limits`` library.

Decisions are made by a single ``hit()`` (atomic in Redis), never ``test()`` then ``hit()``.
Identifiers are percent-encoded before ``limits`` joins them with "/", so ``("a/b", "c")`` and
``("a", "b/c")`` can never share a bucket. When Redis is unreachable the configured
:class:`FailurePolicy` decides: ``OPEN`` admits the request (availability first), ``CLOSED``
raises :class:`LimiterUnavailable` (protection first). Either way the call returns within the
Redis client's timeouts.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass
from urllib.parse import quote

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from resilience.errors import LimiterUnavailable
from resilience.redis import create_pool, limits_storage_uri

log = logging.getLogger(__name__)


class FailurePolicy(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit; ``retry_after`` is whole seconds until a retry can succeed."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int
    window_seconds: int
    degraded: bool = False


def _encode(identifiers: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(quote(part, safe="") for part in identifiers)


class RateLimiter:
    """A named limit such as ``"600/minute"`` applied per identifier tuple."""

    def __init__(
        self,
        redis_url: str,
        limit: str,
        *,
        namespace: str,
        policy: FailurePolicy = FailurePolicy.OPEN,
    ) -> None:
        self._item: RateLimitItem = parse(limit)
        self._namespace = namespace
        self._policy = policy
        self._storage = RedisStorage(
            limits_storage_uri(redis_url),
            implementation="redispy",
            wrap_exceptions=True,
            # limits types its options as scalars but hands this one to redis-py as is.
            connection_pool=create_pool(redis_url),  # type: ignore[arg-type]
        )
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)

    @property
    def window_seconds(self) -> int:
        return int(self._item.get_expiry())

    async def hit(self, *identifiers: str) -> Decision:
        key = (self._namespace, *_encode(identifiers))
        try:
            if await self._strategy.hit(self._item, *key):
                return Decision(True, self._item.amount, -1, 0, self.window_seconds)
            stats = await self._strategy.get_window_stats(self._item, *key)
        except (StorageError, OSError, TimeoutError) as exc:
            return self._degraded(exc)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(False, self._item.amount, stats.remaining, retry_after, self.window_seconds)

    def _degraded(self, exc: BaseException) -> Decision:
        log.warning("rate-limit store unavailable (%s); failing %s", type(exc).__name__,
                    self._policy.value)
        if self._policy is FailurePolicy.CLOSED:
            raise LimiterUnavailable("rate-limit store unavailable") from exc
        return Decision(True, self._item.amount, -1, 0, self.window_seconds, degraded=True)
