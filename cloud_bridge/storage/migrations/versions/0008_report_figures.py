"""8: daily report figures (cloud_bridge/reports/figures.py keeps them up to date from the rows added since it last looked; they are a cache: emptying report_marks rebuilds them). Per store and UTC day: detections, decisions by outcome and reason, sends by state; per return window, every exposure (send or holdout) with its return, revenue and cost, and their daily sums. Indexes to find what changed.

Released: never edit (tests/test_migrations.py pins both texts). SQLITE is the SQL the
bridge ran before Alembic, split on ";" exactly as it was run; POSTGRESQL is what it ran on
PostgreSQL (the same text as it was translated then, frozen).
"""

from __future__ import annotations

from cloud_bridge.storage.migrations.released import run_released

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SQLITE = (
    "\n    CREATE TABLE report_marks (name TEXT PRIMARY KEY, value REAL NOT NULL)",
    "\n    CREATE TABLE report_event_days (\n        store_id TEXT NOT NULL, day INTEGER NOT NULL, type TEXT NOT NULL, n INTEGER NOT NULL\n    )",
    "\n    CREATE INDEX report_event_days_day ON report_event_days(day, store_id)",
    "\n    CREATE TABLE report_decision_days (\n        day INTEGER NOT NULL, store_id TEXT NOT NULL, campaign_id TEXT, variant TEXT,\n        outcome TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL\n    )",
    "\n    CREATE INDEX report_decision_days_day ON report_decision_days(day, store_id)",
    "\n    CREATE TABLE report_send_days (\n        day INTEGER NOT NULL, store_id TEXT NOT NULL, campaign_id TEXT, variant TEXT,\n        state TEXT NOT NULL, n INTEGER NOT NULL\n    )",
    "\n    CREATE INDEX report_send_days_day ON report_send_days(day, store_id)",
    "\n    CREATE TABLE report_exposures (\n        return_days INTEGER NOT NULL, decision_id INTEGER NOT NULL, day INTEGER NOT NULL,\n        ts REAL NOT NULL, store_id TEXT, campaign_id TEXT, variant TEXT,\n        holdout INTEGER NOT NULL, counted INTEGER NOT NULL, returned INTEGER NOT NULL,\n        revenue REAL NOT NULL, cost REAL NOT NULL, PRIMARY KEY (return_days, decision_id)\n    )",
    "\n    CREATE INDEX report_exposures_ts ON report_exposures(return_days, ts)",
    "\n    CREATE TABLE report_exposure_days (\n        return_days INTEGER NOT NULL, day INTEGER NOT NULL, store_id TEXT, campaign_id TEXT,\n        variant TEXT, holdout INTEGER NOT NULL, n INTEGER NOT NULL, returns INTEGER NOT NULL,\n        revenue REAL NOT NULL, cost REAL NOT NULL\n    )",
    "\n    CREATE INDEX report_exposure_days_day ON report_exposure_days(return_days, day, store_id)",
    "\n    CREATE INDEX events_type_received ON events(type, received)",
    "\n    CREATE INDEX consents_revoked ON consents(kind, status, ts)",
    "\n    CREATE INDEX customers_erased ON customers(erased)",
    "\n    CREATE INDEX decisions_store ON decisions(store_id, id)\n    ",
)
POSTGRESQL = (
    "\n    CREATE TABLE report_marks (name TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL)",
    "\n    CREATE TABLE report_event_days (\n        store_id TEXT NOT NULL, day BIGINT NOT NULL, type TEXT NOT NULL, n BIGINT NOT NULL\n    )",
    "\n    CREATE INDEX report_event_days_day ON report_event_days(day, store_id)",
    "\n    CREATE TABLE report_decision_days (\n        day BIGINT NOT NULL, store_id TEXT NOT NULL, campaign_id TEXT, variant TEXT,\n        outcome TEXT NOT NULL, reason TEXT NOT NULL, n BIGINT NOT NULL\n    )",
    "\n    CREATE INDEX report_decision_days_day ON report_decision_days(day, store_id)",
    "\n    CREATE TABLE report_send_days (\n        day BIGINT NOT NULL, store_id TEXT NOT NULL, campaign_id TEXT, variant TEXT,\n        state TEXT NOT NULL, n BIGINT NOT NULL\n    )",
    "\n    CREATE INDEX report_send_days_day ON report_send_days(day, store_id)",
    "\n    CREATE TABLE report_exposures (\n        return_days BIGINT NOT NULL, decision_id BIGINT NOT NULL, day BIGINT NOT NULL,\n        ts DOUBLE PRECISION NOT NULL, store_id TEXT, campaign_id TEXT, variant TEXT,\n        holdout BIGINT NOT NULL, counted BIGINT NOT NULL, returned BIGINT NOT NULL,\n        revenue DOUBLE PRECISION NOT NULL, cost DOUBLE PRECISION NOT NULL, PRIMARY KEY (return_days, decision_id)\n    )",
    "\n    CREATE INDEX report_exposures_ts ON report_exposures(return_days, ts)",
    "\n    CREATE TABLE report_exposure_days (\n        return_days BIGINT NOT NULL, day BIGINT NOT NULL, store_id TEXT, campaign_id TEXT,\n        variant TEXT, holdout BIGINT NOT NULL, n BIGINT NOT NULL, returns BIGINT NOT NULL,\n        revenue DOUBLE PRECISION NOT NULL, cost DOUBLE PRECISION NOT NULL\n    )",
    "\n    CREATE INDEX report_exposure_days_day ON report_exposure_days(return_days, day, store_id)",
    "\n    CREATE INDEX events_type_received ON events(type, received)",
    "\n    CREATE INDEX consents_revoked ON consents(kind, status, ts)",
    "\n    CREATE INDEX customers_erased ON customers(erased)",
    "\n    CREATE INDEX decisions_store ON decisions(store_id, id)\n    ",
)


def upgrade() -> None:
    run_released(SQLITE, POSTGRESQL)
