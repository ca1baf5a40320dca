"""ISO 4217 currencies and their minor units, from the CLDR data that Babel ships."""

from __future__ import annotations

from functools import cache

from babel.numbers import get_currency_precision, list_currencies

# Money is an int64 count of minor units everywhere; bigger amounts are refused at the edge.
AMOUNT_MAX = 99_999_999_999


@cache
def _currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def normalize_currency(code: str) -> str | None:
    """The upper-case ISO 4217 code, or None when `code` is not a known currency."""
    upper = code.strip().upper()
    if len(upper) != 3 or upper not in _currencies():
        return None
    return upper


def minor_unit_exponent(currency: str) -> int:
    """Digits after the decimal point: 2 for USD, 0 for JPY, 3 for KWD."""
    return int(get_currency_precision(currency))
