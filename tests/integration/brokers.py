"""Real Mosquitto brokers and MQTT v5 clients for integration tests; failures fail the test.

The broker itself is ``cloud_bridge.dev.mosquitto.LocalMosquitto`` (the demo uses the same
launcher), so tests exercise the code users run. This module adds what tests need on
top: a missing binary or a broker that does not start *fails* the test (never skips)
with the reason and the tail of Mosquitto's log, ``kill()`` for crash tests, and a
small paho-mqtt v2 client helper that waits for CONNACK and collects messages.

Running as root (CI): Mosquitto 2.0.11 started as root drops privileges to the
``mosquitto`` user unless the config names another ``user``. It still listens, but
that user can write neither the log file nor the persistence database in the
root-owned tmp directory, so there is no log and retained messages die with a
restart. The launcher therefore writes ``user <current user>`` (``user root``) when
euid is 0; Mosquitto then only logs a warning.

Secure brokers (``SecureBroker``, ``start_secure_broker``) run the shipped configuration
``deploy/mosquitto/passby.conf.example`` itself, with its paths pointed at a temporary
directory and its TLS listener moved to a loopback port: TLS with a test CA and server
certificate made here with ``cryptography`` (``make_test_pki``), no anonymous access, a
password file and an ACL file.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import queue
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from cloud_bridge.dev.mosquitto import BrokerError, LocalMosquitto

__all__ = [
    "Broker",
    "Messages",
    "SecureBroker",
    "TestPki",
    "connect",
    "disconnect",
    "make_test_pki",
    "start_broker",
    "start_secure_broker",
]

CONNECT_TIMEOUT_S = 10.0
REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONF = REPO / "deploy" / "mosquitto" / "passby.conf.example"


class Broker(LocalMosquitto):
    """A private Mosquitto on a free loopback port.

    Attributes: ``host``, ``port``, ``config_path``, ``log_path``, ``workdir``
    (persistence lives there), ``binary``. Methods: ``start()``, ``stop()``
    (SIGTERM: Mosquitto saves its database), ``restart()`` (same port, same
    persistence), ``kill()`` (SIGKILL: nothing saved, like a power cut), ``log_tail()``.
    """

    def start(self, timeout: float = 10.0) -> None:
        try:
            super().start(timeout)
        except BrokerError as exc:
            pytest.fail(
                f"Mosquitto did not start ({self.binary} -c {self.config_path}): {exc}",
                pytrace=False,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def start_broker(workdir: Path, extra_config: str = "") -> Broker:
    """Create and start a broker in ``workdir``; fails the running test if it cannot."""
    try:
        broker = Broker(workdir, extra_config=extra_config)
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    broker.start()
    return broker


class Messages:
    """Thread-safe inbox for a client's ``on_message``."""

    def __init__(self) -> None:
        self._q: queue.Queue[mqtt.MQTTMessage] = queue.Queue()

    def __call__(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._q.put(msg)

    def get(self, timeout: float = 10.0) -> mqtt.MQTTMessage:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no MQTT message within {timeout:.0f} s", pytrace=False)

    def empty(self) -> bool:
        return self._q.empty()


def connect(
    broker: LocalMosquitto,
    client_id: str,
    *,
    clean_start: bool = True,
    properties: mqtt.Properties | None = None,
    messages: Messages | None = None,
) -> mqtt.Client:
    """An MQTT v5 client connected to ``broker`` with its network loop running.

    Call ``client.loop_stop(); client.disconnect()`` when done (or use ``disconnect()``).
    """
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    connected = threading.Event()
    result: list[Any] = []

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.append(reason)
        connected.set()

    client.on_connect = on_connect
    if messages is not None:
        client.on_message = messages
    client.connect(broker.host, broker.port, clean_start=clean_start, properties=properties)
    client.loop_start()
    if not connected.wait(CONNECT_TIMEOUT_S):
        client.loop_stop()
        pytest.fail(
            f"no CONNACK from {broker.host}:{broker.port} within "
            f"{CONNECT_TIMEOUT_S:.0f} s. {broker.log_tail()}",
            pytrace=False,
        )
    if result[0].is_failure:
        client.loop_stop()
        pytest.fail(f"broker refused {client_id!r}: {result[0]}", pytrace=False)
    return client


def disconnect(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


# -- TLS, passwords and ACL: the shipped configuration on a loopback port ----------------------


@dataclass(frozen=True)
class TestPki:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost (PEM files)."""

    __test__ = False  # not a pytest test class

    ca_file: Path
    cert_file: Path
    key_file: Path
    other_ca_file: Path  # a CA that did NOT sign the server certificate


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(name: str, now: datetime.datetime) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_test_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TestPki:
    """A test CA, a server certificate it signed for ``hosts``, and an unrelated second CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _ca("passby test CA", now)
    _, other_cert = _ca("some other CA", now)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = TestPki(
        ca_file=directory / "ca.crt",
        cert_file=directory / "broker.crt",
        key_file=directory / "broker.key",
        other_ca_file=directory / "other-ca.crt",
    )
    pki.ca_file.write_bytes(ca_cert.public_bytes(pem))
    pki.other_ca_file.write_bytes(other_cert.public_bytes(pem))
    pki.cert_file.write_bytes(cert.public_bytes(pem))
    pki.key_file.write_bytes(_key_pem(key))
    os.chmod(pki.key_file, 0o600)
    return pki


def render_deploy_config(
    port: int, host: str, pki: TestPki, password_file: Path, acl_file: Path
) -> str:
    """deploy/mosquitto/passby.conf.example with its paths and listener made local."""
    text = DEPLOY_CONF.read_text()
    replacements = {
        "listener 8883\n": f"listener {port} {host}\n",
        "/etc/mosquitto/passby/passby.passwd": str(password_file),
        "/etc/mosquitto/passby/passby.acl": str(acl_file),
        "/etc/mosquitto/certs/broker.crt": str(pki.cert_file),
        "/etc/mosquitto/certs/broker.key": str(pki.key_file),
        "/etc/mosquitto/certs/ca.crt": str(pki.ca_file),
    }
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{DEPLOY_CONF} no longer contains {old!r}")
        text = text.replace(old, new)
    return text


class SecureBroker(Broker):
    """The shipped TLS + password + ACL configuration on a free loopback port.

    Extra attributes: ``pki`` (``TestPki``), ``password_file``, ``acl_file``, ``pid_file``
    (for provisioning's SIGHUP). ``reload()`` sends SIGHUP (Mosquitto re-reads both files).
    """

    def __init__(
        self, workdir: Path, pki: TestPki, password_file: Path, acl_file: Path, **kw: Any
    ) -> None:
        super().__init__(workdir, **kw)
        self.pki = pki
        self.password_file = password_file
        self.acl_file = acl_file
        self.pid_file = self.workdir / "mosquitto.pid"

    def write_config(self) -> None:
        lines = [
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"pid_file {self.pid_file}",
            f"log_dest file {self.log_path}",
            "log_type all",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        body = render_deploy_config(
            self.port, self.host, self.pki, self.password_file, self.acl_file
        )
        self.config_path.write_text("\n".join(lines) + "\n" + body + self.extra_config)

    def start(self, timeout: float = 10.0) -> None:
        if not self.password_file.exists():
            self.password_file.write_text("")
        if not self.acl_file.exists():
            self.acl_file.write_text("")
        super().start(timeout)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads the password and ACL files."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGHUP)

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"


def start_secure_broker(
    workdir: Path, password_file: Path, acl_file: Path, pki: TestPki | None = None
) -> SecureBroker:
    """Start the shipped configuration in ``workdir``; fails the running test if it cannot."""
    pki = pki or make_test_pki(workdir / "pki")
    try:
        broker = SecureBroker(workdir, pki, password_file, acl_file)
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    broker.start()
    return broker
