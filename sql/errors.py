"""Errors of the ``sql`` package; one root, translated to HTTP only by the application roots.

    DatabaseError
    ├── DatabaseUnavailable   the server cannot be reached, dropped the connection or shuts down
    ├── MigrationError        a migration failed or an applied one was edited
    ├── UnsafeRoleError       the login role could bypass row-level security
    └── InvalidTenant         an empty or malformed tenant key reached rls_transaction
"""


class DatabaseError(Exception):
    """Root of every error raised by this package."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached or the connection broke; callers answer 503 and retry.

    Raised from a commit, the outcome is unknown: the transaction may have committed."""


class MigrationError(DatabaseError):
    """A migration could not be applied, or its file no longer matches what was applied."""


class UnsafeRoleError(DatabaseError):
    """The application's login role owns tables, is a superuser, or bypasses RLS."""


class InvalidTenant(DatabaseError):
    """A tenant key was empty, too long, or not a string."""
