"""ISO 4217 currencies and their minor units, from the CLDR data that Babel ships."""

from __future__ import annotations

import datetime
from functools import cache

from babel.core import get_global
from babel.numbers import get_currency_precision, get_territory_currencies

# Money is an int64 count of minor units everywhere; bigger amounts are refused at the edge.
AMOUNT_MAX = 99_999_999_999


@cache
def _currencies() -> frozenset[str]:
    # Babel's full list also holds withdrawn currencies (DEM) and ISO's codes that are not money
    # one can charge (XXX, XTS, gold): only what some territory uses as legal tender today.
    today = datetime.datetime.now(datetime.UTC).date()
    return frozenset(
        code
        for territory in get_global("territory_currencies")
        for code in get_territory_currencies(
            territory, start_date=today, tender=True, non_tender=False
        )
    )


def normalize_currency(code: str) -> str | None:
    """The upper-case ISO 4217 code, or None unless it is a currency in use as legal tender."""
    upper = code.strip().upper()
    if len(upper) != 3 or upper not in _currencies():
        return None
    return upper


def minor_unit_exponent(currency: str) -> int:
    """Digits after the decimal point: 2 for USD, 0 for JPY, 3 for KWD."""
    return int(get_currency_precision(currency))
