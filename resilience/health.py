"""Whether this process should ask Redis now: a small circuit around the limit store.

Without it every request that meets a frozen or busy Redis waits the client's whole timeout
(throughput fell from ~740 to 16 requests/s) and logs the same warning again. Once one call
fails or is slower than its timeout, :attr:`RedisHealth.available` is false and rate limits and
breakers take their fallback at once (the limits' fail-open/closed policy, the breakers' local
state) without touching Redis. Meanwhile at most one ``PING`` is in flight, started in the
background by the first check at least :data:`PROBE_INTERVAL` after the previous probe: no
request waits for it and nothing runs while nobody asks. Redis counts as back when a probe
answers within :data:`HEALTHY_SECONDS` (well inside the timeout, so that a Redis that is merely
slower than its timeout does not flap between the two states).

State changes are logged once each: "rate-limit store unavailable (TimeoutError); failing
open", then "rate-limit store back after 3.2 s; 1234 requests admitted without a limit, 0
refused".

There is one tracker per Redis client (:func:`health_of`), so every limiter and breaker of a
process built on the same client agrees on it without each construction site passing it along.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from resilience.redis import COMMAND_TIMEOUT

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0  # seconds between probes while Redis is unavailable
HEALTHY_SECONDS = COMMAND_TIMEOUT / 2  # a probe answered within this: Redis is back


class RedisHealth:
    """One process's view of one Redis client: available, or being skipped and re-probed."""

    def __init__(self, redis: Redis, *, name: str = "rate-limit store",
                 probe_interval: float = PROBE_INTERVAL) -> None:
        self.name = name
        self._redis = redis
        self._interval = probe_interval
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._probe: asyncio.Task[None] | None = None
        self._slow = False
        self._admitted = self._refused = 0

    @property
    def available(self) -> bool:
        """Whether to ask Redis now; while not, also starts a background probe when due."""
        if self._down_since is None:
            return True
        if self._probe is None and time.monotonic() >= self._next_probe:
            self._probe = asyncio.get_running_loop().create_task(self._run_probe())
        return False

    @property
    def status(self) -> str:
        """``ok``; ``degraded`` (skipped because slower than its timeout); ``down``."""
        if self._down_since is None:
            return "ok"
        return "degraded" if self._slow else "down"

    def failed(self, exc: BaseException, fallback: str) -> None:
        """A call failed or timed out: skip Redis until a probe succeeds. ``fallback`` says
        what happens meanwhile (for the one log line), e.g. "failing open"."""
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self._next_probe = self._down_since + self._interval
        self._slow = _is_slow(exc)
        self._admitted = self._refused = 0
        log.warning("%s unavailable (%s); %s", self.name, type(exc).__name__, fallback)

    def decided_without(self, admitted: bool) -> None:
        """Count a request decided by the fallback, for the recovery log line."""
        if admitted:
            self._admitted += 1
        else:
            self._refused += 1

    async def aclose(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)

    async def _run_probe(self) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._redis.ping()
            healthy = time.monotonic() - started <= HEALTHY_SECONDS
        except Exception:  # any failure only means "not yet"; the next probe will tell
            healthy = False
        finally:
            self._probe = None
        if healthy:
            self._recovered()
        else:
            self._next_probe = time.monotonic() + self._interval

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        elapsed = time.monotonic() - self._down_since
        self._down_since = None
        log.warning("%s back after %.1f s; %d requests admitted without a limit, %d refused",
                    self.name, elapsed, self._admitted, self._refused)


def _is_slow(exc: BaseException) -> bool:
    """Redis is there but slower than its timeout (or still running a long script)."""
    busy = isinstance(exc, ResponseError) and str(exc).startswith("BUSY")
    return busy or isinstance(exc, (TimeoutError, RedisTimeout))


_trackers: weakref.WeakKeyDictionary[Redis, RedisHealth] = weakref.WeakKeyDictionary()


def health_of(redis: Redis) -> RedisHealth:
    """The tracker of ``redis`` in this process (created on first use)."""
    tracker = _trackers.get(redis)
    if tracker is None:
        tracker = _trackers[redis] = RedisHealth(redis)
    return tracker
