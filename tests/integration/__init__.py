"""Integration tests against real components (Mosquitto, PostgreSQL, Chromium, tshark)."""
