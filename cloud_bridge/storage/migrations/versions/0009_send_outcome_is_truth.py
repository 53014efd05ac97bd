"""9: a send's outcome is the truth everywhere. A decision to send reads what became of its SMS (DECISION_OF_SEND: 'reserved' until the provider accepts it, then 'sent', 'delivered', ...), never 'sent' ahead of the provider; a send the bridge dropped for lack of capacity (queue full, or it would have waited past its expiry) is 'shed', no longer 'failed' or 'expired'. Old rows are brought in line; the report figures, a cache, are rebuilt.

Released: never edit (tests/test_migrations.py pins both texts). SQLITE is the SQL the
bridge ran before Alembic, split on ";" exactly as it was run; POSTGRESQL is what it ran on
PostgreSQL (the same text as it was translated then, frozen).
"""

from __future__ import annotations

from cloud_bridge.storage.migrations.released import run_released

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SQLITE = (
    "\n    UPDATE sends SET state='shed' WHERE state IN ('failed', 'expired') AND error LIKE 'shed:%'",
    "\n    UPDATE decisions SET reason=coalesce((SELECT CASE s.state WHEN 'accepted' THEN 'sent'\n        WHEN 'sending' THEN 'reserved' ELSE s.state END FROM sends s\n        WHERE s.decision_id=decisions.id), reason) WHERE outcome='send'",
    "\n    DELETE FROM report_marks\n    ",
)
POSTGRESQL = (
    "\n    UPDATE sends SET state='shed' WHERE state IN ('failed', 'expired') AND error ILIKE 'shed:%'",
    "\n    UPDATE decisions SET reason=coalesce((SELECT CASE s.state WHEN 'accepted' THEN 'sent'\n        WHEN 'sending' THEN 'reserved' ELSE s.state END FROM sends s\n        WHERE s.decision_id=decisions.id), reason) WHERE outcome='send'",
    "\n    DELETE FROM report_marks\n    ",
)


def upgrade() -> None:
    run_released(SQLITE, POSTGRESQL)
