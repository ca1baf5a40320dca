"""A saved card's expiry: good through the last day of its expiry month, refused after."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.payment.customers import card_expired
from services.payment.models import SavedPaymentMethod

NOW = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("exp_month", "exp_year", "expired"),
    [
        (12, 2026, False),  # this month: still good
        (1, 2027, False),
        (11, 2026, True),  # last month
        (12, 2025, True),
        (1, 2030, False),
    ],
)
def test_card_expired__good_through_its_expiry_month(
    exp_month: int, exp_year: int, expired: bool
) -> None:
    method = SavedPaymentMethod(card_exp_month=exp_month, card_exp_year=exp_year)
    assert card_expired(method, now=NOW) is expired
