"""Consent texts: every language names both consents, and their opt-out words are the keywords
inbound SMS obey (the enrolment flows: tests/db/test_enrolment.py)."""

from __future__ import annotations

import hashlib
import re

from cloud_bridge.customers.consent_texts import CONSENT_DIR, LANGUAGES, consent_text, versions


def test_consent_texts_exist_in_every_language_and_name_both_consents() -> None:
    assert "v1" in versions()
    for lang in LANGUAGES:
        text = consent_text("v1", lang)
        raw = (CONSENT_DIR / f"v1.{lang}.md").read_bytes()
        assert text.sha256 == hashlib.sha256(raw).hexdigest()
        assert text.html.count("<li>") == 2  # (1) marketing SMS, (2) recognition
        assert "STOP" in text.text
    assert "СТОП" in consent_text("v1", "ru").text
    assert "ՍՏՈՊ" in consent_text("v1", "hy").text
    assert "Wi-Fi" in consent_text("v1", "hy").text and "SMS" in consent_text("v1", "ru").text


def test_opt_out_words_in_the_texts_are_the_keywords_inbound_sms_obey() -> None:
    from cloud_bridge.delivery.inbound import parse_keyword

    for lang in LANGUAGES:
        bold = re.findall(r"\*\*(.+?)\*\*", consent_text("v1", lang).text)
        actions = {parse_keyword(w).action for w in bold if parse_keyword(w)}
        assert actions == {"stop", "stopall"}, (lang, bold)
