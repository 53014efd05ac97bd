"""A tenant file with two customers on one phone is refused at load (the CSV and JSON imports into
a store are in tests/db/test_csv_import.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_bridge.tenant import load_tenant

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
ANNA_PHONE = "+79161234501"  # the demo tenant's C-1001


def test_tenant_file_with_two_customers_on_one_phone_is_refused(tmp_path: Path) -> None:
    """The tenant file (demo, first setup) is the other way customers come in."""
    from cloud_bridge.tenant import ConfigError

    text = TENANT.read_text(encoding="utf-8").replace(
        'phone = "+79161234503"', f'phone = "{ANNA_PHONE}"'
    )
    assert text.count(ANNA_PHONE) == 2
    path = tmp_path / "tenant.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_tenant(path)
    assert "customers[2].phone: the phone of customers[0] (C-1001) too" in str(err.value)
    assert ANNA_PHONE not in str(err.value)
