"""Store tests on both engines: SQLite and a real PostgreSQL (the ``db_location`` fixture)."""
