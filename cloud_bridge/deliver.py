"""Delivery: turns a reserved send into an SMS through the provider and records the outcome.

The send row (state ``reserved``) is committed before anything goes out; this module moves it
through ``sending`` to the provider's answer. Retries, rate limiting, receipts and
reconciliation of ambiguous outcomes live here too as they land.
"""

from __future__ import annotations

import logging

from cloud_bridge.providers import Provider, SendResult
from cloud_bridge.store import BridgeStore

__all__ = ["Deliverer"]

log = logging.getLogger(__name__)


class Deliverer:
    def __init__(self, store: BridgeStore, provider: Provider) -> None:
        self.store = store
        self.provider = provider

    def deliver(self, send_id: int, to: str, sender: str, body: str) -> SendResult:
        self.store.update_send(send_id, "sending")
        result = self.provider.send(to, sender, body)
        self.store.update_send(send_id, result.status, result.provider_id, result.error)
        log.info("send %s -> %s", send_id, result.status)
        return result
