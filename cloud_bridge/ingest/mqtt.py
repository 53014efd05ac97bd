"""The bridge's MQTT clients: paho v2 on MQTT v5, TLS and credentials from ``[mqtt]`` settings.

The bridge's own adapter (the edge agent has its own in ``edge_agent/adapters/uplink.py``; the
two sides share only the wire contract). The ingest keeps a persistent session: it connects
with ``clean_start=False`` and ``session_properties(mqtt.session_expiry_s)`` under a stable
client id (``passby-bridge-<worker_id>``), so the broker holds its QoS 1 events while it is
away; command senders use a fresh client id each time. With Mosquitto's
``use_username_as_clientid`` each broker account is one connection, hence one account per
worker and one for commands (``command_mqtt``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_bridge.config import MqttSettings

__all__ = ["make_client", "session_properties"]


def make_client(settings: MqttSettings, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    """A paho v2 client configured for MQTT v5, TLS and credentials as settings say."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.tls:
        ctx = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        if settings.cert_file:
            ctx.load_cert_chain(
                str(settings.cert_file), str(settings.key_file) if settings.key_file else None
            )
        client.tls_set_context(ctx)
    password = settings.password_value()
    if settings.username or password:
        client.username_pw_set(settings.username, password)
    client.enable_logger(logging.getLogger("paho.mqtt"))  # DEBUG shows every packet
    client.on_socket_open = _no_delay
    client.reconnect_delay_set(
        min_delay=max(1, int(settings.reconnect_min_s)), max_delay=int(settings.reconnect_max_s)
    )
    return client


def _no_delay(client: mqtt.Client, userdata: object, sock: object) -> None:
    """Small packets leave at once: receipts and PUBACKs are not held back by Nagle behind the
    broker's delayed TCP ACK."""
    with contextlib.suppress(OSError, AttributeError):
        # paho passes a SocketLike (no setsockopt in its type); a websocket wrapper may lack it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]


def session_properties(expiry_s: int) -> Properties:
    """CONNECT properties asking the broker to keep our session ``expiry_s`` while we are away."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no hints
    props.SessionExpiryInterval = expiry_s
    return props
