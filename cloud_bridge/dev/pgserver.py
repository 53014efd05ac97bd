"""Start a private PostgreSQL cluster on a loopback port (tests, benchmarks, load tests).

Debian's ``postgresql`` package provides ``initdb`` and ``pg_ctl`` under
``/usr/lib/postgresql/<version>/bin``. ``initdb`` refuses to run as root, so when we are root
the cluster is owned by the ``postgres`` user (``runuser``) and lives under /tmp where that
user can reach it. Authentication is ``trust`` on loopback only: this is a throwaway cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cloud_bridge.dev.mosquitto import free_port

__all__ = ["LocalPostgres", "PostgresError", "pg_bindir"]


class PostgresError(RuntimeError):
    """PostgreSQL is missing or did not start; the message says why and how to fix it."""


def pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        which = shutil.which("initdb")
        if which:
            return Path(which).parent
        raise PostgresError(
            "PostgreSQL is not installed: 'sudo apt-get install postgresql' "
            "(scripts/setup.sh does this when run as root)"
        )
    return found[-1].parent


class LocalPostgres:
    """A cluster owned by this process: ``start()``, ``stop()``, ``dsn(db)``, ``create_database``."""

    def __init__(self, port: int | None = None, settings: dict[str, str] | None = None) -> None:
        self.bindir = pg_bindir()
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix="passby-pg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.settings = {
            "max_connections": "200",
            "shared_buffers": "256MB",
            "fsync": "on",
            "synchronous_commit": "on",
            **(settings or {}),
        }
        self._as_pg: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            self._as_pg = ["runuser", "-u", "postgres", "--"]
        self.started = False

    def _run(self, *args: str | Path) -> str:
        cmd = [*self._as_pg, *(str(a) for a in args)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise PostgresError(
                f"{Path(str(args[0])).name} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-800:]} {self.log_tail()}"
            )
        return proc.stdout

    def start(self) -> None:
        self._run(
            self.bindir / "initdb", "-D", self.data, "--auth=trust", "-U", "postgres",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        self._run(
            self.bindir / "pg_ctl", "-D", self.data, "-l", self.log_path, "-w", "-t", "60",
            "-o", f"-k {self.base} -p {self.port} -c listen_addresses=127.0.0.1 {opts}", "start",
        )  # fmt: skip
        self.started = True

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "log: " + " | ".join(text)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        from cloud_bridge.storage.databases import create_pg_database

        create_pg_database(self.dsn(), name)
        return self.dsn(name)

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                [*self._as_pg, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                 "-w", "stop"],
                capture_output=True,
            )  # fmt: skip
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(dsn: str, timeout: float = 10.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresError(f"PostgreSQL at {dsn} is not reachable: {exc}") from exc
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    """``python -m cloud_bridge.dev.pgserver [DBNAME]``: start a throwaway cluster, create DBNAME
    (default passby), print its URL, and run until SIGTERM/SIGINT (load tests, scripts)."""
    import signal
    import sys
    import threading

    name = (argv if argv is not None else sys.argv[1:]) or ["passby"]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with LocalPostgres() as pg:
        print(pg.create_database(name[0]), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
