"""Enrolment tokens are checked when the settings load (the identity flows:
tests/db/test_enrolment_identity.py)."""

from __future__ import annotations

import pytest

from cloud_bridge.config import BridgeSettings

TOKEN = "link-t0ken-for-the-loyalty-app"


def test_token_scopes_are_checked_in_the_settings() -> None:
    with pytest.raises(ValueError, match="api_token_scopes"):
        BridgeSettings(enrol={"api_token": TOKEN, "api_token_scopes": ["enrol.everything"]})
    assert BridgeSettings().enrol.api_token_scopes == ["customers.erase"]


def test_a_short_enrolment_token_is_refused_at_load() -> None:
    """Bearer tokens are not throttled (nothing to lock out), so they must be unguessable."""
    with pytest.raises(ValueError, match="at least 20 characters"):
        BridgeSettings(enrol={"api_token": "s3cret"})
    assert BridgeSettings(enrol={"api_token": "a" * 20}).enrol.api_token is not None
