"""Errors of the ``resilience`` package.

    ResilienceError
    └── LimiterUnavailable   the limit store cannot be reached and the policy is fail-closed
"""


class ResilienceError(Exception):
    """Root of every error raised by this package."""


class LimiterUnavailable(ResilienceError):
    """The rate-limit store is unreachable and the limit is configured to fail closed."""
