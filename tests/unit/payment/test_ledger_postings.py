"""The ledger transactions the worker posts: balanced, by the posting rules, zero legs dropped."""

from __future__ import annotations

from collections import defaultdict

from paymesh.ledger.v1 import ledger_internal_pb2

from services.payment.ledger import capture_request, refund_request
from services.payment.models import Payment, Refund


def payment() -> Payment:
    """A payment as the worker sees it."""
    return Payment(id="pay_1", merchant_id="mer_1", livemode=True, currency="EUR", amount=1000)


def totals(request: ledger_internal_pb2.PostTransactionRequest) -> dict[str, int]:
    """Debits minus credits per currency (zero when balanced)."""
    sums: dict[str, int] = defaultdict(int)
    for posting in request.postings:
        sums[posting.currency] += (
            posting.amount if posting.direction == "debit" else -posting.amount
        )
    return dict(sums)


def test_capture__debits_receivable_credits_merchant_pending_and_fees() -> None:
    request = capture_request(payment(), amount=1000, fee=59)
    legs = {(p.owner, p.kind, p.direction): p.amount for p in request.postings}
    assert legs == {
        ("platform", "processor_receivable", "debit"): 1000,
        ("mer_1", "merchant_pending", "credit"): 941,
        ("platform", "platform_fees", "credit"): 59,
    }
    assert totals(request) == {"EUR": 0}
    assert request.external_reference == "payment:pay_1:capture"
    assert request.livemode is True
    assert dict(request.metadata) == {"payment_id": "pay_1", "merchant_id": "mer_1"}


def test_capture__zero_legs_are_left_out() -> None:
    all_fee = capture_request(payment(), amount=10, fee=10)
    assert {p.kind for p in all_fee.postings} == {"processor_receivable", "platform_fees"}
    no_fee = capture_request(payment(), amount=10, fee=0)
    assert {p.kind for p in no_fee.postings} == {"processor_receivable", "merchant_pending"}
    assert totals(all_fee) == totals(no_fee) == {"EUR": 0}


def test_refund__debits_merchant_credits_receivable() -> None:
    refund = Refund(
        id="re_1",
        payment_id="pay_1",
        merchant_id="mer_1",
        livemode=False,
        amount=300,
        currency="JPY",
    )
    request = refund_request(refund)
    legs = {(p.owner, p.kind, p.direction): p.amount for p in request.postings}
    assert legs == {
        ("mer_1", "merchant_balance", "debit"): 300,
        ("platform", "processor_receivable", "credit"): 300,
    }
    assert totals(request) == {"JPY": 0}
    assert request.external_reference == "refund:re_1"
    assert dict(request.metadata)["refund_id"] == "re_1"


def test_payout_postings__each_step_balances_through_payouts_in_transit() -> None:
    from services.payment.ledger import payout_request, release_request
    from services.payment.models import Payout

    payout = Payout(id="po_1", merchant_id="mer_1", livemode=False, amount=700, currency="EUR")
    steps = {
        step: {
            (p.owner, p.kind, p.direction): p.amount for p in payout_request(payout, step).postings
        }
        for step in ("", "paid", "failed", "canceled")
    }
    assert steps[""] == {
        ("mer_1", "merchant_balance", "debit"): 700,
        ("mer_1", "payouts_in_transit", "credit"): 700,
    }
    assert steps["paid"] == {
        ("mer_1", "payouts_in_transit", "debit"): 700,
        ("platform", "platform_cash", "credit"): 700,
    }
    assert (
        steps["failed"]
        == steps["canceled"]
        == {
            ("mer_1", "payouts_in_transit", "debit"): 700,
            ("mer_1", "merchant_balance", "credit"): 700,
        }
    )
    release = release_request(
        payment_id="pay_1", merchant_id="mer_1", livemode=False, amount=941, currency="EUR"
    )
    assert totals(release) == {"EUR": 0}
    assert release.external_reference == "payment:pay_1:available"
    assert "payment_id" not in release.metadata  # not the capture's source
