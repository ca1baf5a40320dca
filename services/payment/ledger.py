"""What the payment service posts to the ledger (issue 4's posting rules), and how.

- capture of A with fee F: debit `processor_receivable` (platform) A; credit `merchant_pending`
  (merchant) A - F; credit `platform_fees` (platform) F. A zero leg is left out (the ledger takes
  positive amounts only), e.g. when the fee swallows the whole amount.
- funds available (the sweeper, after the settlement delay) N = A - F: debit `merchant_pending`
  N; credit `merchant_balance` (available) N.
- refund R: debit `merchant_balance` (merchant) R; credit `processor_receivable` (platform) R.
- dispute opened (a chargeback) of D with dispute fee F: debit `merchant_balance` (merchant)
  D + F; credit `processor_receivable` (platform) D (the network took it back); credit
  `platform_fees` (platform) F.
- dispute won: debit `processor_receivable` (platform) D; credit `merchant_balance` (merchant)
  D. The fee stays. A lost dispute posts nothing more; an inquiry posts nothing.
- payout created P: debit `merchant_balance` P; credit `payouts_in_transit` (merchant) P.
- payout paid: debit `payouts_in_transit` P; credit `platform_cash` (platform) P.
- payout failed or canceled: debit `payouts_in_transit` P; credit `merchant_balance` P.

Posting is idempotent by `external_reference` (`payment:<id>:capture`, `payment:<id>:available`,
`refund:<id>`, `dispute:<id>`, `dispute:<id>:won`, `payout:<id>`,
`payout:<id>:paid|failed|canceled`), so a worker may post again after a crash and the ledger
keeps one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from sqlalchemy import Row

from services.common.errors import status_code_name
from services.payment.models import Dispute, Payment, Payout, Refund

PLATFORM = "platform"
RETRYABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def capture_reference(payment_id: str) -> str:
    """The ledger reference of a payment's capture."""
    return f"payment:{payment_id}:capture"


def refund_reference(refund_id: str) -> str:
    """The ledger reference of a refund."""
    return f"refund:{refund_id}"


def dispute_reference(dispute_id: str) -> str:
    """The ledger reference of a dispute's withdrawal."""
    return f"dispute:{dispute_id}"


def dispute_won_reference(dispute_id: str) -> str:
    """The ledger reference of a won dispute's reinstatement."""
    return f"dispute:{dispute_id}:won"


def _posting(
    owner: str, kind: str, direction: str, amount: int, currency: str
) -> ledger_internal_pb2.Posting:
    return ledger_internal_pb2.Posting(
        owner=owner, kind=kind, direction=direction, amount=amount, currency=currency
    )


def capture_request(
    payment: Payment | Row[Any], *, amount: int, fee: int
) -> ledger_internal_pb2.PostTransactionRequest:
    """The balanced transaction for capturing `amount` of a payment with `fee`."""
    assert amount > 0 and 0 <= fee <= amount
    currency = payment.currency
    legs = [
        _posting(PLATFORM, "processor_receivable", "debit", amount, currency),
        _posting(payment.merchant_id, "merchant_pending", "credit", amount - fee, currency),
        _posting(PLATFORM, "platform_fees", "credit", fee, currency),
    ]
    return ledger_internal_pb2.PostTransactionRequest(
        external_reference=capture_reference(payment.id),
        description=f"capture of {payment.id}",
        postings=[leg for leg in legs if leg.amount > 0],
        metadata={"payment_id": payment.id, "merchant_id": payment.merchant_id},
        livemode=payment.livemode,
    )


