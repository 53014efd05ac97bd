"""4: delivery. The send outbox's state machine (reserved -> sending -> accepted -> delivered / undelivered / failed / expired / unknown) with its unique key, attempts, expiry, lease and cost; a log of every transition; confirmations of inbound keywords (replies, same state machine); one-click opt-out links; inbound messages and receipts seen (replays refused); numbers a provider called invalid. No phone number or inbound text is stored here: inbound senders are kept as keyed hashes.

Released: never edit (tests/test_migrations.py pins both texts). SQLITE is the SQL the
bridge ran before Alembic, split on ";" exactly as it was run; POSTGRESQL is what it ran on
PostgreSQL (the same text as it was translated then, frozen).
"""

from __future__ import annotations

from cloud_bridge.storage.migrations.released import run_released

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SQLITE = (
    "\n    ALTER TABLE sends ADD COLUMN idem_key TEXT",
    "\n    ALTER TABLE sends ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
    "\n    ALTER TABLE sends ADD COLUMN expires_at REAL",
    "\n    ALTER TABLE sends ADD COLUMN next_at REAL",
    "\n    ALTER TABLE sends ADD COLUMN lease_until REAL",
    "\n    ALTER TABLE sends ADD COLUMN attempt_at REAL",
    "\n    ALTER TABLE sends ADD COLUMN encoding TEXT",
    "\n    ALTER TABLE sends ADD COLUMN parts INTEGER",
    "\n    ALTER TABLE sends ADD COLUMN cost REAL",
    "\n    ALTER TABLE sends ADD COLUMN currency TEXT",
    "\n    ALTER TABLE sends ADD COLUMN language TEXT",
    "\n    ALTER TABLE sends ADD COLUMN updated REAL",
    "\n    ALTER TABLE sends ADD COLUMN accepted_at REAL",
    "\n    ALTER TABLE sends ADD COLUMN final_at REAL",
    "\n    CREATE UNIQUE INDEX sends_idem_key ON sends(idem_key)",
    "\n    CREATE INDEX sends_state_next ON sends(state, next_at)",
    "\n    CREATE INDEX sends_provider_id ON sends(provider, provider_id)",
    "\n    CREATE TABLE replies (\n        id INTEGER PRIMARY KEY, idem_key TEXT NOT NULL UNIQUE, customer_id INTEGER NOT NULL,\n        action TEXT NOT NULL, ts REAL NOT NULL, state TEXT NOT NULL, provider TEXT NOT NULL,\n        provider_id TEXT, error TEXT, sender TEXT NOT NULL, body TEXT NOT NULL,\n        attempts INTEGER NOT NULL DEFAULT 0, expires_at REAL, next_at REAL, lease_until REAL,\n        attempt_at REAL, encoding TEXT, parts INTEGER, cost REAL, currency TEXT, language TEXT,\n        updated REAL, accepted_at REAL, final_at REAL\n    )",
    "\n    CREATE INDEX replies_state_next ON replies(state, next_at)",
    "\n    CREATE INDEX replies_provider_id ON replies(provider, provider_id)",
    "\n    CREATE TABLE send_log (\n        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, send_id INTEGER NOT NULL, ts REAL NOT NULL,\n        state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''\n    )",
    "\n    CREATE INDEX send_log_send ON send_log(kind, send_id)",
    "\n    CREATE TABLE optout_links (\n        token TEXT PRIMARY KEY, customer_id INTEGER NOT NULL, send_id INTEGER,\n        created REAL NOT NULL, used REAL\n    )",
    "\n    CREATE INDEX optout_links_send ON optout_links(send_id)",
    "\n    CREATE TABLE inbound_messages (\n        id INTEGER PRIMARY KEY, provider TEXT NOT NULL, message_id TEXT NOT NULL,\n        phone_hmac TEXT, keyword TEXT, action TEXT, customers INTEGER NOT NULL DEFAULT 0,\n        received REAL NOT NULL, UNIQUE (provider, message_id)\n    )",
    "\n    CREATE TABLE delivery_receipts (\n        id INTEGER PRIMARY KEY, provider TEXT NOT NULL, provider_id TEXT NOT NULL,\n        status TEXT NOT NULL, error TEXT, received REAL NOT NULL,\n        UNIQUE (provider, provider_id, status)\n    )",
    "\n    CREATE TABLE number_flags (\n        customer_id INTEGER PRIMARY KEY, reason TEXT NOT NULL, code TEXT, ts REAL NOT NULL\n    )",
    "\n    ",
)
POSTGRESQL = (
    "\n    ALTER TABLE sends ADD COLUMN idem_key TEXT",
    "\n    ALTER TABLE sends ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0",
    "\n    ALTER TABLE sends ADD COLUMN expires_at DOUBLE PRECISION",
    "\n    ALTER TABLE sends ADD COLUMN next_at DOUBLE PRECISION",
    "\n    ALTER TABLE sends ADD COLUMN lease_until DOUBLE PRECISION",
    "\n    ALTER TABLE sends ADD COLUMN attempt_at DOUBLE PRECISION",
    "\n    ALTER TABLE sends ADD COLUMN encoding TEXT",
    "\n    ALTER TABLE sends ADD COLUMN parts BIGINT",
    "\n    ALTER TABLE sends ADD COLUMN cost DOUBLE PRECISION",
    "\n    ALTER TABLE sends ADD COLUMN currency TEXT",
    "\n    ALTER TABLE sends ADD COLUMN language TEXT",
    "\n    ALTER TABLE sends ADD COLUMN updated DOUBLE PRECISION",
    "\n    ALTER TABLE sends ADD COLUMN accepted_at DOUBLE PRECISION",
    "\n    ALTER TABLE sends ADD COLUMN final_at DOUBLE PRECISION",
    "\n    CREATE UNIQUE INDEX sends_idem_key ON sends(idem_key)",
    "\n    CREATE INDEX sends_state_next ON sends(state, next_at)",
    "\n    CREATE INDEX sends_provider_id ON sends(provider, provider_id)",
    "\n    CREATE TABLE replies (\n        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, idem_key TEXT NOT NULL UNIQUE, customer_id BIGINT NOT NULL,\n        action TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, provider TEXT NOT NULL,\n        provider_id TEXT, error TEXT, sender TEXT NOT NULL, body TEXT NOT NULL,\n        attempts BIGINT NOT NULL DEFAULT 0, expires_at DOUBLE PRECISION, next_at DOUBLE PRECISION, lease_until DOUBLE PRECISION,\n        attempt_at DOUBLE PRECISION, encoding TEXT, parts BIGINT, cost DOUBLE PRECISION, currency TEXT, language TEXT,\n        updated DOUBLE PRECISION, accepted_at DOUBLE PRECISION, final_at DOUBLE PRECISION\n    )",
    "\n    CREATE INDEX replies_state_next ON replies(state, next_at)",
    "\n    CREATE INDEX replies_provider_id ON replies(provider, provider_id)",
    "\n    CREATE TABLE send_log (\n        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL, send_id BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL,\n        state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''\n    )",
    "\n    CREATE INDEX send_log_send ON send_log(kind, send_id)",
    "\n    CREATE TABLE optout_links (\n        token TEXT PRIMARY KEY, customer_id BIGINT NOT NULL, send_id BIGINT,\n        created DOUBLE PRECISION NOT NULL, used DOUBLE PRECISION\n    )",
    "\n    CREATE INDEX optout_links_send ON optout_links(send_id)",
    "\n    CREATE TABLE inbound_messages (\n        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, provider TEXT NOT NULL, message_id TEXT NOT NULL,\n        phone_hmac TEXT, keyword TEXT, action TEXT, customers BIGINT NOT NULL DEFAULT 0,\n        received DOUBLE PRECISION NOT NULL, UNIQUE (provider, message_id)\n    )",
    "\n    CREATE TABLE delivery_receipts (\n        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, provider TEXT NOT NULL, provider_id TEXT NOT NULL,\n        status TEXT NOT NULL, error TEXT, received DOUBLE PRECISION NOT NULL,\n        UNIQUE (provider, provider_id, status)\n    )",
    "\n    CREATE TABLE number_flags (\n        customer_id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, reason TEXT NOT NULL, code TEXT, ts DOUBLE PRECISION NOT NULL\n    )",
)


def upgrade() -> None:
    run_released(SQLITE, POSTGRESQL)
