"""The cloud installer and reverse proxies (issue 14): an upgrade that keeps a bridge.toml trusting
no proxy is warned about (runs deploy/cloud/install.sh)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def test_install_sh_warns_when_a_kept_bridge_toml_trusts_no_proxy(tmp_path: Path) -> None:
    """An upgrade keeps the admin's bridge.toml: the installer says to add trusted_proxies."""
    install = Path(__file__).parents[2] / "deploy" / "cloud" / "install.sh"
    root = tmp_path / "root"

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "bash",
                str(install),
                "--destdir",
                str(root),
                "--domain",
                "mqtt.example.com",
                "--provider",
                "sandbox",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = run()
    assert first.returncode == 0, first.stderr[-2000:]
    conf = root / "etc/passby/bridge.toml"
    assert "trusted_proxies" not in run().stderr  # a fresh file from the example has it
    conf.write_text(re.sub(r"^trusted_proxies = .*\n", "", conf.read_text(), flags=re.M))
    again = run()
    assert again.returncode == 0 and "has no web.trusted_proxies" in again.stderr, again.stderr
