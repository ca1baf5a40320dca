"""Platform fees: basis points plus a fixed part, in integer minor units.

Rounding: the basis-point part is rounded half up (`amount * bps / 10000`, halves away from
zero since amounts are positive), the fixed part is added, and the total is capped at the
amount so a merchant is never charged more than the payment brought in.
"""

from __future__ import annotations

BPS_DENOMINATOR = 10_000


def compute_fee(*, amount: int, fee_bps: int, fee_fixed: int) -> int:
    """The platform's fee on a captured `amount`, never more than the amount."""
    assert amount >= 0 and 0 <= fee_bps <= BPS_DENOMINATOR and fee_fixed >= 0
    variable = (amount * fee_bps + BPS_DENOMINATOR // 2) // BPS_DENOMINATOR
    return min(amount, variable + fee_fixed)
