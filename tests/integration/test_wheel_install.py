"""What ships works as shipped: the wheel built from this tree, installed non-editable in a fresh
venv, serves a complete console (a page, its CSS and its JavaScript) and both CLIs answer --help.

The fresh venv sees the dependencies of the development venv through a path file (so the test
needs no package index), but not the development checkout: the only ``cloud_bridge`` and
``edge_agent`` it can import are the ones inside the wheel.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of what the distribution is made of, so setuptools' build/ and
    # egg-info land in the copy, not in the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("edge_agent", "cloud_bridge"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the build backend pinned in the dev extras is used, no index is asked.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        cwd=out,
    )
    wheels = list(out.glob("passby-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    site = Path(
        _run(
            [
                str(root / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ]
        ).stdout.strip()
    )
    # The dev venv's site-packages as a plain path entry: its packages import, but its .pth files
    # (the editable finder that maps cloud_bridge to the checkout) are not processed.
    (site / "zz_dev_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(root / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ]
    )
    return root


def test_wheel_carries_every_file_the_bridge_serves(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        p.relative_to(REPO).as_posix()
        for folder in (
            "cloud_bridge/web/console/static",
            "cloud_bridge/web/templates",
            "cloud_bridge/customers/texts",
            "cloud_bridge/dev/demo",
            "cloud_bridge/storage/migrations/versions",
        )
        for p in (REPO / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    missing = sorted(shipped - names)
    assert not missing, f"files the bridge reads at run time are not in the wheel: {missing}"


def test_installed_package_is_the_wheel_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    out = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import cloud_bridge, edge_agent; print(cloud_bridge.__file__); print(edge_agent.__file__)",
        ],
        cwd=tmp_path,
    ).stdout.split()
    for path in out:
        assert str(venv) in path and str(REPO) not in path, path


@pytest.mark.parametrize("cli", ["cloud-bridge", "edge-agent"])
def test_both_clis_answer_help(venv: Path, tmp_path: Path, cli: str) -> None:
    out = _run([str(venv / "bin" / cli), "--help"], cwd=tmp_path).stdout
    assert "Usage" in out and "run" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def console(venv: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    (tmp_path / "bridge.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSBY_")}
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "cloud-bridge"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            str(tmp_path / "bridge.toml"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"cloud-bridge serve exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
                )
            try:
                httpx.get(url + "/login", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("cloud-bridge serve from the wheel did not answer within 30 s")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_installed_console_serves_page_css_and_javascript(console: str) -> None:
    page = httpx.get(console + "/login", timeout=5)
    assert page.status_code == 200 and "<form" in page.text
    assert "/console/static/console.css" in page.text
    for asset, kind in (("console.css", "text/css"), ("campaign.js", "javascript")):
        got = httpx.get(f"{console}/console/static/{asset}", timeout=5)
        assert got.status_code == 200, (asset, got.status_code)
        assert kind in got.headers["content-type"]
        assert (
            got.content
            == (REPO / "cloud_bridge" / "web" / "console" / "static" / asset).read_bytes()
        )
