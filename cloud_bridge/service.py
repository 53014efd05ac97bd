"""The running bridge: MQTT ingest, decision worker and console in one process."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from cloud_bridge.config import BridgeSettings
from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import make_provider
from cloud_bridge.ingest.consumer import Ingest
from cloud_bridge.offers.worker import DecisionWorker, policy_from_settings
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.app import create_app

__all__ = ["BridgeService", "WebServer"]

log = logging.getLogger(__name__)


class WebServer:
    """uvicorn in a background thread, on a socket we bind ourselves (port 0 = pick one)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        # proxy_headers off: uvicorn would trust X-Forwarded-For from loopback; the app's
        # ForwardedHeaders applies web.trusted_proxies instead.
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", proxy_headers=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="web", daemon=True
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"console did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5.0)
        self.sock.close()


class BridgeService:
    def __init__(self, settings: BridgeSettings, web: bool = True) -> None:
        self.settings = settings
        self.store = BridgeStore(settings.database_path(), settings.data_key_bytes())
        self.keys = BridgeKeys(settings.data_dir)
        p = settings.policy
        provider = make_provider(settings.provider, self.store)
        self.deliverer = Deliverer(self.store, provider, DeliveryOptions.from_settings(settings))
        self.worker = DecisionWorker(
            self.store,
            provider,
            policy_from_settings(p),
            self.deliverer,
            guard_every_s=p.guard_every_s,
            guard_window_days=p.optout_window_days,
            own_connection=True,  # decisions read beside the ingest's commits (WAL)
            orphan_after_s=settings.orphan_after_s if self.store.postgres else None,
        )
        self.ingest = Ingest(
            settings.mqtt,
            self.store,
            self.worker.notify,
            client_id=f"passby-bridge-{settings.worker_id}",
            max_skew_s=p.max_clock_skew_s,
        )
        self.web = None
        if web:
            app = create_app(self.store, settings)
            app.state.deliverer = self.deliverer  # receipts and STOP replies use the live one
            self.web = WebServer(app, settings.web.host, settings.web.port)

    def start(self) -> None:
        if self.web:
            self.web.start()
            log.info("console at %s", self.web.url)
        self.deliverer.start()
        self.worker.start()
        self.ingest.start()

    def stop(self) -> None:
        self.ingest.stop()
        self.worker.stop()
        log.info(
            "bridge worker %s stopping: %d events stored, %d decided, %d taken over, "
            "%d put back (customer busy in another worker)",
            self.settings.worker_id,
            self.ingest.counters.events,
            self.worker.counters.events,
            self.worker.counters.orphans,
            self.worker.counters.deferred,
        )
        self.deliverer.stop()
        if self.web:
            self.web.stop()
        self.store.close()
