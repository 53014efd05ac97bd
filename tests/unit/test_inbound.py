"""Inbound SMS keywords and callback URLs, without a store (the webhooks on both engines:
tests/db/test_inbound.py)."""

from __future__ import annotations

import pytest

from cloud_bridge.delivery.inbound import parse_keyword


@pytest.mark.parametrize(
    "text,action,lang",
    [
        ("STOP", "stop", None),
        ("  stop\n", "stop", None),
        ("S t O p", "stop", None),
        ("Stop!", "stop", None),
        ("unsubscribe", "stop", None),
        ("CANCEL", "stop", None),
        ("end", "stop", None),
        ("Quit.", "stop", None),
        ("STOPALL", "stopall", None),
        ("Stop all", "stopall", None),
        ("СТОП", "stop", "ru"),
        ("стоп", "stop", "ru"),
        ("Отписаться", "stop", "ru"),
        ("ОТПИСКА", "stop", "ru"),
        ("стоп всё", "stopall", "ru"),
        ("ՍՏՈՊ", "stop", "hy"),
        ("Կանգ", "stop", "hy"),
        ("start", "start", None),
        ("YES", "start", None),
        ("unstop", "start", None),
        ("СТАРТ", "start", "ru"),
        ("Да", "start", "ru"),
        ("ԱՅՈ", "start", "hy"),
        ("HELP", "help", None),
        ("info", "help", None),
        ("Помощь", "help", "ru"),
        ("ՕԳՆՈՒԹՅՈՒՆ", "help", "hy"),
    ],
)
def test_keywords(text: str, action: str, lang: str | None) -> None:
    kw = parse_keyword(text)
    assert kw is not None and (kw.action, kw.language) == (action, lang)


@pytest.mark.parametrize(
    "text", ["please stop sending", "stopp", "", "yes please", "стоп!!! нет", "x" * 100]
)
def test_not_keywords(text: str) -> None:
    assert parse_keyword(text) is None


def test_smsc_callback_url_asks_for_utf8() -> None:
    from cloud_bridge.delivery.inbound import smsc_callback_url

    url = smsc_callback_url("https://bridge.example/")
    assert url == "https://bridge.example/sms/smsc/callback?charset=utf-8&md5=1"
