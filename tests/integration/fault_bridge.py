"""The bridge's real ingest in its own process, killed with ``kill -9`` right after a commit.

Run as a process (so the kill is real)::

    python tests/integration/fault_bridge.py --port P --db bridge.db --data-key HEX \\
        --user bridge --password-file F --ca ca.crt --kill-after 100 [--session-expiry 2]

Every batch the ingest stores goes through the real ``handle_batch`` (the commit); once at
least ``--kill-after`` events are stored the process prints ``{"stored": n}`` and sends itself
SIGKILL before the batch is confirmed in any way (no receipt, no PUBACK). Prints
``{"connected": true}`` once subscribed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cloud_bridge.ingest.consumer as ingest_module
from cloud_bridge.config import MqttSettings
from cloud_bridge.ingest.consumer import Ingest
from cloud_bridge.storage.store import BridgeStore


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--data-key", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-file", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--kill-after", type=int, required=True)
    ap.add_argument("--session-expiry", type=int, default=7 * 86400)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    store = BridgeStore(Path(args.db), data_key=bytes.fromhex(args.data_key))
    real = ingest_module.handle_batch
    stored = 0

    def commit_then_die(*a: Any, **kw: Any) -> Any:
        nonlocal stored
        results = real(*a, **kw)  # committed when this returns
        stored += sum(1 for kind, _ in results if kind == "event")
        if stored >= args.kill_after:
            say(stored=stored)
            os.kill(os.getpid(), signal.SIGKILL)  # before any receipt or PUBACK
        return results

    ingest_module.handle_batch = commit_then_die  # type: ignore[assignment]
    settings = MqttSettings(
        host="127.0.0.1",
        port=args.port,
        tls=True,
        ca_file=Path(args.ca),
        username=args.user,
        password_file=Path(args.password_file),
        session_expiry_s=args.session_expiry,
        reconnect_max_s=1.0,
    )
    ingest = Ingest(settings, store, lambda _e: None, client_id="passby-bridge-1")
    ingest.start()
    if not ingest.connected.wait(10):
        say(connected=False)
        return 2
    time.sleep(0.3)  # SUBACK
    say(connected=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    raise SystemExit(main())
