"""Sensors: provisioning and pairing, rosters and their delivery, site keys, box releases."""