def refund_request(refund: Refund) -> ledger_internal_pb2.PostTransactionRequest:
    """The balanced transaction for a refund (the platform keeps its fee)."""
    return ledger_internal_pb2.PostTransactionRequest(
        external_reference=refund_reference(refund.id),
        description=f"refund {refund.id} of {refund.payment_id}",
        postings=[
            _posting(
                refund.merchant_id, "merchant_balance", "debit", refund.amount, refund.currency
            ),
            _posting(PLATFORM, "processor_receivable", "credit", refund.amount, refund.currency),
        ],
        metadata={
            "payment_id": refund.payment_id,
            "merchant_id": refund.merchant_id,
            "refund_id": refund.id,
        },
        livemode=refund.livemode,
    )


def _dispute_metadata(dispute: Dispute) -> dict[str, str]:
    return {
        "payment_id": dispute.payment_id,
        "merchant_id": dispute.merchant_id,
        "dispute_id": dispute.id,
    }


def dispute_request(dispute: Dispute) -> ledger_internal_pb2.PostTransactionRequest:
    """The balanced transaction withdrawing a chargeback's amount and its fee."""
    assert dispute.amount > 0 and dispute.fee >= 0 and not dispute.is_inquiry
    currency = dispute.currency
    legs = [
        _posting(
            dispute.merchant_id, "merchant_balance", "debit", dispute.amount + dispute.fee, currency
        ),
        _posting(PLATFORM, "processor_receivable", "credit", dispute.amount, currency),
        _posting(PLATFORM, "platform_fees", "credit", dispute.fee, currency),
    ]
    return ledger_internal_pb2.PostTransactionRequest(
        external_reference=dispute_reference(dispute.id),
        description=f"dispute {dispute.id} of {dispute.payment_id}",
        postings=[leg for leg in legs if leg.amount > 0],
        metadata=_dispute_metadata(dispute),
        livemode=dispute.livemode,
    )


def dispute_won_request(dispute: Dispute) -> ledger_internal_pb2.PostTransactionRequest:
    """The balanced transaction reinstating a won dispute's amount (not its fee)."""
    return ledger_internal_pb2.PostTransactionRequest(
        external_reference=dispute_won_reference(dispute.id),
        description=f"dispute {dispute.id} of {dispute.payment_id} won",
        postings=[
            _posting(PLATFORM, "processor_receivable", "debit", dispute.amount, dispute.currency),
            _posting(
                dispute.merchant_id, "merchant_balance", "credit", dispute.amount, dispute.currency
            ),
        ],
        metadata=_dispute_metadata(dispute),
        livemode=dispute.livemode,
    )


def release_reference(payment_id: str) -> str:
    """The ledger reference of a payment's funds becoming available."""
    return f"payment:{payment_id}:available"


def release_request(
    *, payment_id: str, merchant_id: str, livemode: bool, amount: int, currency: str
) -> ledger_internal_pb2.PostTransactionRequest:
    """The balanced transaction moving a payment's net amount from pending to available."""
    assert amount > 0
    return ledger_internal_pb2.PostTransactionRequest(
        external_reference=release_reference(payment_id),
        description=f"funds of {payment_id} available",
        postings=[
            _posting(merchant_id, "merchant_pending", "debit", amount, currency),
            _posting(merchant_id, "merchant_balance", "credit", amount, currency),
        ],
        # `released_payment_id`, not `payment_id`: the transaction's source is not the capture.
        metadata={"released_payment_id": payment_id, "merchant_id": merchant_id},
        livemode=livemode,
    )


def payout_reference(payout_id: str, step: str = "") -> str:
    """The ledger reference of a payout's creation, or of its end (`paid`, `failed`...)."""
    return f"payout:{payout_id}:{step}" if step else f"payout:{payout_id}"


