"""The demo: a bundled capture replayed through a real Mosquitto to the bridge and its sandbox."""
