"""Errors of the ``oauth`` package.

    OAuthError
    └── AssertionRejected   an internal assertion failed verification (reason in the message)
"""


class OAuthError(Exception):
    """Root of every error raised by this package."""


class AssertionRejected(OAuthError):
    """An internal assertion is missing, malformed, forged, expired or meant for someone else."""
