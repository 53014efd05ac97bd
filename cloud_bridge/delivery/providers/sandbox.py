"""The sandbox: accepts every message and records it in the bridge store (demo and tests)."""

from __future__ import annotations

import hashlib
import time

from cloud_bridge.delivery.providers.base import (
    OneOff,
    Outgoing,
    SendResult,
    StatusResult,
)
from cloud_bridge.storage.sends import sandbox_has
from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "SandboxProvider",
]


class SandboxProvider(OneOff):
    """Accepts every message and records it in the bridge store's ``sandbox_messages``."""

    name = "sandbox"
    account = "sandbox"
    can_reconcile = True
    default_rate_per_s = 1000.0  # no network, no operator: pace only when configured

    def __init__(self, store: BridgeStore) -> None:
        self.store = store

    @staticmethod
    def _sid(key: str) -> str:
        return "SB" + hashlib.sha256(key.encode()).hexdigest()[:32]

    def submit(self, msg: Outgoing) -> SendResult:
        sid = self._sid(msg.key)
        try:
            self.store.sandbox_record(sid, msg.to, msg.sender, msg.body, time.time())
        except Exception as exc:  # sqlite3.IntegrityError: this key was recorded before
            if sandbox_has(self.store, sid):
                return SendResult("accepted", provider_id=sid)
            raise exc
        return SendResult("accepted", provider_id=sid)

    def status(self, msg: Outgoing) -> StatusResult:
        sid = msg.provider_id or self._sid(msg.key)
        if sandbox_has(self.store, sid):
            return StatusResult("accepted", provider_id=sid)
        return StatusResult("not_found")
