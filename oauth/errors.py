"""Errors of the ``oauth`` package.

    OAuthError
    ├── JwtRejected           a JWT broke a rule of oauth.jwt_rules (``reason`` says which)
    │   └── AssertionRejected an internal assertion failed verification
    ├── KeyringError          the token keyring's configuration is malformed
    ├── VaultError            a stored token cannot be sealed or opened
    │   ├── UnknownKeyId      the row names a key id the keyring does not hold
    │   └── DecryptionFailed  authentication failed: wrong row, wrong key, or tampering
    ├── NotConnected          the user has no connection to the provider
    ├── NeedsReconnect        the provider refused the refresh token; the user must reconnect
    ├── TokenEndpointError    the provider's token endpoint answered an OAuth error
    ├── RefreshFailed         a refresh could not be completed now (provider or lock store down)
    │   └── RefreshTimedOut   another replica's refresh did not finish within the wait budget
    ├── CatalogueError        a catalogue entry, override or discovery document is unusable
    ├── ConnectRejected       a connect callback was refused (``code`` says why)
    └── ProviderCallError     a provider API call did not succeed
        ├── ProviderUnauthorized  the provider no longer accepts the access token
        ├── MissingScope          the token lacks a scope the call needs
        ├── ProviderUnavailable   5xx, timeout or unreachable: retry later; trips the breaker
        │   └── ProviderRateLimited  the quota is spent: retry later; never trips the breaker
        └── ProviderRejected      any other refusal (a business error, e.g. 404 or 422)

No message ever contains a token, a key or a decrypted payload.
"""


class OAuthError(Exception):
    """Root of every error raised by this package."""


class JwtRejected(OAuthError):
    """A JWT is malformed, forged, expired or meant for someone else. ``reason`` is a stable
    code (``algorithm``, ``signature``, ``expired``, ...); the message is safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AssertionRejected(JwtRejected):
    """An internal assertion is missing, malformed, forged, expired or meant for someone else."""

    def __init__(self, message: str, reason: str = "assertion") -> None:
        super().__init__(reason, message)


class KeyringError(OAuthError):
    """The keyring configuration is malformed (the message names the entry, never its key)."""


class VaultError(OAuthError):
    """A token bundle could not be encrypted or decrypted."""


class UnknownKeyId(VaultError):
    """A stored ciphertext names a key id that is not in the keyring (removed too early?)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"key id {key_id!r} is not in the token keyring")
        self.key_id = key_id


class DecryptionFailed(VaultError):
    """The ciphertext does not authenticate for this row and key: it was moved from another
    organisation's, user's or provider's row, or altered."""


class NotConnected(OAuthError):
    """There is no stored connection for this (organisation, user, provider)."""

    def __init__(self, provider: str) -> None:
        super().__init__(f"not connected to provider {provider!r}")
        self.provider = provider


class NeedsReconnect(OAuthError):
    """The provider refused the stored refresh token (``invalid_grant``) or there is none; the
    user must connect again. Never retried automatically."""

    def __init__(self, provider: str) -> None:
        super().__init__(f"the connection to provider {provider!r} must be re-established")
        self.provider = provider


class TokenEndpointError(OAuthError):
    """The token endpoint answered an RFC 6749 §5.2 error; ``error`` is its code."""

    def __init__(self, error: str, status: int | None = None) -> None:
        suffix = f" (HTTP {status})" if status else ""
        super().__init__(f"token endpoint error {error[:64]!r}{suffix}")
        self.error = error
        self.status = status


class RefreshFailed(OAuthError):
    """The token could not be refreshed now; the stored connection is unchanged. Retry later."""


class RefreshTimedOut(RefreshFailed):
    """Waiting for another caller's refresh exceeded the wait budget."""


class CatalogueError(OAuthError):
    """A catalogue entry, override or discovery document is unusable (no secret in the text)."""


class ConnectRejected(OAuthError):
    """A callback was refused; ``code`` is stable, the message is safe to show to the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ProviderCallError(OAuthError):
    """A provider API call did not succeed; messages carry no token and no provider body."""


class ProviderUnauthorized(ProviderCallError):
    """The provider no longer accepts the access token: the user must reconnect."""


class MissingScope(ProviderCallError):
    """The token lacks a scope the call needs; ``scopes`` may be empty when unnamed."""

    def __init__(self, provider: str, scopes: tuple[str, ...]) -> None:
        named = ", ".join(scopes) if scopes else "a required scope"
        super().__init__(f"{provider}: the connection lacks {named}")
        self.scopes = scopes


class ProviderUnavailable(ProviderCallError):
    """Failing, slow or unreachable: worth retrying later. These trip the breaker, except the
    :class:`ProviderRateLimited` subclass."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider} is unavailable ({reason})")
        self.reason = reason


class ProviderRateLimited(ProviderUnavailable):
    """The provider's quota for this token (or app) is spent; retry after a while. A quota is
    per user or per app, so it never opens the breaker every organisation shares."""


class ProviderRejected(ProviderCallError):
    """The provider refused this request (a business error, e.g. 404 or 422)."""

    def __init__(self, provider: str, status: int, code: str | None = None) -> None:
        detail = f" ({code})" if code else ""
        super().__init__(f"{provider} refused the request: HTTP {status}{detail}")
        self.status = status
        self.code = code
