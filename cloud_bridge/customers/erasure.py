"""Erasure on request, and the suppression list it leaves behind.

Erasing a customer removes their phone, name, MACs, segment fields, consents and the texts of
messages sent to them; what stays is an anonymous row (so past decisions still add up) and a
suppression entry: keyed hashes (HMAC under the data key) of the normalised phone and of the
CRM id. The rule:

- a CRM import or tenant file cannot bring a suppressed customer back: the row is reported as
  ``suppressed`` and skipped, because evidence taken elsewhere cannot show fresh consent;
- a new double opt-in (enrolment confirmed with a new SMS code) is new, provable consent: it
  is allowed and lifts the suppression of that phone (and of the CRM id it names).

The next roster excludes the customer, so sensors forget the subject at their next swap.
"""

from __future__ import annotations

import logging

from cloud_bridge.storage.store import BridgeStore

__all__ = ["erase_customer", "suppressed"]

log = logging.getLogger(__name__)


def erase_customer(store: BridgeStore, crm_id: str, now: float) -> bool:
    """Erase the customer with this CRM id; False if there is none."""
    row = store.customer_row(crm_id)
    if row is None:
        return False
    store.erase_customer(row["id"], now)
    log.info("customer erased (row %s)", row["id"])
    return True


def suppressed(store: BridgeStore, phone: str | None, crm_id: str | None) -> bool:
    """Was a customer with this E.164 phone or this CRM id erased (and not re-enrolled since)?"""
    cipher = store.cipher
    return bool(
        (phone and store.suppression("phone", cipher.lookup("phone", phone)))
        or (crm_id and store.suppression("crm", cipher.lookup("crm", crm_id)))
    )
