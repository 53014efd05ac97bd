"""Send commands to sensors over MQTT (``cmd/{name}``) and wait for their replies (``reply/{name}``)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloud_bridge.config import MqttSettings
from cloud_bridge.ingest.mqtt import make_client
from edge_agent.protocol import COMMANDS, ReplyMessage, topic

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["CommandError", "Outcome", "send_commands"]


class CommandError(RuntimeError):
    """The broker could not be reached or refused us."""


@dataclass(frozen=True)
class Outcome:
    store_id: str
    sensor_id: str
    reply: ReplyMessage | None  # None: no answer within the timeout (sensor offline?)


def send_commands(
    settings: MqttSettings,
    name: str,
    targets: list[tuple[str, str]],
    body: dict[str, Any],
    timeout: float = 15.0,
) -> list[Outcome]:
    """Send one command to each (store, sensor) and collect the replies that match."""
    model = COMMANDS.get(name)
    if model is None:
        raise ValueError(f"unknown command {name!r}; known: {sorted(COMMANDS)}")
    wanted: dict[str, tuple[str, str]] = {}
    payloads: dict[str, str] = {}
    for store_id, sensor_id in targets:
        rid = uuid.uuid4().hex
        wanted[rid] = (store_id, sensor_id)
        payloads[rid] = model.model_validate(
            {**body, "request_id": rid, "ts": time.time()}
        ).model_dump_json()
    replies: dict[str, ReplyMessage] = {}
    done = threading.Event()
    connected = threading.Event()
    failure: list[str] = []

    client = make_client(settings, f"passby-bridge-cmd-{uuid.uuid4().hex[:8]}")

    def on_connect(
        c: Client, u: Any, f: ConnectFlags, rc: ReasonCode, p: Properties | None
    ) -> None:
        if rc.is_failure:
            failure.append(str(rc))
            connected.set()
            return
        c.subscribe([(topic(s, x, f"reply/{name}"), 1) for s, x in set(wanted.values())])

    def on_subscribe(
        c: Client, u: Any, mid: int, rcs: list[ReasonCode], p: Properties | None
    ) -> None:
        connected.set()

    def on_message(c: Client, u: Any, m: MQTTMessage) -> None:
        try:
            reply = ReplyMessage.model_validate_json(m.payload)
        except ValueError:
            return
        if reply.request_id in wanted:
            replies[reply.request_id] = reply
            if len(replies) == len(wanted):
                done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except OSError as exc:
        raise CommandError(f"cannot reach broker {settings.host}:{settings.port}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(10) or failure:
            raise CommandError(f"broker refused the command client: {failure or 'no answer'}")
        for rid, (store_id, sensor_id) in wanted.items():
            client.publish(
                topic(store_id, sensor_id, f"cmd/{name}"), payloads[rid], qos=1
            ).wait_for_publish(5)
        if wanted:
            done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return [Outcome(s, x, replies.get(rid)) for rid, (s, x) in wanted.items()]
