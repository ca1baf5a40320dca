"""Posting rules checked before any database work: validation, fingerprints, sources."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.money import AMOUNT_MAX
from services.ledger.errors import InvalidPosting
from services.ledger.posting import Posting, post_transaction, postings_hash, source_id_of


class NoDatabase:
    """A session that fails the test if anything reaches the database."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"invalid input reached the database ({name})")


def capture(amount: int = 1000, fee: int = 30, currency: str = "USD") -> list[Posting]:
    return [
        Posting("platform", "processor_receivable", "debit", amount, currency),
        Posting("mer_1", "merchant_balance", "credit", amount - fee, currency),
        Posting("platform", "platform_fees", "credit", fee, currency),
    ]


def violations_of(postings: list[Posting], **changes: Any) -> list[str]:
    arguments: dict[str, Any] = {
        "external_reference": "ref-1",
        "postings": postings,
        "livemode": False,
        "description": "",
        "metadata": {},
    }
    arguments.update(changes)
    with pytest.raises(InvalidPosting) as raised:
        post_transaction(NoDatabase(), **arguments)  # type: ignore[arg-type]
    assert raised.value.reason == "INVALID_LEDGER_TRANSACTION"
    return [v.field for v in raised.value.violations]


def test_unbalanced_postings_are_refused_before_the_database() -> None:
    legs = capture()
    legs[1] = Posting("mer_1", "merchant_balance", "credit", 969, "USD")
    assert violations_of(legs) == ["postings"]


def test_balance_is_per_currency() -> None:
    legs = [
        Posting("platform", "processor_receivable", "debit", 5, "USD"),
        Posting("mer_1", "merchant_balance", "credit", 5, "EUR"),
    ]
    assert violations_of(legs) == ["postings", "postings"]


@pytest.mark.parametrize(
    ("posting", "field"),
    [
        (Posting("platform", "processor_receivable", "debit", 0, "USD"), "postings[0].amount"),
        (Posting("platform", "processor_receivable", "debit", -1, "USD"), "postings[0].amount"),
        (
            Posting("platform", "processor_receivable", "debit", AMOUNT_MAX + 1, "USD"),
            "postings[0].amount",
        ),
        (Posting("platform", "processor_receivable", "debit", 5, "XYZ"), "postings[0].currency"),
        (Posting("platform", "cash", "debit", 5, "USD"), "postings[0].kind"),
        (Posting("platform", "processor_receivable", "down", 5, "USD"), "postings[0].direction"),
        (Posting("mer_1", "processor_receivable", "debit", 5, "USD"), "postings[0].owner"),
        (Posting("", "processor_receivable", "debit", 5, "USD"), "postings[0].owner"),
    ],
)
def test_each_bad_field_is_named(posting: Posting, field: str) -> None:
    other = Posting("mer_1", "merchant_balance", "credit", 5, "USD")
    assert field in violations_of([posting, other])


def test_platform_cannot_own_a_merchant_balance() -> None:
    legs = [
        Posting("platform", "processor_receivable", "debit", 5, "USD"),
        Posting("platform", "merchant_balance", "credit", 5, "USD"),
    ]
    assert violations_of(legs) == ["postings[1].owner"]


@pytest.mark.parametrize("count", [0, 1, 51])
def test_posting_count_is_bounded(count: int) -> None:
    legs = [Posting("platform", "processor_receivable", "debit", 1, "USD")] * count
    assert "postings" in violations_of(legs)


def test_reference_description_and_metadata_are_bounded() -> None:
    assert violations_of(capture(), external_reference="") == ["external_reference"]
    assert violations_of(capture(), external_reference="x" * 201) == ["external_reference"]
    assert violations_of(capture(), description="x" * 1001) == ["description"]
    assert violations_of(capture(), metadata={"k": "v" * 501}) == ["metadata[k]"]
    too_many = {f"k{i}": "v" for i in range(51)}
    assert "metadata" in violations_of(capture(), metadata=too_many)


def test_fingerprint_ignores_order_but_not_amounts_or_mode() -> None:
    legs = capture()
    assert postings_hash(legs, livemode=False) == postings_hash(legs[::-1], livemode=False)
    assert postings_hash(legs, livemode=False) != postings_hash(legs, livemode=True)
    assert postings_hash(legs, livemode=False) != postings_hash(capture(fee=31), livemode=False)


def test_source_is_the_refund_then_the_payment() -> None:
    assert source_id_of({"payment_id": "pay_1", "refund_id": "re_1"}) == "re_1"
    assert source_id_of({"payment_id": "pay_1"}) == "pay_1"
    assert source_id_of({}) == ""
