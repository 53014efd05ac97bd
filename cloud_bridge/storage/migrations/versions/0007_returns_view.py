"""7: returns, as a view: every later ``visit`` of the customer after a send or a holdout would-be send, with the delay (a report applies its window: a return is after_s <= N days). Derived from decisions and events, so it never disagrees with them.

Released: never edit (tests/test_migrations.py pins both texts). SQLITE is the SQL the
bridge ran before Alembic, split on ";" exactly as it was run; POSTGRESQL is what it ran on
PostgreSQL (the same text as it was translated then, frozen).
"""

from __future__ import annotations

from cloud_bridge.storage.migrations.released import run_released

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SQLITE = (
    "\n    CREATE VIEW returns AS\n    SELECT d.id AS decision_id, d.campaign_id, d.variant, d.store_id, d.holdout,\n        d.customer_id, d.ts AS exposed_at, e.event_id, e.store_id AS visit_store_id,\n        e.ts AS returned_at, e.ts - d.ts AS after_s\n    FROM decisions d JOIN customers c ON c.id = d.customer_id\n    JOIN events e ON e.subject = c.subject AND e.type = 'visit' AND e.ts > d.ts\n    WHERE d.outcome IN ('send', 'holdout')\n    ",
)
POSTGRESQL = (
    "\n    CREATE VIEW returns AS\n    SELECT d.id AS decision_id, d.campaign_id, d.variant, d.store_id, d.holdout,\n        d.customer_id, d.ts AS exposed_at, e.event_id, e.store_id AS visit_store_id,\n        e.ts AS returned_at, e.ts - d.ts AS after_s\n    FROM decisions d JOIN customers c ON c.id = d.customer_id\n    JOIN events e ON e.subject = c.subject AND e.type = 'visit' AND e.ts > d.ts\n    WHERE d.outcome IN ('send', 'holdout')\n    ",
)


def upgrade() -> None:
    run_released(SQLITE, POSTGRESQL)
