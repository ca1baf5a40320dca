"""Fee arithmetic: integer, rounded half up on the basis-point part, capped at the amount."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.money import AMOUNT_MAX
from services.payment.fees import compute_fee


@pytest.mark.parametrize(
    ("amount", "bps", "fixed", "fee"),
    [
        (10_000, 290, 30, 320),
        (1_000, 290, 30, 59),
        (50, 290, 0, 1),  # 1.45 rounds down
        (150, 100, 0, 2),  # 1.5 rounds half up
        (149, 100, 0, 1),  # 1.49 rounds down
        (10, 290, 30, 10),  # capped at the amount
        (1, 0, 0, 0),
        (AMOUNT_MAX, 10_000, 0, AMOUNT_MAX),
    ],
)
def test_compute_fee(amount: int, bps: int, fixed: int, fee: int) -> None:
    assert compute_fee(amount=amount, fee_bps=bps, fee_fixed=fixed) == fee


@given(
    amount=st.integers(min_value=0, max_value=AMOUNT_MAX),
    bps=st.integers(min_value=0, max_value=10_000),
    fixed=st.integers(min_value=0, max_value=1_000_000),
)
def test_fee_is_bounded_and_matches_exact_rounding(amount: int, bps: int, fixed: int) -> None:
    fee = compute_fee(amount=amount, fee_bps=bps, fee_fixed=fixed)
    assert 0 <= fee <= amount
    exact_twice = 2 * amount * bps  # twice the variable part, in units of 1/10000
    variable = (exact_twice + 10_000) // 20_000  # half up
    assert fee == min(amount, variable + fixed)
