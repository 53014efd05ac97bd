"""Phone numbers: validate and normalise to E.164 with ``phonenumbers``."""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType

__all__ = ["PhoneError", "normalise_phone"]

# Types an SMS cannot reach.
_NOT_SMS = {
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
}


class PhoneError(ValueError):
    """Not a valid mobile number (the message says why, without repeating the number)."""


def normalise_phone(raw: str, region: str | None) -> str:
    """E.164 (``+79161234501``) from what a person typed; ``region`` is the store's country for
    numbers written without a country code."""
    text = (raw or "").strip()
    if not text:
        raise PhoneError("is empty")
    if len(text) > 40:
        raise PhoneError("is too long")
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        raise PhoneError(
            "is not a phone number" + ("" if region else " (write it with +country code)")
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError("is not a valid number")
    if phonenumbers.number_type(number) in _NOT_SMS:
        raise PhoneError("is not a mobile number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
