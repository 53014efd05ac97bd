"""5: the offer engine. Campaigns get audience rules, schedule, variants, holdout %, budget, status draft/active/paused/ended (with why a guard paused one), minimum dwell and RSSI (JSON columns hold the validated structures of cloud_bridge/offers/campaigns.py); stores a daily SMS budget; decisions their variant, holdout flag, store, segment and the chain of checks (``explain``); sends their variant; imported CRM purchases (revenue); engine alerts.

Released: never edit (tests/test_migrations.py pins both texts). SQLITE is the SQL the
bridge ran before Alembic, split on ";" exactly as it was run; POSTGRESQL is what it ran on
PostgreSQL (the same text as it was translated then, frozen).
"""

from __future__ import annotations

from cloud_bridge.storage.migrations.released import run_released

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SQLITE = (
    "\n    ALTER TABLE stores ADD COLUMN daily_budget INTEGER",
    "\n    ALTER TABLE campaigns ADD COLUMN variants TEXT NOT NULL DEFAULT '[]'",
    "\n    ALTER TABLE campaigns ADD COLUMN holdout_pct REAL NOT NULL DEFAULT 0",
    "\n    ALTER TABLE campaigns ADD COLUMN budget INTEGER",
    "\n    ALTER TABLE campaigns ADD COLUMN audience TEXT NOT NULL DEFAULT '{}'",
    "\n    ALTER TABLE campaigns ADD COLUMN schedule TEXT NOT NULL DEFAULT '{}'",
    "\n    ALTER TABLE campaigns ADD COLUMN min_dwell_s REAL NOT NULL DEFAULT 0",
    "\n    ALTER TABLE campaigns ADD COLUMN min_rssi REAL",
    "\n    ALTER TABLE campaigns ADD COLUMN rssi_stat TEXT NOT NULL DEFAULT 'median'",
    "\n    ALTER TABLE campaigns ADD COLUMN source TEXT",
    "\n    ALTER TABLE campaigns ADD COLUMN created REAL",
    "\n    ALTER TABLE campaigns ADD COLUMN updated REAL",
    "\n    ALTER TABLE campaigns ADD COLUMN paused_reason TEXT",
    "\n    ALTER TABLE campaigns ADD COLUMN paused_at REAL",
    "\n    ALTER TABLE decisions ADD COLUMN variant TEXT",
    "\n    ALTER TABLE decisions ADD COLUMN holdout INTEGER NOT NULL DEFAULT 0",
    "\n    ALTER TABLE decisions ADD COLUMN store_id TEXT",
    "\n    ALTER TABLE decisions ADD COLUMN segment TEXT",
    "\n    ALTER TABLE decisions ADD COLUMN checks TEXT",
    "\n    ALTER TABLE sends ADD COLUMN variant TEXT",
    "\n    CREATE INDEX decisions_customer ON decisions(customer_id, outcome, campaign_id, ts)",
    "\n    CREATE INDEX decisions_campaign ON decisions(campaign_id, outcome)",
    "\n    CREATE INDEX events_subject ON events(subject, type, ts)",
    "\n    CREATE INDEX sends_campaign ON sends(campaign_id, state)",
    "\n    CREATE INDEX sends_store ON sends(store_id, ts)",
    "\n    CREATE TABLE purchases (\n        id INTEGER PRIMARY KEY, ref TEXT NOT NULL UNIQUE, customer_id INTEGER NOT NULL,\n        store_id TEXT, ts REAL NOT NULL, amount REAL NOT NULL, currency TEXT,\n        imported REAL NOT NULL\n    )",
    "\n    CREATE INDEX purchases_customer ON purchases(customer_id, ts)",
    "\n    CREATE TABLE engine_alerts (\n        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, campaign_id TEXT, detail TEXT NOT NULL,\n        ts REAL NOT NULL\n    )",
    "\n    ",
)
POSTGRESQL = (
    "\n    ALTER TABLE stores ADD COLUMN daily_budget BIGINT",
    "\n    ALTER TABLE campaigns ADD COLUMN variants TEXT NOT NULL DEFAULT '[]'",
    "\n    ALTER TABLE campaigns ADD COLUMN holdout_pct DOUBLE PRECISION NOT NULL DEFAULT 0",
    "\n    ALTER TABLE campaigns ADD COLUMN budget BIGINT",
    "\n    ALTER TABLE campaigns ADD COLUMN audience TEXT NOT NULL DEFAULT '{}'",
    "\n    ALTER TABLE campaigns ADD COLUMN schedule TEXT NOT NULL DEFAULT '{}'",
    "\n    ALTER TABLE campaigns ADD COLUMN min_dwell_s DOUBLE PRECISION NOT NULL DEFAULT 0",
    "\n    ALTER TABLE campaigns ADD COLUMN min_rssi DOUBLE PRECISION",
    "\n    ALTER TABLE campaigns ADD COLUMN rssi_stat TEXT NOT NULL DEFAULT 'median'",
    "\n    ALTER TABLE campaigns ADD COLUMN source TEXT",
    "\n    ALTER TABLE campaigns ADD COLUMN created DOUBLE PRECISION",
    "\n    ALTER TABLE campaigns ADD COLUMN updated DOUBLE PRECISION",
    "\n    ALTER TABLE campaigns ADD COLUMN paused_reason TEXT",
    "\n    ALTER TABLE campaigns ADD COLUMN paused_at DOUBLE PRECISION",
    "\n    ALTER TABLE decisions ADD COLUMN variant TEXT",
    "\n    ALTER TABLE decisions ADD COLUMN holdout BIGINT NOT NULL DEFAULT 0",
    "\n    ALTER TABLE decisions ADD COLUMN store_id TEXT",
    "\n    ALTER TABLE decisions ADD COLUMN segment TEXT",
    "\n    ALTER TABLE decisions ADD COLUMN checks TEXT",
    "\n    ALTER TABLE sends ADD COLUMN variant TEXT",
    "\n    CREATE INDEX decisions_customer ON decisions(customer_id, outcome, campaign_id, ts)",
    "\n    CREATE INDEX decisions_campaign ON decisions(campaign_id, outcome)",
    "\n    CREATE INDEX events_subject ON events(subject, type, ts)",
    "\n    CREATE INDEX sends_campaign ON sends(campaign_id, state)",
    "\n    CREATE INDEX sends_store ON sends(store_id, ts)",
    "\n    CREATE TABLE purchases (\n        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, ref TEXT NOT NULL UNIQUE, customer_id BIGINT NOT NULL,\n        store_id TEXT, ts DOUBLE PRECISION NOT NULL, amount DOUBLE PRECISION NOT NULL, currency TEXT,\n        imported DOUBLE PRECISION NOT NULL\n    )",
    "\n    CREATE INDEX purchases_customer ON purchases(customer_id, ts)",
    "\n    CREATE TABLE engine_alerts (\n        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL, campaign_id TEXT, detail TEXT NOT NULL,\n        ts DOUBLE PRECISION NOT NULL\n    )",
)


def upgrade() -> None:
    run_released(SQLITE, POSTGRESQL)
