"""The simulated bank that payouts are sent through (beside the card simulator in processor.py).

Stripe's test bank account numbers decide the outcome: `000111111116` fails with `no_account`,
`000111111113` with `account_closed`; any other number (`000123456789`) is paid. The bank keeps
one record per payout in the `processor` schema (the outside world's records, which
reconciliation reads), so asking twice for the same payout answers the first outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import transaction
from services.common.ids import new_id
from services.payment.models import BankTransfer

FAILING_ACCOUNTS = {"000111111116": "no_account", "000111111113": "account_closed"}


@dataclass(frozen=True)
class Transfer:
    """The bank's answer for one payout."""

    bank_reference: str
    status: str  # "paid" or "failed"
    failure_code: str


class SimulatedBank:
    """Deterministic bank transfers by account number; idempotent by payout id."""

    def __init__(self, sessions: sessionmaker[Session], *, latency_ms: int) -> None:
        self._sessions = sessions
        self._latency_s = latency_ms / 1000

    def transfer(
        self, *, payout_id: str, account_number: str, amount: int, currency: str
    ) -> Transfer:
        """Sends a payout once; a second call for the same payout answers the first outcome."""
        if self._latency_s > 0:
            time.sleep(self._latency_s)
        failure_code = FAILING_ACCOUNTS.get(account_number, "")
        with transaction(self._sessions) as session:
            session.execute(
                insert(BankTransfer)
                .values(
                    payout_id=payout_id,
                    bank_reference=new_id("bt"),
                    account_number=account_number,
                    amount=amount,
                    currency=currency,
                    status="failed" if failure_code else "paid",
                    failure_code=failure_code,
                )
                .on_conflict_do_nothing(index_elements=["payout_id"])
            )
            record = session.scalars(
                select(BankTransfer).where(BankTransfer.payout_id == payout_id)
            ).one()
            return Transfer(record.bank_reference, record.status, record.failure_code)
