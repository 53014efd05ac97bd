"""3: sensor provisioning. Only hashes of credentials are kept: the broker password as the Mosquitto PBKDF2 hash the password file needs, the API token as the SHA-256 of its secret part. A pairing code is stored as a keyed hash; the credentials it hands out once are sealed with the data key and deleted when the code is used.

Released: never edit (tests/test_migrations.py pins both texts). SQLITE is the SQL the
bridge ran before Alembic, split on ";" exactly as it was run; POSTGRESQL is what it ran on
PostgreSQL (the same text as it was translated then, frozen).
"""

from __future__ import annotations

from cloud_bridge.storage.migrations.released import run_released

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SQLITE = (
    "\n    CREATE TABLE sensor_credentials (\n        store_id TEXT NOT NULL, sensor_id TEXT NOT NULL, mqtt_username TEXT NOT NULL UNIQUE,\n        mqtt_password_hash TEXT NOT NULL, token_id TEXT NOT NULL UNIQUE,\n        token_sha256 TEXT NOT NULL, channel INTEGER, created REAL NOT NULL, rotated REAL,\n        revoked REAL, PRIMARY KEY (store_id, sensor_id)\n    )",
    "\n    CREATE TABLE pairing_codes (\n        code_hash TEXT PRIMARY KEY, store_id TEXT NOT NULL, sensor_id TEXT NOT NULL,\n        sealed BLOB, created REAL NOT NULL, expires REAL NOT NULL, used REAL, used_by TEXT\n    )",
    "\n    CREATE INDEX pairing_codes_sensor ON pairing_codes(store_id, sensor_id)",
    "\n    ",
)
POSTGRESQL = (
    "\n    CREATE TABLE sensor_credentials (\n        store_id TEXT NOT NULL, sensor_id TEXT NOT NULL, mqtt_username TEXT NOT NULL UNIQUE,\n        mqtt_password_hash TEXT NOT NULL, token_id TEXT NOT NULL UNIQUE,\n        token_sha256 TEXT NOT NULL, channel BIGINT, created DOUBLE PRECISION NOT NULL, rotated DOUBLE PRECISION,\n        revoked DOUBLE PRECISION, PRIMARY KEY (store_id, sensor_id)\n    )",
    "\n    CREATE TABLE pairing_codes (\n        code_hash TEXT PRIMARY KEY, store_id TEXT NOT NULL, sensor_id TEXT NOT NULL,\n        sealed BYTEA, created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL, used DOUBLE PRECISION, used_by TEXT\n    )",
    "\n    CREATE INDEX pairing_codes_sensor ON pairing_codes(store_id, sensor_id)",
)


def upgrade() -> None:
    run_released(SQLITE, POSTGRESQL)
