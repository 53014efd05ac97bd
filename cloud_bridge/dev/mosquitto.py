"""Start a private Mosquitto broker on a loopback port with a generated config (demo and tests)."""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["BrokerError", "LocalMosquitto", "find_mosquitto", "free_port", "raise_nofile"]


class BrokerError(RuntimeError):
    """Mosquitto is missing or did not start; the message says why and how to fix it."""


def find_mosquitto() -> str:
    for candidate in (
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError(
        "mosquitto is not installed: install the Debian package with "
        "'sudo apt-get install mosquitto' (scripts/setup.sh does this when run as root)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def raise_nofile(pid: int = 0) -> int:
    """Raise a process's open-file soft limit to its hard limit (``pid`` 0: this process) and
    return the new soft limit. Every MQTT connection is a file descriptor and the soft limit is
    often 1024, so a broker (or the fleet simulator) meant for thousands of sensors needs this.
    ``prlimit`` on the child after it started, rather than a Popen ``preexec_fn``: the latter is
    unsafe in a process with threads (the tests and the demo have them), and Mosquitto only
    meets the limit when it accepts connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if pid:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
        elif soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):  # e.g. the child already exited; start() reports that
        return soft
    return hard


class LocalMosquitto:
    """A broker owned by this process: ``start()``, ``stop()``, ``restart()`` on the same port."""

    def __init__(
        self,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_config: str = "",
    ) -> None:
        self.binary = find_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto would drop to the 'mosquitto' user, which cannot write here.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_config)

    def start(self, timeout: float = 10.0) -> None:
        self.write_config()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        raise_nofile(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BrokerError(
                    f"mosquitto exited with code {self.proc.returncode}: {err.strip()} "
                    f"{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"mosquitto did not accept connections on {self.host}:{self.port} "
            f"within {timeout:.0f} s. {self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "log: " + " | ".join(text)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> LocalMosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
