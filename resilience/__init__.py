"""Rate limits, Redis connections and circuit breakers; knows nothing of the app."""

from resilience.breaker import BreakerState, BreakerTicket, CircuitBreaker
from resilience.errors import CircuitOpen, LimiterUnavailable, ResilienceError
from resilience.ratelimit import Admission, Bucket, Decision, FailurePolicy, RateLimiter, admit
from resilience.redis import create_redis

__all__ = [
    "Admission",
    "BreakerState",
    "BreakerTicket",
    "Bucket",
    "CircuitBreaker",
    "CircuitOpen",
    "Decision",
    "FailurePolicy",
    "LimiterUnavailable",
    "RateLimiter",
    "ResilienceError",
    "admit",
    "create_redis",
]
