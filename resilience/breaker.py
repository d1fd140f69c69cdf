"""Circuit breakers for asyncio whose state every replica shares through Redis.

A breaker is *closed* (calls pass), *open* (calls fail fast with :class:`CircuitOpen`) or
*half-open* (at most ``half_open_max_calls`` trial calls pass). It opens when
``failure_threshold`` failures happen within ``window_seconds`` of the first of them; after
``reset_timeout`` it turns half-open; one failed trial re-opens it, and ``half_open_max_calls``
successful trials close it. Exceptions for which ``is_failure`` is false (business errors: the
dependency answered) never count as failures. Cancellation counts as nothing.

Every transition is one Lua script run on one Redis hash per breaker, so replicas racing for the
last trial slot, or recording failures at once, cannot interleave. The call itself runs outside
Redis and outside any lock: a breaker never serialises calls. Each outcome carries the
*generation* it was admitted in; outcomes from an older generation (a slow call admitted before
the breaker opened, or a trial from an abandoned round) are ignored. A half-open round whose
slots are all taken but which has not concluded within ``reset_timeout`` (its trials hung or
their process died) is abandoned and a new round starts. A caller admitted but not making its
call after all gives the slot back (:meth:`CircuitBreaker.release`).

A breaker can be split by a part of its traffic (:meth:`CircuitBreaker.scoped`, e.g. one per
organisation and provider), so that one tenant's failing calls open its own breaker only.

The transition is also a Lua *function* (:data:`TRANSITION_FUNCTION_LUA`), so that
:func:`resilience.admit` can take a breaker's admission and several rate limits in one atomic
script run — one Redis round trip on a provider call's hot path instead of two.

Time: by default Redis's own clock (``TIME``) decides, so replicas' clock skew does not matter.
Tests pass ``clock``; its value is then sent with every script run. Key TTLs only collect idle
breakers (a day at least) and never drive a transition.

Redis unreachable or slower than its timeout: the call that finds out waits at most the
client's timeouts (0.5 s with :func:`resilience.redis.create_redis`, capped here at
``REDIS_DEADLINE``); from then on the breaker decides with a local in-process breaker with the
same rules and does not ask Redis until the client's :class:`~resilience.health.RedisHealth`
(shared with the rate limits) finds it healthy again. Outcomes of calls admitted by Redis that
cannot be recorded are dropped. Recovery is automatic; the shared state resumes where Redis
kept it.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from resilience.errors import CircuitOpen
from resilience.health import health_of
from resilience.keys import key_of

T = TypeVar("T")

# Seconds.
REDIS_DEADLINE = 1.0
MAX_SCOPED = 4096  # scoped breakers kept per breaker in one process
MIN_KEY_TTL = 86_400

# One transition on one breaker's hash, as a Lua function so that other scripts (the rate
# limiter's combined admission) can run it in the same atomic script. ``op``: admit | success |
# failure | release | state; ``gen_arg``: the generation an outcome belongs to (-1 for admit and
# state). Hash fields: state, gen, since (closed: first failure of the window; open: opened at;
# half_open: round start), failures (closed), trials (half_open slots taken), passed (successes).
# Returns {admitted 0|1, gen, state, seconds until a retry can pass (string)}.
TRANSITION_FUNCTION_LUA = """
local function breaker_transition(key, op, gen_arg, now, threshold, window, reset, max_trials,
                                  ttl)
  local h = redis.call('HMGET', key, 'state', 'gen', 'since', 'failures', 'trials', 'passed')
  local state, gen = h[1] or 'closed', tonumber(h[2]) or 0
  local since, failures = tonumber(h[3]) or now, tonumber(h[4]) or 0
  local trials, passed = tonumber(h[5]) or 0, tonumber(h[6]) or 0

  local function enter(new_state)
    state, gen, since, failures, trials, passed = new_state, gen + 1, now, 0, 0, 0
  end

  if state ~= 'closed' and now >= since + reset and (state == 'open' or trials >= max_trials) then
    enter('half_open')
  end
  local admitted = 0
  if op == 'admit' then
    if state == 'closed' then
      admitted = 1
    elseif state == 'half_open' and trials < max_trials then
      admitted, trials = 1, trials + 1
    end
  elseif gen_arg == gen and state == 'half_open' then
    if op == 'failure' then
      enter('open')
    elseif op == 'success' then
      passed = passed + 1
      if passed >= max_trials then enter('closed') end
    elseif op == 'release' then
      trials = math.max(0, trials - 1)
    end
  elseif gen_arg == gen and state == 'closed' and op == 'failure' then
    if failures == 0 or now >= since + window then since, failures = now, 0 end
    failures = failures + 1
    if failures >= threshold then enter('open') end
  end
  redis.call('HSET', key, 'state', state, 'gen', gen, 'since', since, 'failures', failures,
             'trials', trials, 'passed', passed)
  redis.call('EXPIRE', key, ttl)
  local wait = 0
  if state ~= 'closed' then wait = math.max(0, since + reset - now) end
  return {admitted, gen, state, tostring(wait)}
