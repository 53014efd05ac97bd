"""Data encryption without a store: the cipher, the key file and the key from the environment (the
stores on both engines are in tests/db/test_data_encryption.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloud_bridge.config import BridgeSettings
from cloud_bridge.storage.datakey import DataCipher, DataKeyError, load_data_key


def test_cipher_roundtrip_lookup_and_tamper() -> None:
    cipher = DataCipher(bytes(range(32)))
    mac = bytes.fromhex("02aabbccddee")
    a, b = cipher.encrypt_mac(mac), cipher.encrypt_mac(mac)
    assert a != b  # fresh nonce every time
    assert cipher.decrypt_mac(a) == cipher.decrypt_mac(b) == mac
    assert cipher.mac_lookup(mac) == cipher.mac_lookup(bytes(mac))
    assert cipher.mac_lookup(mac) != DataCipher(bytes(32)).mac_lookup(mac)
    with pytest.raises(DataKeyError):
        cipher.decrypt_mac(a[:-1] + bytes([a[-1] ^ 1]))
    with pytest.raises(DataKeyError):
        DataCipher(bytes(32)).decrypt_mac(a)


def test_key_file_is_created_0600_and_env_wins(tmp_path: Path) -> None:
    key = load_data_key(tmp_path / "keys", env={})
    path = tmp_path / "keys" / "data.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_data_key(tmp_path / "keys", env={}) == key
    other = "ab" * 32
    assert load_data_key(tmp_path / "keys", env={"PASSBY_DATA_KEY": other}) == bytes.fromhex(other)
    with pytest.raises(DataKeyError, match="64 hex"):
        load_data_key(tmp_path / "keys", env={"PASSBY_DATA_KEY": "abcd"})


def test_settings_key_from_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PASSBY_DATA_KEY", "cd" * 32)
    settings = BridgeSettings(data_dir=tmp_path)
    assert settings.data_key_bytes() == bytes.fromhex("cd" * 32)
    assert "cdcd" not in repr(settings)  # a secret, never printed
    monkeypatch.delenv("PASSBY_DATA_KEY")
    assert BridgeSettings(data_dir=tmp_path).data_key_bytes() == load_data_key(
        tmp_path / "keys", env={}
    )
    assert os.path.exists(tmp_path / "keys" / "data.key")
