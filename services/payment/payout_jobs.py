"""RQ job of the payment worker that carries a payout through the ledger and the bank.

Steps, each safe to repeat (ledger postings are idempotent by reference, the bank by payout id,
and every state change re-checks the status under the row lock):

1. `pending`: post the creation (available → payouts in transit), then move to `in_transit`.
2. `in_transit`: ask the bank; post `paid` (in transit → platform cash) or `failed` (in transit →
   available), then move to `paid` / `failed` and mark the ledger complete.
3. `canceled` with the ledger incomplete: post the creation (if a worker had not) and its
   reversal, then mark the ledger complete.

A worker killed between steps leaves the payout where it was; the sweeper re-drives it after
`payment_stuck_after_s`. A session-level advisory lock per payout keeps two workers apart.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache

from sqlalchemy.orm import Session, sessionmaker

from services.common import logs
from services.common.db import transaction
from services.payment import ledger, payouts
from services.payment.bank import SimulatedBank
from services.payment.jobs import WorkerContext, context, exclusive
from services.payment.models import Payout

logger = logging.getLogger(__name__)


@cache
def _bank(sessions: sessionmaker[Session], latency_ms: int) -> SimulatedBank:
    return SimulatedBank(sessions, latency_ms=latency_ms)


def process_payout(payout_id: str) -> str:
    """Carries a payout on as far as it goes now; returns what it did."""
    ctx = context()
    with logs.bound(payout_id=payout_id), exclusive(ctx.engine, f"payout:{payout_id}") as held:
        if held is None:
            return "busy"
        return drive_payout(ctx, payout_id)


def _load(ctx: WorkerContext, payout_id: str) -> Payout | None:
    with transaction(ctx.sessions) as session:
        payout = session.get(Payout, payout_id)
        if payout is not None:
            session.expunge(payout)
        return payout


def _post(ctx: WorkerContext, payout: Payout, step: str = "") -> None:
    ledger.post(
        ctx.ledger, ledger.payout_request(payout, step), timeout_s=ctx.settings.grpc_timeout_s
    )


def drive_payout(ctx: WorkerContext, payout_id: str) -> str:
    """The body of `process_payout`, without the lock."""
    payout = _load(ctx, payout_id)
    if payout is None or payout.ledger_complete:
        return "nothing to do"
    if payout.status == "canceled":
        _post(ctx, payout)
        _post(ctx, payout, "canceled")
        with transaction(ctx.sessions) as session:
            locked = session.get(Payout, payout_id, with_for_update=True)
            assert locked is not None
            # Both postings exist now; the creation's time stands in for when it left the balance.
            locked.post_time = locked.post_time or datetime.now(UTC)
            locked.ledger_complete = True
        return "canceled"
    if payout.status == "pending":
        _post(ctx, payout)
        with transaction(ctx.sessions) as session:
            locked = session.get(Payout, payout_id, with_for_update=True)
            assert locked is not None
            if locked.status != "pending":
                # Canceled meanwhile: the cancel's drive posts the reversal.
                return "nothing to do"
            locked.post_time = locked.post_time or datetime.now(UTC)
            payouts.move(session, locked, "in_transit")
    transfer = _bank(ctx.sessions, ctx.settings.processor_latency_ms).transfer(
        payout_id=payout.id,
        account_number=payout.bank_account_number,
        amount=payout.amount,
        currency=payout.currency,
    )
    outcome = transfer.status
    _post(ctx, payout, outcome)
    with transaction(ctx.sessions) as session:
        locked = session.get(Payout, payout_id, with_for_update=True)
        assert locked is not None
        if locked.status != "in_transit":
            return "nothing to do"
        payouts.move(session, locked, outcome, failure_code=transfer.failure_code)
        locked.ledger_complete = True
    logger.info("payout %s %s", payout_id, outcome)
    return outcome
