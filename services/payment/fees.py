"""Platform fees: basis points plus a fixed part, in integer minor units.

Rounding: the basis-point part is rounded half up (`amount * bps / 10000`, halves away from
zero since amounts are positive), the fixed part is added, and the total is capped at the
amount so a merchant is never charged more than the payment brought in.


The dispute fee is a fixed charge per dispute, withdrawn with the disputed amount and kept
whatever the outcome (as Stripe does): 15.00 in USD, EUR, GBP, CAD, AUD and other two-decimal
currencies, 2000 in JPY, and 15 major units in any other currency at its own exponent.
"""

from __future__ import annotations

from services.common.money import minor_unit_exponent

BPS_DENOMINATOR = 10_000
# Per currency where 15 major units would not be the fee a merchant there expects.
DISPUTE_FEES = {"JPY": 2000}
DISPUTE_FEE_MAJOR_UNITS = 15


def compute_fee(*, amount: int, fee_bps: int, fee_fixed: int) -> int:
    """The platform's fee on a captured `amount`, never more than the amount."""
    assert amount >= 0 and 0 <= fee_bps <= BPS_DENOMINATOR and fee_fixed >= 0
    variable = (amount * fee_bps + BPS_DENOMINATOR // 2) // BPS_DENOMINATOR
    return min(amount, variable + fee_fixed)


def dispute_fee(currency: str) -> int:
    """The fee withdrawn from the merchant's balance when a chargeback opens, in minor units."""
    if currency in DISPUTE_FEES:
        return DISPUTE_FEES[currency]
    return int(DISPUTE_FEE_MAJOR_UNITS * 10 ** minor_unit_exponent(currency))
