"""Login throttling that strangers cannot turn into a lockout (issue 14 item 6).

Through the console app (FastAPI TestClient with a real client address per test client) on both
engines: brute force from one address is cut off per address and per (account, address); a
spread-out attack on one account closes it to the addresses that failed; the owner coming from
an address that has not been failing still logs in, admin included."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_helpers import PASSWORD, World, login, make_world
from fastapi.testclient import TestClient

from cloud_bridge.config import WebSettings
from cloud_bridge.web.auth import Accounts, LoginRequired, LoginThrottled

ATTACKER, OWNER = "203.0.113.66", "198.51.100.10"


@pytest.fixture()
def world(tmp_path: Path, db_location) -> Iterator[World]:
    w = make_world(tmp_path, db_location)
    yield w
    w.store.close()


def client_at(world: World, ip: str) -> TestClient:
    return TestClient(world.app, base_url="http://testserver", client=(ip, 40000))


def test_many_user_names_from_one_address_hit_the_address_limit(world: World) -> None:
    """60 wrong logins under 60 user names from one address: after login_failures_per_ip (20)
    the address is refused, whatever name it tries next."""
    c = client_at(world, ATTACKER)
    got = [login(c, f"user{i}", "wrong password!").status_code for i in range(60)]
    assert got == [401] * 20 + [429] * 40
    assert login(c, "ada").status_code == 429  # even a right password, from there
    assert login(client_at(world, OWNER), "ada").status_code == 303


def test_many_wrong_passwords_for_one_account_from_one_address_are_throttled(world: World) -> None:
    c = client_at(world, ATTACKER)
    got = [login(c, "ada", f"guess number {i}").status_code for i in range(8)]
    assert got == [401] * 5 + [429] * 3
    r = login(c, "ada")  # the right password from the guessing address: still refused
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # that address may still log in to other accounts (it has 6 of 20 address failures)
    assert login(c, "mia").status_code == 303


def test_owner_logs_in_during_the_attack_from_another_address(world: World) -> None:
    """Issue 14 item 6: five wrong passwords from a stranger locked the admin out for 15
    minutes. Now the stranger is throttled and the admin, from their own address, is not."""
    attacker = client_at(world, ATTACKER)
    for name in ("ada", "olga"):
        for i in range(7):
            login(attacker, name, f"guess number {i}")
        assert login(attacker, name).status_code == 429
    for name in ("ada", "olga"):  # the admin and a store owner, each from their own place
        owner = client_at(world, OWNER)
        r = login(owner, name)
        assert r.status_code == 303, r.text
        assert owner.get("/api/v1/me").json()["username"] == name


def test_a_spread_out_attack_closes_the_account_to_failing_addresses_only(world: World) -> None:
    """Many addresses, a few guesses each (below the per-address limits): past
    login_failures_per_account the account refuses every address that failed on it, so each
    new address gets one guess; the owner from a clean address logs in."""
    world.accounts.settings = WebSettings(login_failures_per_account=12)
    bots = [client_at(world, f"192.0.2.{i}") for i in range(1, 7)]
    for bot in bots:  # 6 addresses x 2 guesses = 12 failures on ada
        for i in range(2):
            assert login(bot, "ada", f"guess {i}").status_code == 401
    assert [login(bot, "ada", "guess 3").status_code for bot in bots] == [429] * 6
    fresh = client_at(world, "192.0.2.200")
    assert login(fresh, "ada", "one guess").status_code == 401
    assert login(fresh, "ada", "another guess").status_code == 429
    assert login(client_at(world, OWNER), "ada").status_code == 303
    assert login(bots[0], "mia").status_code == 303  # other accounts are not affected


def test_a_successful_login_clears_that_address_for_that_account(world: World) -> None:
    c = client_at(world, OWNER)
    for _ in range(2):
        assert [login(c, "mia", "typo typo typo").status_code for _ in range(4)] == [401] * 4
        assert login(c, "mia").status_code == 303


def test_an_ipv6_attacker_cannot_rotate_addresses_inside_its_64(world: World) -> None:
    got = [
        login(client_at(world, f"2001:db8:5:7::{i:x}"), f"user{i}", "wrong password!").status_code
        for i in range(1, 23)
    ]
    assert got == [401] * 20 + [429] * 2
    assert login(client_at(world, "2001:db8:5:8::1"), "ada").status_code == 303  # next /64


def test_parallel_guesses_cannot_exceed_the_limits(world: World) -> None:
    """Guesses fired at once from one address (each password check takes ~50 ms): the count
    and the attempt are one step, so at most login_failures_per_user passwords are tried."""
    accounts = Accounts(world.store, WebSettings())
    go = threading.Barrier(12)
    outcomes: list[str] = []

    def guess(i: int) -> None:
        go.wait()
        try:
            accounts.login("ada", f"parallel guess {i}", ATTACKER, time.time())
        except LoginThrottled:
            outcomes.append("throttled")
        except LoginRequired:
            outcomes.append("tried")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["throttled"] * 7 + ["tried"] * 5


def test_current_password_check_counts_for_the_callers_address(world: World) -> None:
    """Changing the password asks for the current one: wrong answers there count like wrong
    logins for that account from that address (a stolen session cannot guess it freely)."""
    from console_helpers import csrf_of

    c = client_at(world, OWNER)
    assert login(c, "mia").status_code == 303
    for i in range(5):
        r = c.post(
            "/account",
            data={
                "action": "password",
                "current": f"not it {i}",
                "password": "a new long password",
                "csrf": csrf_of(c),
            },
        )
        assert r.status_code == 400
    counts = world.store.login_failures("mia", OWNER, 0)
    assert counts["pair"] == 5
    r = c.post(
        "/account",
        data={
            "action": "password",
            "current": PASSWORD,
            "password": "a new long password",
            "csrf": csrf_of(c),
        },
    )
    assert r.status_code == 400  # throttled: even the right current password is refused
