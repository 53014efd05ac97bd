"""The console's page routers and their JSON API, one module per area (accounts, fleet, stores,
campaigns, customers, reports, metrics); ``console_routers`` lists them for ``create_app``."""

from __future__ import annotations

from fastapi import APIRouter

from cloud_bridge.web.console import account, campaigns, customers, fleet, metrics, reports, stores

__all__ = ["console_routers"]

console_routers: list[APIRouter] = [
    account.router,
    fleet.router,
    stores.router,
    campaigns.router,
    customers.router,
    reports.router,
    metrics.router,
]
