"""The payout tasks of the relay's sweeper: funds becoming available, and automatic payouts.

- Release: succeeded payments whose settlement delay (the merchant's, else the mode's) has run
  out get the ledger transaction that moves their net amount from `merchant_pending` to
  `merchant_balance` (idempotent by reference), then `funds_release_time` and a
  `balance.available` event per merchant and mode, in one transaction. A sweeper killed between
  the two posts again next round; the ledger keeps one transaction.
- Automatic payouts: every merchant on the automatic schedule with a bank account gets, once per
  `payout_automatic_interval_*_s`, a payout of its whole payable available balance per currency
  (`payouts.create_payout`, under its payout account's row lock like a manual payout).

Each task takes a bounded batch with `FOR UPDATE SKIP LOCKED` where rows are claimed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from paymesh.ledger.v1 import ledger_internal_pb2_grpc, ledger_pb2
from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import transaction
from services.common.rest_json import message_to_json
from services.common.settings import Settings
from services.payment import ledger, outbox, payouts
from services.payment.models import PayoutAccount

logger = logging.getLogger(__name__)

BATCH_SIZE_MAX = 100


# A payment is due once its settlement delay (its merchant's own, else its mode's) has passed.
_DUE_FOR_RELEASE = text(
    "SELECT p.id, p.merchant_id, p.livemode, p.currency, p.amount_received - p.fee AS net"
    " FROM payment.payments p LEFT JOIN payment.payout_accounts a"
    " ON a.merchant_id = p.merchant_id AND a.livemode = p.livemode"
    " WHERE p.status = 'succeeded' AND p.funds_release_time IS NULL"
    " AND p.settle_time <= now() - make_interval(secs => coalesce("
    " a.settlement_delay_s, CASE WHEN p.livemode THEN :live_s ELSE :test_s END))"
    " ORDER BY p.settle_time LIMIT :limit"
)
_MARK_RELEASED = text(
    "UPDATE payment.payments SET funds_release_time = now()"
    " WHERE id = ANY(:ids) AND funds_release_time IS NULL"
    " RETURNING merchant_id, livemode"
)


def release_funds(
    sessions: sessionmaker[Session],
    settings: Settings,
    stub: ledger_internal_pb2_grpc.LedgerInternalServiceStub,
) -> int:
    """Makes due payments' funds available (ledger first, then the rows); returns how many."""
    with transaction(sessions) as session:
        due = session.execute(
            _DUE_FOR_RELEASE,
            {
                "live_s": settings.payout_settlement_delay_live_s,
                "test_s": settings.payout_settlement_delay_test_s,
                "limit": BATCH_SIZE_MAX,
            },
        ).all()
    if not due:
        return 0
    to_post = [row for row in due if row.net > 0]
    posted = ledger.post_many(
        stub,
        [
            ledger.release_request(
                payment_id=row.id,
                merchant_id=row.merchant_id,
                livemode=row.livemode,
                amount=row.net,
                currency=row.currency,
            )
            for row in to_post
        ],
        timeout_s=settings.grpc_timeout_s,
    )
    failed = {
        row.id
        for row, answer in zip(to_post, posted, strict=True)
        if isinstance(answer, ledger.PostingFailed)
    }
    for payment_id in sorted(failed):
        logger.warning("releasing the funds of %s failed; next round retries", payment_id)
    released = [row.id for row in due if row.id not in failed]
    if not released:
        return 0
    with transaction(sessions) as session:
        owners = {
            (row.merchant_id, row.livemode)
            for row in session.execute(_MARK_RELEASED, {"ids": released})
        }
        for merchant_id, livemode in sorted(owners):
            _balance_event(session, settings, stub, merchant_id=merchant_id, livemode=livemode)
    return len(released)


def _balance_event(
    session: Session,
    settings: Settings,
    stub: ledger_internal_pb2_grpc.LedgerInternalServiceStub,
    *,
    merchant_id: str,
    livemode: bool,
) -> None:
    """Writes `balance.available` with the merchant's balance as the ledger has it now."""
    balances = ledger.merchant_balances(
        stub, merchant_id=merchant_id, livemode=livemode, timeout_s=settings.grpc_timeout_s
    )
    balance = ledger_pb2.Balance(
        available=[
            ledger_pb2.BalanceAmount(currency=currency, available=available, pending=pending)
            for currency, (available, pending) in sorted(balances.items())
        ],
        livemode=livemode,
    )
    outbox.add_event(
        session,
        event_type="balance.available",
        merchant_id=merchant_id,
        livemode=livemode,
        obj=message_to_json(balance),
    )


def automatic_payouts(
    sessions: sessionmaker[Session],
    settings: Settings,
    stub: ledger_internal_pb2_grpc.LedgerInternalServiceStub,
) -> int:
    """Pays out the available balance of merchants on the automatic schedule; how many."""
    now = datetime.now(UTC)
    created = 0
    for livemode, interval_s in (
        (True, settings.payout_automatic_interval_live_s),
        (False, settings.payout_automatic_interval_test_s),
    ):
        cutoff = now - timedelta(seconds=interval_s)
        with transaction(sessions) as session:
            accounts = session.scalars(
                select(PayoutAccount)
                .where(
                    PayoutAccount.livemode.is_(livemode),
                    PayoutAccount.schedule == "automatic",
                    PayoutAccount.bank_account_number != "",
                    or_(
                        PayoutAccount.automatic_payout_time.is_(None),
                        PayoutAccount.automatic_payout_time < cutoff,
                    ),
                )
                .limit(BATCH_SIZE_MAX)
                .with_for_update(skip_locked=True)
            ).all()
            for account in accounts:
                account.automatic_payout_time = now
                balances = ledger.merchant_balances(
                    stub,
                    merchant_id=account.merchant_id,
                    livemode=livemode,
                    timeout_s=settings.grpc_timeout_s,
                )
                for currency, (available, _) in sorted(balances.items()):
                    payable = available - payouts.reserved(
                        session,
                        merchant_id=account.merchant_id,
                        livemode=livemode,
                        currency=currency,
                    )
                    if payable > 0:
                        payouts.create_payout(
                            session,
                            merchant_id=account.merchant_id,
                            livemode=livemode,
                            available=available,
                            amount=payable,
                            currency=currency,
                            method="automatic",
                            description="automatic payout",
                        )
                        created += 1
    return created


def sweep(
    sessions: sessionmaker[Session],
    settings: Settings,
    stub: ledger_internal_pb2_grpc.LedgerInternalServiceStub,
) -> dict[str, int]:
    """Runs the payout tasks once; returns counts."""
    return {
        "funds_released": release_funds(sessions, settings, stub),
        "automatic_payouts": automatic_payouts(sessions, settings, stub),
    }
