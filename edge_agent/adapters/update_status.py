"""The box's last agent update, as ``passby_update.py`` records it in
``/opt/passby/update-status.json`` (``result``, ``version``, ``current``, ``error``): the agent
puts a failure into its stats (``update_failed``) so the console's fleet page shows it."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["MAX_LEN", "failed_update"]

MAX_LEN = 300


def failed_update(path: Path) -> str | None:
    """``"VERSION: reason"`` if the last update failed, else None (no file, unreadable, ok)."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict) or status.get("result") != "failed":
        return None
    text = f"{status.get('version') or '?'}: {status.get('error') or 'failed'}"
    return text if len(text) <= MAX_LEN else text[: MAX_LEN - 3] + "..."
