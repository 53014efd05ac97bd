"""Provider adapters on httpx.MockTransport: request shapes and every answer classified."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Callable

import httpx
import pytest

from cloud_bridge.config import ProviderSettings
from cloud_bridge.delivery.providers import (
    GatewayRules,
    HttpGatewayProvider,
    Outgoing,
    SandboxProvider,
    SmscProvider,
    TwilioProvider,
    classify_exception,
    fill,
    make_provider,
    retry_after_s,
    smsc_validity,
    twilio_signature,
)
from cloud_bridge.errors import ProviderConfigError
from cloud_bridge.storage.sends import sandbox_rows
from cloud_bridge.storage.store import BridgeStore

SID = "AC" + "a" * 32
MSG = Outgoing(
    key="pb1-abcd",
    to="+79161234501",
    sender="MainStCafe",
    body='Anna, 15% off "beans" & more',
    numeric_id=1,
    validity_s=540,
    status_callback="https://bridge.example/sms/twilio/status?key=pb1-abcd",
    attempt_at=1_700_000_000.0,
)

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def form(request: httpx.Request) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(request.content.decode()))


def raises(exc: type[Exception]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("injected", request=request)

    return handler


# -- Twilio ------------------------------------------------------------------------------------


def twilio(handler: Handler, **kw: str) -> TwilioProvider:
    return TwilioProvider(client(handler), SID, "secret-token", **kw)


def test_twilio_request_shape_and_accept() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"sid": "SM123", "status": "queued"})

    result = twilio(handler).submit(MSG)
    assert result.status == "accepted" and result.provider_id == "SM123"
    r = seen[0]
    assert r.method == "POST"
    assert r.url.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert (
        r.headers["Authorization"]
        == "Basic " + base64.b64encode(f"{SID}:secret-token".encode()).decode()
    )
    assert r.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form(r) == {
        "To": MSG.to,
        "From": "MainStCafe",
        "Body": MSG.body,
        "StatusCallback": MSG.status_callback,
        "ValidityPeriod": "540",
    }
    mg = "MG" + "b" * 32
    twilio(handler, messaging_service_sid=mg).submit(MSG)
    assert form(seen[1])["MessagingServiceSid"] == mg and "From" not in form(seen[1])


@pytest.mark.parametrize(
    "status,body,headers,expect,action,retry_after",
    [
        (
            429,
            {"code": 20429, "message": "Too Many Requests"},
            {"Retry-After": "7"},
            "retry",
            None,
            7.0,
        ),
        (400, {"code": 20429}, {}, "retry", None, None),
        (503, {}, {"Retry-After": "2"}, "retry", None, 2.0),
        (500, {"code": 20500}, {}, "retry", None, None),
        (502, {}, {}, "retry", None, None),
        (504, {}, {}, "unknown", None, None),
        (507, {}, {}, "unknown", None, None),  # any other 5xx: maybe processed, ask
        (520, {}, {}, "unknown", None, None),
        (501, {}, {}, "failed", None, None),  # cannot serve this request at all
        (505, {}, {}, "failed", None, None),
        (400, {"code": 21610, "message": "unsubscribed"}, {}, "failed", "opt_out", None),
        (400, {"code": 21211, "message": "invalid"}, {}, "failed", "invalid_number", None),
        (400, {"code": 21614, "message": "not mobile"}, {}, "failed", "invalid_number", None),
        (400, {"code": 21408}, {}, "failed", None, None),
        (401, {"code": 20003}, {}, "failed", None, None),
        (201, {"sid": "SM1", "status": "failed", "error_code": 30001}, {}, "failed", None, None),
        (200, {"no": "sid"}, {}, "unknown", None, None),
    ],
)
def test_twilio_answers(status, body, headers, expect, action, retry_after) -> None:  # type: ignore[no-untyped-def]
    result = twilio(lambda r: httpx.Response(status, json=body, headers=headers)).submit(MSG)
    assert result.status == expect
    assert result.action == action
    assert result.retry_after == retry_after
    if isinstance(body.get("code"), int) and expect == "failed":
        assert str(body["code"]) in (result.error or "")
    assert MSG.to not in (result.error or "")


@pytest.mark.parametrize(
    "exc,expect",
    [
        (httpx.ConnectError, "retry"),
        (httpx.ConnectTimeout, "retry"),
        (httpx.PoolTimeout, "retry"),
        (httpx.ReadTimeout, "unknown"),
        (httpx.WriteTimeout, "unknown"),
        (httpx.ReadError, "unknown"),
        (httpx.RemoteProtocolError, "unknown"),
        (httpx.UnsupportedProtocol, "failed"),
    ],
)
def test_transport_errors(exc: type[Exception], expect: str) -> None:
    assert twilio(raises(exc)).submit(MSG).status == expect


def test_twilio_status_by_sid_and_by_list() -> None:
    msgs = {
        "SM1": {"sid": "SM1", "status": "delivered"},
        "SM2": {"sid": "SM2", "status": "undelivered", "error_code": 30003},
        "SM3": {"sid": "SM3", "status": "sent"},
        "SM4": {"sid": "SM4", "status": "failed", "error_code": 30006},
    }

    listed: list[dict[str, str]] = [
        {"sid": "SMx", "status": "sent", "body": "other", "direction": "outbound-api",
         "date_created": "Tue, 14 Nov 2023 22:13:20 +0000"},
        {"sid": "SM9", "status": "queued", "body": MSG.body, "direction": "outbound-api",
         "date_created": "Tue, 14 Nov 2023 22:13:21 +0000", "date_sent": None},  # type: ignore[dict-item]
        {"sid": "SMin", "status": "received", "body": "STOP", "direction": "inbound",
         "date_created": "Tue, 14 Nov 2023 22:13:22 +0000"},
    ]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/Messages.json"):
            assert request.url.params["To"] == MSG.to
            assert not [k for k in request.url.params if k.startswith("DateSent")]
            return httpx.Response(200, json={"messages": listed, "next_page_uri": None})
        sid = path.rsplit("/", 1)[1].removesuffix(".json")
        return httpx.Response(200, json=msgs[sid]) if sid in msgs else httpx.Response(404, json={})

    p = twilio(handler)

    def status(pid: str | None) -> tuple[str, str | None, str | None]:
        m = Outgoing(**{**{f: getattr(MSG, f) for f in MSG.__slots__}, "provider_id": pid})  # type: ignore[attr-defined]
        s = p.status(m)
        return s.status, s.error, s.action

    assert status("SM1")[0] == "delivered"
    assert status("SM2")[0] == "undelivered" and "30003" in (status("SM2")[1] or "")
    assert status("SM3")[0] == "accepted"
    assert status("SM4") == ("failed", "30006 landline or unreachable carrier", "invalid_number")
    assert status("SM404")[0] == "not_found"
    found = p.status(MSG)  # no sid: matched by recipient, body and time, still queued
    assert found.status == "accepted" and found.provider_id == "SM9"
    other = Outgoing(**{**{f: getattr(MSG, f) for f in MSG.__slots__}, "body": "never sent"})  # type: ignore[attr-defined]
    unsure = p.status(other)  # other messages to that number then: absence is not proven
    assert unsure.status == "error" and "absence cannot be proven" in (unsure.error or "")
    listed.clear()
    assert p.status(other).status == "not_found"  # nothing at all to that number since
    recent = Outgoing(**{**{f: getattr(MSG, f) for f in MSG.__slots__}, "attempt_at": time.time()})  # type: ignore[attr-defined]
    assert p.status(recent).status == "error"  # too early to believe absence
    assert twilio(lambda r: httpx.Response(500)).status(MSG).status == "error"
    assert twilio(raises(httpx.ConnectError)).status(MSG).status == "error"


def test_twilio_list_is_read_to_its_last_page() -> None:
    pages = {
        None: {"messages": [], "next_page_uri": "/2010-04-01/Accounts/x/Messages.json?Page=1"},
        "1": {"messages": [{"sid": "SM7", "status": "sent", "body": MSG.body,
                            "date_created": "Tue, 14 Nov 2023 22:13:21 +0000"}],
              "next_page_uri": None},
    }  # fmt: skip
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=pages[request.url.params.get("Page")])

    found = twilio(handler).status(MSG)
    assert (found.status, found.provider_id) == ("accepted", "SM7")
    assert seen[1].startswith("https://api.twilio.com/2010-04-01/Accounts/x/Messages.json")
    endless = twilio(lambda r: httpx.Response(200, json=pages[None]))
    assert endless.status(MSG).status == "error"  # never "not found" from a partial list


def test_twilio_validity_period_is_capped_at_twilios_limit() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"sid": "SM1", "status": "queued"})

    long = Outgoing(**{**{f: getattr(MSG, f) for f in MSG.__slots__}, "validity_s": 50_000})  # type: ignore[attr-defined]
    twilio(handler).submit(long)
    assert form(seen[0])["ValidityPeriod"] == "36000"


def test_twilio_signature_round_trip() -> None:
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+1555"}
    url = "https://bridge.example/sms/twilio/status?key=pb1-x"
    sig = twilio_signature(url, params, "tok")
    assert sig == twilio_signature(url, list(reversed(list(params.items()))), "tok")
    assert sig != twilio_signature(url, {**params, "MessageStatus": "failed"}, "tok")
    assert sig != twilio_signature(url.replace("pb1-x", "pb2-x"), params, "tok")
    assert sig != twilio_signature(url, params, "other")


def test_retry_after_forms() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == pytest.approx(10.0)


# -- SMSC.ru -----------------------------------------------------------------------------------


def smsc(handler: Handler) -> SmscProvider:
    return SmscProvider(client(handler), "login", "pw", "https://smsc.test", duplicate_window_s=2)


def test_smsc_request_shape_and_accept() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 1, "cnt": 2, "cost": "7.0", "balance": "10"})

    result = smsc(handler).submit(MSG)
    assert (result.status, result.provider_id, result.parts) == ("accepted", "1", 2)
    assert seen[0].url.path == "/sys/send.php"
    assert form(seen[0]) == {
        "login": "login",
        "psw": "pw",
        "fmt": "3",
        "charset": "utf-8",
        "phones": MSG.to,
        "mes": MSG.body,
        "sender": "MainStCafe",
        "id": "1",
        "cost": "3",
        "valid": "00:09",
    }


@pytest.mark.parametrize(
    "code,expect,action",
    [
        (1, "failed", None),
        (2, "failed", None),
        (3, "failed", None),
        (4, "unknown", None),
        (5, "failed", None),
        (6, "failed", None),
        (7, "failed", "invalid_number"),
        (8, "failed", "invalid_number"),
        (9, "unknown", None),
    ],
)
def test_smsc_error_codes(code: int, expect: str, action: str | None) -> None:
    result = smsc(lambda r: httpx.Response(200, json={"error": "x", "error_code": code})).submit(
        MSG
    )
    assert (result.status, result.action) == (expect, action)
    assert result.error and result.error.startswith(f"SMSC {code}:")
    if code == 9:
        assert result.retry_after == 2  # ask after SMSC's duplicate window
    if code == 4:
        assert result.retry_after == 600  # ask after SMSC's documented block, never resend


@pytest.mark.parametrize(
    "answer,expect",
    [({"status": -3}, "not_found"), ({"status": -2}, "failed"), ({"status": -1}, "accepted"),
     ({"status": 0}, "accepted"), ({"status": 1}, "delivered"), ({"status": 2}, "delivered"),
     ({"status": 4}, "delivered"), ({"status": 3}, "undelivered"),
     ({"status": 20}, "undelivered"), ({"status": 22}, "failed"), ({"status": 23}, "failed"),
     ({"status": 24}, "failed"), ({"status": 25}, "failed"), ({"status": "1"}, "delivered"),
     ({"status": 77}, "error"), ({"err": 0}, "error"), ({"status": None}, "error"),
     ({"status": "x"}, "error"), ({"error": "not found", "error_code": 3}, "not_found"),
     ({"error": "blocked", "error_code": 4}, "error"), ({"error": "x", "error_code": 9}, "error")],
)  # fmt: skip
def test_smsc_status(answer: dict, expect: str) -> None:  # type: ignore[type-arg]
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and request.url.path == "/sys/status.php"
        assert not request.url.query  # password and phone in the body, never in the URL
        sent = form(request)
        assert sent["id"] == "1" and sent["phone"] == MSG.to and sent["psw"] == "pw"
        return httpx.Response(200, json=answer)

    result = smsc(handler).status(MSG)
    assert result.status == expect
    if answer.get("status") == -2:
        assert "stopped" in (result.error or "")


def test_smsc_http_faults() -> None:
    assert smsc(lambda r: httpx.Response(500, text="oops")).submit(MSG).status == "retry"
    assert smsc(lambda r: httpx.Response(200, text="not json")).submit(MSG).status == "unknown"
    assert smsc(raises(httpx.ReadTimeout)).submit(MSG).status == "unknown"
    assert smsc(lambda r: httpx.Response(200, json={"error_code": 4})).status(MSG).status == "error"
    assert smsc_validity(30) == "00:01" and smsc_validity(3600) == "01:00"
    assert smsc_validity(10**6) == "24:00" and smsc_validity(None) is None


# -- generic HTTP gateway ------------------------------------------------------------------------


def test_gateway_template_escaping_and_success_rule() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"status": "queued", "message_id": "gw-7"})

    rules = GatewayRules(
        url="https://gw.test/v1/sms?ref={key}", headers={"Authorization": "Bearer t"}
    )
    result = HttpGatewayProvider(client(handler), rules).submit(MSG)
    assert (result.status, result.provider_id) == ("accepted", "gw-7")
    assert seen[0].url.params["ref"] == MSG.key
    body = json.loads(seen[0].content)
    assert body == {"to": MSG.to, "from": "MainStCafe", "text": MSG.body, "reference": MSG.key}
    strict = GatewayRules(url="https://gw.test/send", success_regex=r'"ok"\s*:\s*true')
    assert HttpGatewayProvider(client(handler), strict).submit(MSG).status == "unknown"


@pytest.mark.parametrize(
    "status,expect",
    [
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (504, "unknown"),
        (507, "unknown"),
        (501, "failed"),
        (400, "failed"),
        (401, "failed"),
    ],
)
def test_gateway_statuses(status: int, expect: str) -> None:
    p = HttpGatewayProvider(
        client(lambda r: httpx.Response(status)), GatewayRules(url="https://gw.test/send")
    )
    assert p.submit(MSG).status == expect


def test_gateway_form_body_and_status_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            ref = request.url.path.rsplit("/", 1)[1]
            return (
                httpx.Response(200, text='{"status":"DELIVERED"}')
                if ref == MSG.key
                else httpx.Response(404)
            )
        assert form(request) == {"dst": MSG.to, "txt": MSG.body}
        return httpx.Response(200, text="OK id=55")

    rules = GatewayRules(
        url="https://gw.test/send",
        body_format="form",
        body_template="dst={to}&txt={body}",
        id_regex=r"id=(\d+)",
        status_url="https://gw.test/status/{key}",
    )
    p = HttpGatewayProvider(client(handler), rules)
    assert p.submit(MSG).provider_id == "55"
    assert p.status(MSG).status == "delivered"
    other = Outgoing(key="nope", to=MSG.to, sender="x", body="y")
    assert p.status(other).status == "not_found"
    assert fill("{body}", {"body": 'a "b"\n'}, "json") == 'a \\"b\\"\\n'


def test_config_errors() -> None:
    with pytest.raises(ProviderConfigError):
        HttpGatewayProvider(
            client(lambda r: httpx.Response(200)), GatewayRules(url="https://x", id_regex="(")
        )
    with pytest.raises(ProviderConfigError):
        TwilioProvider(client(lambda r: httpx.Response(200)), "", "")
    with pytest.raises(ValueError, match="twilio"):
        ProviderSettings(kind="twilio")


def test_make_provider_from_settings() -> None:
    store = BridgeStore(":memory:", data_key=b"\x02" * 32)
    assert isinstance(make_provider("sandbox", store), SandboxProvider)
    s = ProviderSettings(kind="twilio", twilio={"account_sid": SID, "auth_token": "t"})
    p = make_provider(s, store, client(lambda r: httpx.Response(201, json={"sid": "SM1"})))
    assert isinstance(p, TwilioProvider) and p.account == f"twilio:{SID}"
    s = ProviderSettings(kind="smsc", smsc={"login": "l", "password": "p"})
    assert isinstance(make_provider(s, store), SmscProvider)
    s = ProviderSettings(kind="http", http={"url": "https://gw.test/send", "token": "tok"})
    gw = make_provider(s, store)
    assert isinstance(gw, HttpGatewayProvider) and gw.rules.headers["Authorization"] == "Bearer tok"


def test_sandbox_is_idempotent_by_key_and_answers_status() -> None:
    store = BridgeStore(":memory:", data_key=b"\x02" * 32)
    p = SandboxProvider(store)
    first = p.submit(MSG)
    assert p.submit(MSG).provider_id == first.provider_id
    assert len(sandbox_rows(store)) == 1
    assert p.status(MSG).status == "accepted"
    assert p.status(Outgoing(key="other", to="x", sender="y", body="z")).status == "not_found"
    # The one-off transactional path used by enrolment codes.
    assert p.send("+79161234502", "MainStCafe", "code 1234").status == "accepted"


def test_one_off_send_reports_retry_as_failed() -> None:
    p = twilio(lambda r: httpx.Response(503))
    assert p.send("+15551234567", "Cafe", "code").status == "failed"
    assert classify_exception(httpx.ConnectError("x")).status == "retry"


def test_validate_config_gives_the_smsc_handler_url_in_utf8(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from cloud_bridge.cli.main import app

    cfg = tmp_path / "bridge.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path}"\npublic_url = "https://bridge.example"\n'
        '[provider]\nkind = "smsc"\n[provider.smsc]\nlogin = "l"\npassword = "smsc-pass-9731"\n'
    )
    out = CliRunner().invoke(app, ["validate-config", str(cfg)])
    assert out.exit_code == 0, out.output
    assert "https://bridge.example/sms/smsc/callback?charset=utf-8&md5=1" in out.output
    assert "smsc-pass-9731" not in out.output


def test_smsc_one_off_send_blocked_is_failed_not_unknown() -> None:
    """An enrolment code is unique: error 4 means this (only) request was not sent."""
    blocked = smsc(lambda r: httpx.Response(200, json={"error": "blocked", "error_code": 4}))
    assert blocked.send("+79161234502", "Cafe", "code 5521").status == "failed"
    assert blocked.submit(MSG).status == "unknown"  # an offer may have had an earlier copy
