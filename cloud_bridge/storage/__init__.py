"""Storage: the bridge's database (SQLite or PostgreSQL), its schema and migrations; all SQL lives here."""
