"""The console's page routers and their JSON API, one module per area (accounts, fleet, stores,
campaigns, customers, reports); ``console_routers`` hands them to ``create_app``."""

from __future__ import annotations

from fastapi import APIRouter

from cloud_bridge.config import BridgeSettings
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.auth import Accounts

__all__ = ["console_routers"]


def console_routers(
    store: BridgeStore, settings: BridgeSettings | None, accounts: Accounts
) -> list[APIRouter]:
    from cloud_bridge.web.console.account import account_router
    from cloud_bridge.web.console.campaigns import campaigns_console_router
    from cloud_bridge.web.console.customers import customers_router
    from cloud_bridge.web.console.fleet import fleet_router
    from cloud_bridge.web.console.metrics import metrics_router
    from cloud_bridge.web.console.reports import reports_router
    from cloud_bridge.web.console.stores import stores_router

    return [
        account_router(store, accounts),
        fleet_router(store, settings),
        stores_router(store),
        campaigns_console_router(store, settings),
        customers_router(store, settings),
        reports_router(store),
        metrics_router(store),
    ]
