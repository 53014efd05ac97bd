"""The console's page routers and their JSON API, one module per area (accounts, fleet, stores,
campaigns, customers, reports); ``console_routers`` hands them to ``create_app``."""

from __future__ import annotations

from fastapi import APIRouter

from cloud_bridge.auth import Accounts
from cloud_bridge.config import BridgeSettings
from cloud_bridge.store import BridgeStore

__all__ = ["console_routers"]


def console_routers(
    store: BridgeStore, settings: BridgeSettings | None, accounts: Accounts
) -> list[APIRouter]:
    from cloud_bridge.console.account import account_router
    from cloud_bridge.console.campaigns import campaigns_console_router
    from cloud_bridge.console.customers import customers_router
    from cloud_bridge.console.fleet import fleet_router
    from cloud_bridge.console.metrics import metrics_router
    from cloud_bridge.console.reports import reports_router
    from cloud_bridge.console.stores import stores_router

    return [
        account_router(store, accounts),
        fleet_router(store, settings),
        stores_router(store),
        campaigns_console_router(store, settings),
        customers_router(store, settings),
        reports_router(store),
        metrics_router(store),
    ]
