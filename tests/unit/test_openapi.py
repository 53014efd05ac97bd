"""The JSON API against its own OpenAPI document (schemathesis, bounded: a few examples per
operation, seconds not minutes): no request, however odd, makes the bridge fail with a 5xx.
Requests carry an admin API token, so they reach the handlers, not just the login check."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path

import schemathesis
from console_helpers import add_sensor_state, make_world
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

_TMP = Path(tempfile.mkdtemp(prefix="passby-openapi-"))
atexit.register(shutil.rmtree, _TMP, True)
WORLD = make_world(_TMP)
add_sensor_state(WORLD.store, "main-st", "door-1", time.time())
TOKEN = WORLD.token("ada")
schema = schemathesis.openapi.from_asgi("/openapi.json", WORLD.app)


@schema.parametrize()
@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_never_fails_with_a_server_error(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    case.validate_response(response, checks=[not_a_server_error])


def test_openapi_documents_the_console_api() -> None:
    paths = WORLD.client().get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/me", "/api/v1/users", "/api/v1/tokens", "/api/v1/audit", "/api/v1/fleet",
        "/api/v1/fleet/{store_id}/{sensor_id}", "/api/v1/stores", "/api/v1/stores/{store_id}",
        "/api/v1/campaigns", "/api/v1/campaigns/preview", "/api/v1/customers",
        "/api/v1/customers/{crm_id}", "/api/v1/customers/import", "/api/v1/reports",
        "/api/v1/reports.csv", "/api/overview",
    ):  # fmt: skip
        assert path in paths, path
