"""Schema, migrations, named queries, the connection pool and the RLS transaction.

Application code touches tenant tables only through :func:`rls_transaction`.
"""

from sql.audit import ChainReport, verify_audit_chain
from sql.errors import DatabaseError, DatabaseUnavailable, MigrationError, UnsafeRoleError
from sql.migrate import apply_migrations, set_app_password
from sql.pool import admin_connection, create_pool, verify_app_role
from sql.queries import QUERIES
from sql.rls import Tenant, rls_transaction

__all__ = [
    "QUERIES",
    "ChainReport",
    "DatabaseError",
    "DatabaseUnavailable",
    "MigrationError",
    "Tenant",
    "UnsafeRoleError",
    "admin_connection",
    "apply_migrations",
    "create_pool",
    "rls_transaction",
    "set_app_password",
    "verify_app_role",
    "verify_audit_chain",
]
