"""Dev tools: local Mosquitto and PostgreSQL, the fleet simulator and the demo. Only these may play a sensor."""
