"""Ingest: the MQTT consumer that validates and stores presence events, sensor commands, fleet health."""
