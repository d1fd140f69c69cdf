"""Errors of the ``resilience`` package.

    ResilienceError
    ├── LimiterUnavailable   the limit store cannot be reached and the policy is fail-closed
    └── CircuitOpen          a circuit breaker refused a call without making it
"""


class ResilienceError(Exception):
    """Root of every error raised by this package."""


class LimiterUnavailable(ResilienceError):
    """The rate-limit store is unreachable and the limit is configured to fail closed."""


class CircuitOpen(ResilienceError):
    """A circuit breaker is open (or its half-open trial slots are taken); the call was not made.

    ``retry_after`` is the number of seconds until the breaker lets a trial through.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after
