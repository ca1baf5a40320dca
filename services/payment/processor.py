"""The card-processor connector, and its one implementation: a deterministic simulator.

The connector is what a real acquirer integration would implement: `tokenize` (the processor's
vault takes the card so the payment service never keeps it), `authorize`, `capture`, `void` and
`refund`. Every call is idempotent by the payment (or refund) id, so a worker may repeat any of
them after a crash or a lost answer and the processor still holds exactly one charge.

The simulator keeps its own records in the `processor` schema (a separate world from the
payment service's tables, which reconciliation compares against), waits `processor_latency_ms`
per call like a network round trip would (except `tokenize`: its vault shares the database, so
it writes the token in the caller's transaction, which commits or rolls back with the payment),
and behaves by test card:

| card | behaviour |
| --- | --- |
| 4242424242424242, 5555555555554444, any other valid number | approved |
| 4000000000000002 | declined, card_declined |
| 4000000000009995 | declined, insufficient_funds |
| 4000000000000069 | declined, expired_card |
| 4000000000000119 | unavailable on the first attempt, approved on retry |
| 4000000000001000 | charged, but the answer is lost on the first attempt |

Its vault stores only the behaviour a card triggers, its brand and last four digits: never the
number or the cvc.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol, cast

from psycopg import AsyncConnection
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import autocommit, render, transaction
from services.common.ids import new_id
from services.payment.errors import ProcessorError, ProcessorUnavailable
from services.payment.models import (
    ProcessorAttempt,
    ProcessorCharge,
    ProcessorRefund,
    ProcessorToken,
)
from services.payment.validation import CardInput, card_brand

SCENARIOS = {
    "4000000000000002": "declined_card_declined",
    "4000000000009995": "declined_insufficient_funds",
    "4000000000000069": "declined_expired_card",
    "4000000000000119": "unavailable_once",
    "4000000000001000": "lost_answer_once",
}
DECLINES = {
    "declined_card_declined": ("card_declined", "Your card was declined."),
    "declined_insufficient_funds": ("insufficient_funds", "Your card has insufficient funds."),
    "declined_expired_card": ("expired_card", "Your card has expired."),
}


@dataclass(frozen=True)
class CardToken:
    """What the vault gives back for a card."""

    token: str
    brand: str
    last4: str


@dataclass(frozen=True)
class Authorization:
    """The processor's answer to an authorization: a charge, or a decline."""

    charge_id: str | None
    decline_code: str = ""
    decline_message: str = ""

    @property
    def approved(self) -> bool:
        """Whether the card was authorized."""
        return self.charge_id is not None


class Connector(Protocol):
    """A card processor, as the payment service sees one."""

    def tokenize(self, card: CardInput, *, session: Session) -> CardToken:
        """Vaults a card; the returned token stands for it from then on.

        `session` is the caller's open transaction: a vault in this database (the simulator's)
        writes there, so a request that fails leaves no token behind; a remote processor's
        connector would ignore it and call out.
        """
        ...

    async def tokenize_async(
        self, card: CardInput, *, connection: AsyncConnection[Any]
    ) -> CardToken:
        """`tokenize` in the caller's transaction on the event loop's `connection`."""
        ...

    def authorize(
        self, *, payment_id: str, token: str, amount: int, currency: str
    ) -> Authorization:
        """Holds `amount` on the card; idempotent by payment id."""
        ...

    def capture(self, *, payment_id: str, amount: int) -> str:
        """Captures `amount` of the authorization, releasing the rest; returns the charge id."""
        ...

    def void(self, *, payment_id: str) -> None:
        """Releases an uncaptured authorization."""
        ...

    def refund(self, *, payment_id: str, refund_id: str, amount: int, currency: str) -> str:
        """Sends `amount` back to the card; idempotent by refund id; returns its own id."""
        ...


# One INSERT in the caller's transaction: the ORM's flush of it at commit cost a create more
# CPU than the statement.
_INSERT_TOKEN = render(
    insert(cast(Table, ProcessorToken.__table__)), columns=("token", "scenario", "brand", "last4")
)


def _vault_entry(card: CardInput) -> tuple[CardToken, dict[str, str]]:
    """A new token for the card, and the vault's row: its behaviour, brand and last four."""
    token = CardToken(token=new_id("tok"), brand=card_brand(card.number), last4=card.number[-4:])
    row = {
        "token": token.token,
        "scenario": SCENARIOS.get(card.number, "approve"),
        "brand": token.brand,
        "last4": token.last4,
    }
    return token, row


# The worker's calls, one statement each in autocommit, rendered once: the attempt's count with
# the card's scenario; a new charge (nothing on a repeat); a capture of an authorized charge
# within its amount (nothing otherwise: `_CHARGE` then says why).
_ATTEMPTS = cast(Table, ProcessorAttempt.__table__)
_CHARGES = cast(Table, ProcessorCharge.__table__)
_COUNT_ATTEMPT = render(
    insert(_ATTEMPTS)
    .values(payment_id=bindparam("payment_id"), count=1)
    .on_conflict_do_update(
        index_elements=[_ATTEMPTS.c.payment_id], set_={"count": _ATTEMPTS.c.count + 1}
    )
    .returning(
        _ATTEMPTS.c.count,
        select(ProcessorToken.scenario)
        .where(ProcessorToken.token == bindparam("token"))
        .scalar_subquery(),
    )
)
_NEW_CHARGE = render(
    insert(_CHARGES)
    .on_conflict_do_nothing(index_elements=[_CHARGES.c.payment_id])
    .returning(_CHARGES.c.id),
    columns=("id", "payment_id", "amount_authorized", "amount_captured", "currency", "status"),
)
_CHARGE = render(
    select(_CHARGES.c.id, _CHARGES.c.status).where(_CHARGES.c.payment_id == bindparam("payment_id"))
)
_CAPTURE = render(
    update(_CHARGES)
    .where(
        _CHARGES.c.payment_id == bindparam("payment_id"),
        _CHARGES.c.status == "authorized",
        bindparam("amount") > 0,
        bindparam("amount") <= _CHARGES.c.amount_authorized,
    )
    .values(status="captured", amount_captured=bindparam("amount"), capture_time=func.now())
    .returning(_CHARGES.c.id)
)


