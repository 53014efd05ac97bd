"""Console accounts: login, argon2 hashes, session cookie flags, CSRF, login rate limit, API
tokens (hashed), roles, audit log."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_helpers import PASSWORD, World, csrf_of, login, make_world

from cloud_bridge.storage.accounts import session_rows
from cloud_bridge.web.auth import AccountError


@pytest.fixture()
def world(tmp_path: Path, db_location) -> Iterator[World]:
    w = make_world(tmp_path, db_location)
    yield w
    w.store.close()


def test_pages_and_api_need_a_login(world: World) -> None:
    c = world.client()
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/"
    for path in ("/api/overview", "/api/sandbox/messages", "/api/v1/fleet", "/api/v1/me"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    assert c.get("/healthz").status_code == 200


def test_login_sets_a_secure_session_cookie_and_logout_ends_it(world: World) -> None:
    c = world.client()
    r = login(c, "ada")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "passby_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie.split("passby_login")[0]  # plain http in tests
    assert c.get("/").status_code == 200
    assert c.get("/api/v1/me").json() == {"username": "ada", "role": "admin", "stores": None}
    r = c.post("/logout", data={"csrf": csrf_of(c)}, follow_redirects=False)
    assert r.status_code == 303
    assert c.get("/api/v1/me").status_code == 401
    # only a hash of the session secret is stored
    secret = cookie.split("passby_session=")[1].split(";")[0]
    assert not [s for s in session_rows(world.store) if secret in (s["id_sha256"], s["csrf"])]


def test_cookie_is_secure_over_https(world: World) -> None:
    c = world.client()
    c.base_url = "https://testserver"  # type: ignore[misc]
    r = login(c, "ada")
    cookie = r.headers["set-cookie"]
    assert "__Host-passby_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie


def test_passwords_are_argon2id_and_wrong_ones_fail(world: World) -> None:
    row = world.store.user_by_name("ada")
    assert row and row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    c = world.client()
    r = login(c, "ada", "wrong password!")
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = login(c, "nobody", "wrong password!")
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    with pytest.raises(AccountError, match="password"):
        world.accounts.add_user("eve", "admin", "short", time.time())
    with pytest.raises(AccountError, match="stores"):
        world.accounts.add_user("eve", "owner", PASSWORD, time.time(), [])
    with pytest.raises(AccountError, match="unknown store"):
        world.accounts.add_user("eve", "owner", PASSWORD, time.time(), ["nowhere"])
    with pytest.raises(AccountError, match="taken"):
        world.accounts.add_user("ADA", "admin", PASSWORD, time.time())


def test_user_names_are_case_insensitive(world: World) -> None:
    """users.username is COLLATE NOCASE (PostgreSQL: a case-insensitive ICU collation)."""
    assert world.store.user_by_name("ADA")["username"] == "ada"
    assert world.store.user_by_name("Mia")["role"] == "marketer"
    r = login(world.client(), "Ada")
    assert r.status_code == 303
    for _ in range(3):
        login(world.client(), "OLGA", "wrong password!")
    # failures are counted per user name, whatever its case
    assert world.store.login_failures("olga", None, 0)["user"] == 3
    names = [u["username"] for u in world.store.users()]
    assert names == sorted(names, key=str.casefold)


def test_login_form_needs_its_own_token(world: World) -> None:
    c = world.client()
    r = c.post(
        "/login",
        data={"username": "ada", "password": PASSWORD, "login_token": "forged"},
        follow_redirects=False,
    )
    assert r.status_code == 403


def test_login_is_rate_limited_per_user(world: World) -> None:
    c = world.client()
    for _ in range(5):
        assert login(c, "mia", "not the password").status_code == 401
    r = login(c, "mia")  # even the right password is refused while locked
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert login(c, "ada").status_code == 303  # other users are not locked out


def test_login_redirects_only_to_local_pages(world: World) -> None:
    c = world.client()
    r = c.get("/login?next=//evil.example/x")
    assert 'name="next" value="/"' in r.text
    r = c.get("/login?next=/fleet")
    assert 'name="next" value="/fleet"' in r.text


def test_csrf_is_required_on_every_form_post(world: World) -> None:
    c = world.client("ada")
    form = {"action": "add", "username": "newbie", "role": "marketer", "password": PASSWORD}
    assert c.post("/admin/users", data=form).status_code == 403
    assert c.post("/admin/users", data={**form, "csrf": "nope"}).status_code == 403
    token = csrf_of(c, "/admin")
    r = c.post(
        "/admin/users", data={**form, "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403
    r = c.post("/admin/users", data={**form, "csrf": token})
    assert r.status_code == 200 and "User newbie added" in r.text
    assert world.store.user_by_name("newbie")["role"] == "marketer"
    # JSON calls riding on the cookie need the header
    r = c.post("/api/v1/tokens", json={"name": "x"})
    assert r.status_code == 403
    r = c.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201


def test_roles_guard_pages_and_api(world: World) -> None:
    owner = world.client("olga")
    marketer = world.client("mia")
    for path in ("/admin", "/api/v1/users", "/api/v1/audit"):
        assert owner.get(path).status_code == 403, path
        assert marketer.get(path).status_code == 403, path
    assert world.client("ada").get("/api/v1/users").status_code == 200
    assert "Admin" not in re.findall(r"<nav>.*</nav>", owner.get("/").text)[0]


def test_api_tokens_are_hashed_act_as_their_user_and_can_be_revoked(world: World) -> None:
    token = world.token("mia", "CRM nightly import")
    token_id = token.split(".")[1]
    row = world.store.api_token_row(token_id)
    assert row and token.split(".")[2] not in str(row)
    api = world.client()
    auth = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/me", headers=auth).json()["role"] == "marketer"
    # a Bearer request carries no ambient credential: no CSRF token needed
    r = api.post("/api/v1/tokens", json={"name": "second"}, headers=auth)
    assert r.status_code == 201 and r.json()["token"].startswith("pbu1.")
    bad = {"Authorization": f"Bearer {token[:-2]}xx"}
    assert api.get("/api/v1/me", headers=bad).status_code == 401
    assert api.delete(f"/api/v1/tokens/{token_id}", headers=auth).status_code == 204
    assert api.get("/api/v1/me", headers=auth).status_code == 401


def test_audit_log_records_admin_actions(world: World) -> None:
    c = world.client("ada")
    token = csrf_of(c, "/admin")
    c.post(
        "/admin/users",
        data={
            "action": "add",
            "username": "olaf",
            "role": "owner",
            "stores": "main-st",
            "password": PASSWORD,
            "csrf": token,
        },
    )
    olaf = world.store.user_by_name("olaf")
    c.post("/admin/users", data={"action": "disable", "user_id": olaf["id"], "csrf": token})
    actions = [a["action"] for a in c.get("/api/v1/audit").json()]
    assert actions[:3] == ["user.disable", "user.add", "login"]
    assert login(world.client(), "olaf").status_code == 401  # disabled
    page = c.get("/admin").text
    assert "user.disable" in page and "olaf" in page


def test_account_page_saves_own_phone_and_creates_tokens(world: World) -> None:
    c = world.client("mia")
    token = csrf_of(c)
    r = c.post("/account", data={"action": "phone", "phone": "not a phone", "csrf": token})
    assert r.status_code == 400 and 'aria-invalid="true"' in r.text
    r = c.post("/account", data={"action": "phone", "phone": "+79161230000", "csrf": token})
    assert r.status_code == 200 and world.store.user_by_name("mia")["phone"] == "+79161230000"
    r = c.post("/account", data={"action": "token", "name": "CRM", "csrf": token})
    new = re.search(r'id="new-token">(pbu1\.[^<]+)<', r.text)
    assert new
    assert (
        world.client()
        .get("/api/v1/me", headers={"Authorization": f"Bearer {new.group(1)}"})
        .json()["username"]
        == "mia"
    )
