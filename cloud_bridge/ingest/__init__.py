"""Ingest: the MQTT consumer that validates and stores presence events, sensor commands, fleet
health, and the bridge's MQTT client set-up (mqtt.py)."""
