"""Rate limits, Redis connections and (later) circuit breakers; knows nothing of the app."""

from resilience.errors import LimiterUnavailable, ResilienceError
from resilience.ratelimit import Decision, FailurePolicy, RateLimiter
from resilience.redis import create_redis

__all__ = [
    "Decision",
    "FailurePolicy",
    "LimiterUnavailable",
    "RateLimiter",
    "ResilienceError",
    "create_redis",
]
