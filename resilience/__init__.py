"""Rate limits, Redis connections and circuit breakers; knows nothing of the app."""

from resilience.breaker import BreakerState, CircuitBreaker
from resilience.errors import CircuitOpen, LimiterUnavailable, ResilienceError
from resilience.ratelimit import Decision, FailurePolicy, RateLimiter
from resilience.redis import create_redis

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "Decision",
    "FailurePolicy",
    "LimiterUnavailable",
    "RateLimiter",
    "ResilienceError",
    "create_redis",
]