def payout_request(payout: Payout, step: str = "") -> ledger_internal_pb2.PostTransactionRequest:
    """The balanced transaction of a payout's creation (step "") or end (paid/failed/canceled)."""
    assert step in ("", "paid", "failed", "canceled")
    merchant, amount, currency = payout.merchant_id, payout.amount, payout.currency
    if step == "":
        legs = [
            _posting(merchant, "merchant_balance", "debit", amount, currency),
            _posting(merchant, "payouts_in_transit", "credit", amount, currency),
        ]
    elif step == "paid":
        legs = [
            _posting(merchant, "payouts_in_transit", "debit", amount, currency),
            _posting(PLATFORM, "platform_cash", "credit", amount, currency),
        ]
    else:
        legs = [
            _posting(merchant, "payouts_in_transit", "debit", amount, currency),
            _posting(merchant, "merchant_balance", "credit", amount, currency),
        ]
    return ledger_internal_pb2.PostTransactionRequest(
        external_reference=payout_reference(payout.id, step),
        description=f"payout {payout.id} {step or 'created'}",
        postings=legs,
        metadata={"payout_id": payout.id, "merchant_id": merchant},
        livemode=payout.livemode,
    )


def post(
    stub: ledger_internal_pb2_grpc.LedgerInternalServiceStub,
    request: ledger_internal_pb2.PostTransactionRequest,
    *,
    timeout_s: float,
) -> str:
    """Posts a transaction; returns its id. gRPC errors propagate to the caller."""
    transaction: ledger_internal_pb2.Transaction = stub.PostTransaction(request, timeout=timeout_s)
    return transaction.id


# A merchant has at most a handful of accounts per mode (kinds by currencies); this bounds the read.
ACCOUNT_PAGES_MAX = 20


def merchant_balances(
    stub: ledger_internal_pb2_grpc.LedgerInternalServiceStub,
    *,
    merchant_id: str,
    livemode: bool,
    timeout_s: float,
) -> dict[str, tuple[int, int]]:
    """The merchant's (available, pending) per currency in a mode, read from the ledger."""
    found: dict[str, tuple[int, int]] = {}
    token = ""
    for _ in range(ACCOUNT_PAGES_MAX):
        reply = stub.ListAccounts(
            ledger_internal_pb2.ListAccountsRequest(
                owner=merchant_id, page_size=100, page_token=token
            ),
            timeout=timeout_s,
        )
        for account in reply.accounts:
            if account.livemode != livemode:
                continue
            available, pending = found.get(account.currency, (0, 0))
            if account.kind == "merchant_balance":
                available = account.balance
            elif account.kind == "merchant_pending":
                pending = account.balance
            found[account.currency] = (available, pending)
        token = reply.next_page_token
        if not token:
            break
    return found


class PostingFailed(Exception):
    """One transaction of a batch was not posted: the code and message of its status."""


# One PostTransactions call carries at most this many (the ledger's limit).
POSTINGS_PER_CALL_MAX = 500


def post_many(
    stub: ledger_internal_pb2_grpc.LedgerInternalServiceStub,
    requests: Sequence[ledger_internal_pb2.PostTransactionRequest],
    *,
    timeout_s: float,
) -> list[str | PostingFailed]:
    """Posts transactions in PostTransactions calls (one for up to 500); each answer in order.

    Each answer is the transaction's id, or why it was not posted: the ledger's refusal of that
    one, or the call's error for every transaction of a call that failed.
    """
    answers: list[str | PostingFailed] = []
    for start in range(0, len(requests), POSTINGS_PER_CALL_MAX):
        chunk = requests[start : start + POSTINGS_PER_CALL_MAX]
        try:
            reply = stub.PostTransactions(
                ledger_internal_pb2.PostTransactionsRequest(transactions=chunk),
                timeout=timeout_s,
            )
        except grpc.RpcError as error:
            code = error.code().name  # type: ignore[attr-defined]
            answers += [PostingFailed(f"{code}: {error.details()}")] * len(chunk)  # type: ignore[attr-defined]
            continue
        if len(reply.results) != len(chunk):
            answers += [PostingFailed("the ledger answered for another count")] * len(chunk)
            continue
        for result in reply.results:
            if result.HasField("error"):
                code = status_code_name(result.error.code)
                answers.append(PostingFailed(f"{code}: {result.error.message}"))
            else:
                answers.append(result.transaction.id)
    return answers
