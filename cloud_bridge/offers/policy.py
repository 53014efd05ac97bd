"""The offer policy's defaults, each defined once: frequency caps, sending hours, what counts.

Everything else refers to these names: the decision core (``decide.py``: its advisory checks),
the store (``storage/store.py``: the binding re-check in ``reserve_offer`` and the histories it
reads), the campaign and tenant file models, the console's campaign form and the settings.
Released migrations keep their own SQL defaults (a released migration never changes);
``tests/db/test_policy_defaults.py`` checks that a freshly migrated database's column defaults
equal these, on both engines, and that no other module spells these values again.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CAPPED_STATES",
    "CAP_COUNT",
    "CAP_DAYS",
    "COUNTRY_HOURS",
    "OVERALL_CAP",
    "OVERALL_DAYS",
    "SEND_END",
    "SEND_START",
]

# Per campaign and customer: at most CAP_COUNT SMS in CAP_DAYS days (a campaign may set its own).
CAP_COUNT: Final = 1
CAP_DAYS: Final = 30

# Per customer across every campaign: at most OVERALL_CAP SMS in OVERALL_DAYS days (settings).
OVERALL_CAP: Final = 4
OVERALL_DAYS: Final = 30

# A store's local sending hours, [start, end) (a store may set its own, within COUNTRY_HOURS).
SEND_START: Final = "09:00"
SEND_END: Final = "21:00"

# Legal sending-hour minimums by store country (local time); store hours can only narrow them.
# US: TCPA quiet hours (no marketing messages before 08:00 or after 21:00 recipient local time).
COUNTRY_HOURS: Final[dict[str, tuple[str, str]]] = {
    "US": ("08:00", "21:00"),
}

# Sends in these states count against caps and budgets, in the advisory check (the histories
# the store reads for ``decide``) and in the binding one (``reserve_offer``) alike: a failed or
# expired send never reached the customer.
CAPPED_STATES: Final = ("reserved", "sending", "accepted", "delivered", "unknown")
