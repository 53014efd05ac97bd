"""Unit tier: no external process (no PostgreSQL, Mosquitto, Chromium, tshark, system tools)."""
