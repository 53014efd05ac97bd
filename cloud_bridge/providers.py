"""SMS providers behind one small interface. The sandbox records messages for demos and tests."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal, Protocol

from cloud_bridge.store import BridgeStore

__all__ = ["SendResult", "Provider", "SandboxProvider", "make_provider"]


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the provider said: accepted (with its id), failed (surely not sent), or unknown."""

    status: Literal["accepted", "failed", "unknown"]
    provider_id: str | None = None
    error: str | None = None


class Provider(Protocol):
    name: str

    def send(self, to: str, sender: str, body: str) -> SendResult: ...


class SandboxProvider:
    """Accepts every message and records it in the bridge store's ``sandbox_messages``."""

    name = "sandbox"

    def __init__(self, store: BridgeStore) -> None:
        self.store = store

    def send(self, to: str, sender: str, body: str) -> SendResult:
        sid = "SB" + uuid.uuid4().hex
        self.store.sandbox_record(sid, to, sender, body, time.time())
        return SendResult("accepted", provider_id=sid)


def make_provider(kind: str, store: BridgeStore) -> Provider:
    if kind == "sandbox":
        return SandboxProvider(store)
    raise ValueError(f"unknown SMS provider kind {kind!r}")