end
"""

# Time: the caller's clock when it passes one (tests), else Redis's own clock.
NOW_LUA = """
local function now_or_time(given)
  local now = tonumber(given)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS[1]: the breaker's hash. ARGV: now ("" = Redis TIME), op, generation, then the rules
# (failure_threshold, window_seconds, reset_timeout, half_open_max_calls, ttl).
TRANSITION_LUA = NOW_LUA + TRANSITION_FUNCTION_LUA + """
return breaker_transition(KEYS[1], ARGV[2], tonumber(ARGV[3]), now_or_time(ARGV[1]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))
"""


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class _Rules:
    failure_threshold: int
    window_seconds: float
    reset_timeout: float
    half_open_max_calls: int


@dataclass(frozen=True)
class BreakerTicket:
    """One transition's result; for an admission, the ticket its outcome is recorded against."""

    admitted: bool
    generation: int
    state: BreakerState
    retry_after: float
    local: bool = False


@dataclass
class _LocalBreaker:
    """The Lua script's state machine for one process, used while Redis is unreachable."""

    rules: _Rules
    state: BreakerState = BreakerState.CLOSED
    gen: int = 0
    since: float = 0.0
    failures: int = 0
    trials: int = 0
    passed: int = 0

    def _enter(self, state: BreakerState, now: float) -> None:
        self.state, self.gen, self.since = state, self.gen + 1, now
        self.failures = self.trials = self.passed = 0

    def apply(self, op: str, generation: int, now: float) -> BreakerTicket:
        r, admitted = self.rules, False
        stale = self.state is BreakerState.OPEN or self.trials >= r.half_open_max_calls
        if self.state is not BreakerState.CLOSED and now >= self.since + r.reset_timeout and stale:
            self._enter(BreakerState.HALF_OPEN, now)
        if op == "admit":
            if self.state is BreakerState.CLOSED:
                admitted = True
            elif self.state is BreakerState.HALF_OPEN and self.trials < r.half_open_max_calls:
                admitted, self.trials = True, self.trials + 1
        elif generation == self.gen and self.state is BreakerState.HALF_OPEN:
            if op == "failure":
                self._enter(BreakerState.OPEN, now)
            elif op == "success":
                self.passed += 1
                if self.passed >= r.half_open_max_calls:
                    self._enter(BreakerState.CLOSED, now)
            elif op == "release":
                self.trials = max(0, self.trials - 1)
        elif generation == self.gen and self.state is BreakerState.CLOSED and op == "failure":
            if self.failures == 0 or now >= self.since + r.window_seconds:
                self.since, self.failures = now, 0
            self.failures += 1
            if self.failures >= r.failure_threshold:
                self._enter(BreakerState.OPEN, now)
        wait = 0.0
        if self.state is not BreakerState.CLOSED:
            wait = max(0.0, self.since + r.reset_timeout - now)
        return BreakerTicket(admitted, self.gen, self.state, wait, local=True)


