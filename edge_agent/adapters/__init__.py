"""The edge agent's adapters: capture, pcap files, MQTT uplink, the on-disk outbox, systemd, commands, pairing."""
