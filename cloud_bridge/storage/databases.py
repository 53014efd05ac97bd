"""Creating databases on a PostgreSQL server (the local clusters of dev/ and the tests)."""

from __future__ import annotations

__all__ = ["create_pg_database"]


def create_pg_database(admin_dsn: str, name: str) -> None:
    """Create the database ``name`` through the server at ``admin_dsn`` (outside a transaction,
    as PostgreSQL requires)."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