def _every_exception(exc: BaseException) -> bool:
    return True


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class CircuitBreaker:
    """A named breaker, e.g. one per provider; every replica using the same name shares it."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        *,
        failure_threshold: int = 5,
        window_seconds: float = 30.0,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        is_failure: Callable[[Exception], bool] = _every_exception,
        clock: Callable[[], float] | None = None,
        namespace: str = "gatehouse:breaker",
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1:
            raise ValueError("failure_threshold and half_open_max_calls must be at least 1")
        if window_seconds <= 0 or reset_timeout <= 0:
            raise ValueError("window_seconds and reset_timeout must be positive")
        self.name = name
        self._rules = _Rules(failure_threshold, window_seconds, reset_timeout, half_open_max_calls)
        self._is_failure = is_failure
        self._clock = clock
        self._key = key_of(namespace, name)  # no two names share a key, whatever they contain
        self._ttl = max(MIN_KEY_TTL, math.ceil(10 * (window_seconds + reset_timeout)))
        self._script = redis.register_script(TRANSITION_LUA)
        self._local = _LocalBreaker(self._rules)
        self._health = health_of(redis)
        self._redis, self._namespace = redis, namespace
        self._scoped: OrderedDict[tuple[str, ...], CircuitBreaker] = OrderedDict()

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` if the breaker admits it; otherwise raise :class:`CircuitOpen`."""
        async with self.guard():
            return await fn()

    @asynccontextmanager
    async def guard(self, ticket: BreakerTicket | None = None) -> AsyncIterator[None]:
        """``async with breaker.guard(): ...`` — the body is the guarded call.

        ``ticket``: an admission already obtained (by :func:`resilience.admit`, together with
        rate limits in one Redis round trip); without one the breaker admits the call itself.
        """
        if ticket is None:
            ticket = await self._apply("admit")
        if not ticket.admitted:
            raise CircuitOpen(self.name, ticket.retry_after)
        try:
            yield
        except Exception as exc:
            if self._is_failure(exc):
                await self._record(ticket, "failure")
            elif ticket.state is not BreakerState.CLOSED:
                await self._record(ticket, "success")
            raise
        if ticket.state is not BreakerState.CLOSED:  # a closed breaker ignores successes
            await self._record(ticket, "success")

    def scoped(self, *identifiers: str) -> CircuitBreaker:
        """The breaker of one part of this breaker's traffic, e.g. one organisation's calls to
        a provider: the same rules, its own (shared across replicas) state, so that failures
        caused by one part open only that part's breaker. This process keeps the
        :data:`MAX_SCOPED` most recently used; a dropped one keeps its state in Redis."""
        child = self._scoped.pop(identifiers, None)
        if child is None:
            r = self._rules
            child = CircuitBreaker(
                self._redis, key_of("scoped", self.name, *identifiers),
                failure_threshold=r.failure_threshold, window_seconds=r.window_seconds,
                reset_timeout=r.reset_timeout, half_open_max_calls=r.half_open_max_calls,
                is_failure=self._is_failure, clock=self._clock, namespace=self._namespace)
        self._scoped[identifiers] = child
        if len(self._scoped) > MAX_SCOPED:
            self._scoped.popitem(last=False)
        return child

    async def release(self, ticket: BreakerTicket) -> None:
        """Give back an admission whose call will not be made (a half-open trial slot)."""
        if ticket.admitted and ticket.state is BreakerState.HALF_OPEN:
            await self._record(ticket, "release")

    async def state(self) -> BreakerState:
        """The current state (an open breaker past ``reset_timeout`` reports half-open)."""
        return (await self._apply("state")).state

    # For scripts that run this breaker's transition inside their own (resilience.ratelimit).

    @property
    def key(self) -> str:
        return self._key

    @property
    def shared(self) -> bool:
        """Whether Redis is to be asked now (not while it is known down or slow)."""
        return self._health.available

    def script_args(self, op: str, generation: int) -> list[str | int | float]:
        """ARGV for :data:`TRANSITION_LUA`: now, op, generation, then the rules."""
        r = self._rules
        now = "" if self._clock is None else repr(self._clock())
        return [now, op, generation, r.failure_threshold, r.window_seconds, r.reset_timeout,
                r.half_open_max_calls, self._ttl]

    def ticket(self, reply: Sequence[Any]) -> BreakerTicket:
        """The ticket in a :data:`TRANSITION_LUA` reply."""
        admitted, gen, state, wait = reply
        return BreakerTicket(bool(admitted), int(gen), BreakerState(_text(state)),
                             float(_text(wait)))

    def local_ticket(self) -> BreakerTicket:
        """An admission by the in-process breaker (while Redis is being skipped)."""
        return self._local.apply("admit", -1, self._now())

    async def _apply(self, op: str) -> BreakerTicket:
        if self.shared:
            try:
                return await self._shared(op, -1)
            except (RedisError, OSError, TimeoutError) as exc:
                self.redis_failed(exc)
        return self._local.apply(op, -1, self._now())

    async def _record(self, ticket: BreakerTicket, op: str) -> None:
        if ticket.local:
            self._local.apply(op, ticket.generation, self._now())
            return
        if not self.shared:  # the outcome is dropped rather than waited for
            return
        try:
            await self._shared(op, ticket.generation)
        except (RedisError, OSError, TimeoutError) as exc:
            self.redis_failed(exc)

    async def _shared(self, op: str, generation: int) -> BreakerTicket:
        async with asyncio.timeout(REDIS_DEADLINE):
            reply = await self._script(keys=[self._key], args=self.script_args(op, generation))
        return self.ticket(reply)

    def redis_failed(self, exc: BaseException) -> None:
        """Skip Redis until it is healthy again; the local breaker decides meanwhile."""
        self._health.failed(exc, "breakers decide locally")

    def _now(self) -> float:
        return time.time() if self._clock is None else self._clock()
