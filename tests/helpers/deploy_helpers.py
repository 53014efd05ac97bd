"""Shared by tests/unit/test_deploy.py and tests/integration/test_deploy.py: the deploy/ paths, a
script runner, a systemd unit parser, the compose file, the agent's updater and signed releases
of stand-in wheels."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "deploy" / "edge"
CLOUD = ROOT / "deploy" / "cloud"


def sh(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env
    )


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path}: {line!r} outside a section"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    got = values(unit, section, key)
    assert len(got) == 1, f"[{section}] {key}: {got}"
    return got[0]


PG_DATABASE = "postgresql:///passby?host=/var/run/postgresql"


def _compose() -> dict:  # type: ignore[type-arg]
    import yaml

    data = yaml.safe_load((CLOUD / "docker-compose.yml").read_text())
    assert isinstance(data, dict) and isinstance(data["services"], dict)
    return data


def _mounts(svc: dict) -> dict[str, tuple[str, bool]]:  # type: ignore[type-arg]
    """container path -> (source, writable)"""
    out = {}
    for vol in svc.get("volumes", []):
        parts = vol.split(":")
        out[parts[1]] = (parts[0], not (len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def _load_updater() -> ModuleType:
    spec = importlib.util.spec_from_file_location("passby_update", EDGE / "passby_update.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["passby_update"] = mod
    spec.loader.exec_module(mod)
    return mod


upd = _load_updater()


def fake_wheel(dest: Path, version: str, says: str | None = None) -> Path:
    """A real, installable wheel named passby whose edge-agent prints ``says`` (its version)."""
    files = {
        "passby_stub_cli.py": (
            "import sys\n"
            f"def main():\n    print({says or version!r}) if sys.argv[1:] == ['version'] else None\n"
        ).encode(),
        f"passby-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: passby\nVersion: {version}\nProvides-Extra: edge\n"
        ).encode(),
        f"passby-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"passby-{version}.dist-info/entry_points.txt": (
            b"[console_scripts]\nedge-agent = passby_stub_cli:main\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = hashlib.sha256(data).digest()
        import base64

        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{name},sha256={b64},{len(data)}")
    record.append(f"passby-{version}.dist-info/RECORD,,")
    files[f"passby-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = dest / f"passby-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def release(tmp_path: Path, key: Path, version: str, protocol: int = 1, says=None) -> Path:
    wheels = tmp_path / f"wheels-{version}-{says}"
    wheels.mkdir(exist_ok=True)
    out = tmp_path / f"passby-edge-{version}-{says}.tar"
    upd.build(version, protocol, key, [fake_wheel(wheels, version, says)], out)
    return out