class SimulatedProcessor:
    """The deterministic simulator; its records live in the `processor` schema."""

    def __init__(self, sessions: sessionmaker[Session], *, latency_ms: int) -> None:
        self._sessions = sessions
        self._latency_s = latency_ms / 1000

    def _wait(self) -> None:
        if self._latency_s > 0:
            time.sleep(self._latency_s)

    def tokenize(self, card: CardInput, *, session: Session) -> CardToken:
        """Vaults the card's behaviour, brand and last four digits, in the caller's transaction."""
        token, row = _vault_entry(card)
        session.connection().exec_driver_sql(_INSERT_TOKEN.sql, row)
        return token

    async def tokenize_async(
        self, card: CardInput, *, connection: AsyncConnection[Any]
    ) -> CardToken:
        """`tokenize` on the event loop's connection (a create with a card)."""
        token, row = _vault_entry(card)
        await connection.execute(_INSERT_TOKEN.sql, row)
        return token

    def authorize(
        self, *, payment_id: str, token: str, amount: int, currency: str
    ) -> Authorization:
        """Authorizes per the card's scenario; a repeat returns the first charge."""
        with autocommit(self._sessions) as connection:
            params = _COUNT_ATTEMPT.params({"payment_id": payment_id, "token": token})
            attempt, scenario = connection.exec_driver_sql(_COUNT_ATTEMPT.sql, params).one()
        self._wait()
        if scenario is None:
            raise ProcessorError(f"unknown card token for {payment_id}")
        if scenario in DECLINES:
            code, message = DECLINES[scenario]
            return Authorization(None, code, message)
        if scenario == "unavailable_once" and attempt == 1:
            raise ProcessorUnavailable("the processor is unavailable")
        charge_id = self._charge(payment_id=payment_id, amount=amount, currency=currency)
        if scenario == "lost_answer_once" and attempt == 1:
            raise ProcessorUnavailable("the processor timed out")
        return Authorization(charge_id)

    def _charge(self, *, payment_id: str, amount: int, currency: str) -> str:
        with autocommit(self._sessions) as connection:
            charge_id = connection.exec_driver_sql(
                _NEW_CHARGE.sql,
                {
                    "id": new_id("ch"),
                    "payment_id": payment_id,
                    "amount_authorized": amount,
                    "amount_captured": 0,
                    "currency": currency,
                    "status": "authorized",
                },
            ).scalar()
            if charge_id is None:  # a repeat: the first authorization's charge
                charge_id = (
                    connection.exec_driver_sql(_CHARGE.sql, {"payment_id": payment_id}).one().id
                )
            return str(charge_id)

    def capture(self, *, payment_id: str, amount: int) -> str:
        """Captures once; a repeat returns the same charge unchanged."""
        self._wait()
        with autocommit(self._sessions) as connection:
            captured = connection.exec_driver_sql(
                _CAPTURE.sql, _CAPTURE.params({"payment_id": payment_id, "amount": amount})
            ).scalar()
            if captured is not None:
                return str(captured)
            charge = connection.exec_driver_sql(
                _CHARGE.sql, {"payment_id": payment_id}
            ).one_or_none()
        if charge is None:
            raise ProcessorError(f"no authorization for {payment_id}")
        if charge.status == "authorized":
            raise ProcessorError(f"cannot capture {amount} of {payment_id}")
        if charge.status != "captured":
            raise ProcessorError(f"{payment_id} is {charge.status}")
        return str(charge.id)

    def void(self, *, payment_id: str) -> None:
        """Releases an authorization; voiding twice, or nothing, changes nothing."""
        self._wait()
        with transaction(self._sessions) as session:
            session.execute(
                update(ProcessorCharge)
                .where(ProcessorCharge.payment_id == payment_id)
                .where(ProcessorCharge.status == "authorized")
                .values(status="voided")
            )

    def refund(self, *, payment_id: str, refund_id: str, amount: int, currency: str) -> str:
        """Refunds once per refund id, never more than was captured in all."""
        self._wait()
        with transaction(self._sessions) as session:
            existing = session.scalars(
                select(ProcessorRefund.id).where(ProcessorRefund.refund_id == refund_id)
            ).one_or_none()
            if existing is not None:
                return existing
            charge = session.scalars(
                select(ProcessorCharge)
                .where(ProcessorCharge.payment_id == payment_id)
                .with_for_update()
            ).one_or_none()
            if charge is None or charge.status != "captured":
                raise ProcessorError(f"{payment_id} has no capture to refund")
            refunded = sum(
                session.scalars(
                    select(ProcessorRefund.amount).where(ProcessorRefund.payment_id == payment_id)
                )
            )
            if refunded + amount > charge.amount_captured:
                raise ProcessorError(f"refunds of {payment_id} would exceed its capture")
            processor_id = new_id("prf")
            session.add(
                ProcessorRefund(
                    id=processor_id,
                    refund_id=refund_id,
                    payment_id=payment_id,
                    amount=amount,
                    currency=currency,
                )
            )
            return processor_id
