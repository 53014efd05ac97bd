"""Every send state reads a documented reason (the outcomes through a store:
tests/db/test_send_outcomes.py)."""

from __future__ import annotations


def test_every_send_state_reads_a_documented_reason() -> None:
    """Each state a send can be in reads as a reason explained in plain words (README table),
    and every reason of a send's fate is one a state reads as."""
    from cloud_bridge.delivery.outbox import FROM
    from cloud_bridge.offers.decide import DECISION_REASONS, SEND_REASONS
    from cloud_bridge.storage.store import decision_of_send

    states = set(FROM) | {"reserved"}
    readings = {decision_of_send(s) for s in states}
    assert readings == set(SEND_REASONS) | {"reserved"}
    assert "reserved" in DECISION_REASONS and decision_of_send("sending") == "reserved"
    assert decision_of_send("accepted") == "sent"  # the provider's acceptance, nothing earlier
