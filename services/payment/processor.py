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
| 4000002760003184, 4000000000003220 (3DS2) | requires 3-D Secure authentication, then approved |
| 4000002500003155 | requires authentication, unless paid with once saved (a saved payment method) |
| 4000008400001629 | requires authentication, then declined (card_declined) |
| 4000000000000259 | approved; once captured, the cardholder files a chargeback (fraudulent) |
| 4000000000001976 | approved; once captured, the cardholder's bank opens an inquiry |

A charge keeps its card's scenario. The network files a dispute against a captured charge of a
dispute card when the payment service next asks for filed disputes (`take_filed_disputes`, the
sweeper's round), and decides it when the merchant's evidence reaches it (`decide_dispute`): the
test evidence "winning_evidence" wins, anything else loses, as Stripe's test mode does.

Its vault stores only the behaviour a card triggers, its brand and last four digits: never the
number or the cvc.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from psycopg import AsyncConnection
from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import autocommit, execute_many, render, transaction
from services.common.ids import new_id
from services.payment.errors import ProcessorError, ProcessorUnavailable
from services.payment.models import (
    ProcessorAttempt,
    ProcessorCharge,
    ProcessorDispute,
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
    "4000002760003184": "authenticate",
    "4000000000003220": "authenticate",
    "4000002500003155": "authenticate_unless_saved",
    "4000008400001629": "authenticate_then_decline",
    "4000000000000259": "dispute_fraudulent",
    "4000000000001976": "dispute_inquiry",
}
# Scenarios whose captured charge is disputed: the dispute's kind and reason.
DISPUTE_SCENARIOS = {
    "dispute_fraudulent": ("chargeback", "fraudulent"),
    "dispute_inquiry": ("inquiry", "general"),
}
# The test evidence (in `uncategorized_text`) that wins a dispute; anything else loses.
WINNING_EVIDENCE = "winning_evidence"
# Scenarios whose card the customer must authenticate (3-D Secure) before it is authorized.
AUTHENTICATED_SCENARIOS = frozenset(
    {"authenticate", "authenticate_unless_saved", "authenticate_then_decline"}
)
# Those whose card, once saved for later use, the issuer no longer asks to authenticate.
SAVED_EXEMPT_SCENARIOS = frozenset({"authenticate_unless_saved"})
DECLINES = {
    "declined_card_declined": ("card_declined", "Your card was declined."),
    "declined_insufficient_funds": ("insufficient_funds", "Your card has insufficient funds."),
    "declined_expired_card": ("expired_card", "Your card has expired."),
    "authenticate_then_decline": ("card_declined", "Your card was declined."),
}


@dataclass(frozen=True)
class CardToken:
    """What the vault gives back for a card."""

    token: str
    brand: str
    last4: str
    # The card's issuer asks for 3-D Secure: the customer authenticates before authorization.
    requires_authentication: bool = False


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


@dataclass(frozen=True)
class FiledDispute:
    """A dispute the card network filed against a captured charge."""

    processor_dispute_id: str
    payment_id: str
    kind: str  # "chargeback" or "inquiry"
    reason: str
    amount: int
    currency: str


@dataclass(frozen=True)
class AuthorizationRequest:
    """An authorization to ask for: `amount` on the card `token` stands for."""

    payment_id: str
    token: str
    amount: int
    currency: str


@dataclass(frozen=True)
class CaptureRequest:
    """A capture to ask for: `amount` of the payment's authorization."""

    payment_id: str
    amount: int


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

    def reuse(self, token: str, *, session: Session) -> CardToken:
        """The vaulted card behind a saved payment method's `token`, to pay with it again.

        Its `requires_authentication` is the issuer's answer for a card saved for later use
        (some cards need 3-D Secure only until they are saved).
        """
        ...

    def authorize_many(
        self, requests: Sequence[AuthorizationRequest]
    ) -> list[Authorization | ProcessorError]:
        """Holds each request's amount on its card; idempotent by payment id.

        One answer per request, in order: an authorization (approved or declined), or the error
        that request met (ProcessorUnavailable: ask again). A remote processor's connector
        sends the calls concurrently; a batch takes about one call's time.
        """
        ...

    def capture_many(self, requests: Sequence[CaptureRequest]) -> list[str | ProcessorError]:
        """Captures each request's amount, releasing the rest; each its charge id, or an error."""
        ...

    def void(self, *, payment_id: str) -> None:
        """Releases an uncaptured authorization."""
        ...

    def refund(self, *, payment_id: str, refund_id: str, amount: int, currency: str) -> str:
        """Sends `amount` back to the card; idempotent by refund id; returns its own id."""
        ...

    def take_filed_disputes(self, *, session: Session, limit: int) -> list[FiledDispute]:
        """Disputes filed since the last call, at most `limit`, marked taken in `session`.

        The caller records them in the same transaction: a rollback gives them back.
        """
        ...

    def decide_dispute(self, *, payment_id: str, evidence_text: str) -> str:
        """The network's decision on the payment's dispute ("won" or "lost"); the first stays."""
        ...


# One INSERT in the caller's transaction: the ORM's flush of it at commit cost a create more
# CPU than the statement.
_INSERT_TOKEN = render(
    insert(cast(Table, ProcessorToken.__table__)), columns=("token", "scenario", "brand", "last4")
)


def _vault_entry(card: CardInput) -> tuple[CardToken, dict[str, str]]:
    """A new token for the card, and the vault's row: its behaviour, brand and last four."""
    scenario = SCENARIOS.get(card.number, "approve")
    token = CardToken(
        token=new_id("tok"),
        brand=card_brand(card.number),
        last4=card.number[-4:],
        requires_authentication=scenario in AUTHENTICATED_SCENARIOS,
    )
    row = {
        "token": token.token,
        "scenario": scenario,
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
    columns=(
        "id",
        "payment_id",
        "amount_authorized",
        "amount_captured",
        "currency",
        "status",
        "scenario",
    ),
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

    def reuse(self, token: str, *, session: Session) -> CardToken:
        """The vault's card for `token`; a card exempt once saved needs no authentication."""
        row = session.execute(
            select(ProcessorToken.scenario, ProcessorToken.brand, ProcessorToken.last4).where(
                ProcessorToken.token == token
            )
        ).one()
        return CardToken(
            token=token,
            brand=row.brand,
            last4=row.last4,
            requires_authentication=(
                row.scenario in AUTHENTICATED_SCENARIOS
                and row.scenario not in SAVED_EXEMPT_SCENARIOS
            ),
        )

    def authorize_many(
        self, requests: Sequence[AuthorizationRequest]
    ) -> list[Authorization | ProcessorError]:
        """Authorizes each per its card's scenario; a repeat returns the first charge.

        Each attempt is counted (one round trip for the batch), the batch waits one latency,
        then the approved ones get their charges (one round trip, and one more to read the
        first charge of any repeat).
        """
        with autocommit(self._sessions) as connection:
            counted = execute_many(
                connection,
                _COUNT_ATTEMPT,
                [
                    {"payment_id": request.payment_id, "token": request.token}
                    for request in requests
                ],
            )
        self._wait()
        decided: list[Authorization | ProcessorError | None] = []  # None: to be charged
        for request, (attempt, scenario) in zip(requests, counted, strict=True):
            if scenario is None:
                decided.append(ProcessorError(f"unknown card token for {request.payment_id}"))
            elif scenario in DECLINES:
                code, message = DECLINES[scenario]
                decided.append(Authorization(None, code, message))
            elif scenario == "unavailable_once" and attempt == 1:
                decided.append(ProcessorUnavailable("the processor is unavailable"))
            else:
                decided.append(None)
        charge_ids = iter(
            self._charges(
                [
                    (request, scenario)
                    for request, answer, (_, scenario) in zip(
                        requests, decided, counted, strict=True
                    )
                    if answer is None
                ]
            )
        )
        answers: list[Authorization | ProcessorError] = []
        for answer, (attempt, scenario) in zip(decided, counted, strict=True):
            if answer is not None:
                answers.append(answer)
                continue
            charge_id = next(charge_ids)
            if scenario == "lost_answer_once" and attempt == 1:
                answers.append(ProcessorUnavailable("the processor timed out"))
            else:
                answers.append(Authorization(charge_id))
        return answers

    def _charges(self, charged: Sequence[tuple[AuthorizationRequest, str]]) -> list[str]:
        """Each request's charge (its card's scenario kept): new, or the first's on a repeat."""
        requests = [request for request, _ in charged]
        with autocommit(self._sessions) as connection:
            created = execute_many(
                connection,
                _NEW_CHARGE,
                [
                    {
                        "id": new_id("ch"),
                        "payment_id": request.payment_id,
                        "amount_authorized": request.amount,
                        "amount_captured": 0,
                        "currency": request.currency,
                        "status": "authorized",
                        "scenario": scenario,
                    }
                    for request, scenario in charged
                ],
            )
            repeats = [request for request, row in zip(requests, created, strict=True) if not row]
            earlier = iter(
                execute_many(
                    connection, _CHARGE, [{"payment_id": request.payment_id} for request in repeats]
                )
            )
        return [str(row.id if row else next(earlier).id) for row in created]

    def capture_many(self, requests: Sequence[CaptureRequest]) -> list[str | ProcessorError]:
        """Captures each once; a repeat returns the same charge unchanged."""
        self._wait()
        with autocommit(self._sessions) as connection:
            captured = execute_many(
                connection,
                _CAPTURE,
                [
                    {"payment_id": request.payment_id, "amount": request.amount}
                    for request in requests
                ],
            )
            missed = [request for request, row in zip(requests, captured, strict=True) if not row]
            charges = iter(
                execute_many(
                    connection, _CHARGE, [{"payment_id": request.payment_id} for request in missed]
                )
            )
        answers: list[str | ProcessorError] = []
        for request, row in zip(requests, captured, strict=True):
            if row:
                answers.append(str(row.id))
                continue
            charge = next(charges)
            if charge is None:
                answers.append(ProcessorError(f"no authorization for {request.payment_id}"))
            elif charge.status == "authorized":
                answers.append(
                    ProcessorError(f"cannot capture {request.amount} of {request.payment_id}")
                )
            elif charge.status != "captured":
                answers.append(ProcessorError(f"{request.payment_id} is {charge.status}"))
            else:
                answers.append(str(charge.id))
        return answers

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

    def take_filed_disputes(self, *, session: Session, limit: int) -> list[FiledDispute]:
        """Files disputes against captured charges of dispute cards, then hands out the untaken.

        Both in the caller's transaction (the simulator's records share its database); rows
        another sweeper holds are skipped.
        """
        session.execute(
            text(
                "INSERT INTO processor.disputes"
                " (id, charge_id, payment_id, kind, reason, amount, currency)"
                " SELECT 'pdp_' || md5(c.id), c.id, c.payment_id,"
                " CASE c.scenario WHEN 'dispute_inquiry' THEN 'inquiry' ELSE 'chargeback' END,"
                " CASE c.scenario WHEN 'dispute_inquiry' THEN 'general' ELSE 'fraudulent' END,"
                " c.amount_captured - r.refunded, c.currency"
                " FROM processor.charges c"
                # The cardholder disputes what the charge still holds after its refunds.
                " CROSS JOIN LATERAL (SELECT coalesce(sum(amount), 0) AS refunded"
                " FROM processor.refunds WHERE payment_id = c.payment_id) r"
                " WHERE c.scenario IN ('dispute_fraudulent', 'dispute_inquiry')"
                " AND c.status = 'captured' AND c.amount_captured > r.refunded"
                " AND NOT EXISTS (SELECT 1 FROM processor.disputes d"
                " WHERE d.payment_id = c.payment_id)"
                " LIMIT :limit ON CONFLICT DO NOTHING"
            ),
            {"limit": limit},
        )
        rows = session.scalars(
            select(ProcessorDispute)
            .where(ProcessorDispute.notify_time.is_(None))
            .order_by(ProcessorDispute.create_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            row.notify_time = func.now()
        return [
            FiledDispute(
                processor_dispute_id=row.id,
                payment_id=row.payment_id,
                kind=row.kind,
                reason=row.reason,
                amount=row.amount,
                currency=row.currency,
            )
            for row in rows
        ]

    def decide_dispute(self, *, payment_id: str, evidence_text: str) -> str:
        """Won with the test evidence "winning_evidence", else lost; a repeat answers the first."""
        self._wait()
        outcome = "won" if WINNING_EVIDENCE in evidence_text else "lost"
        with transaction(self._sessions) as session:
            session.execute(
                update(ProcessorDispute)
                .where(ProcessorDispute.payment_id == payment_id)
                .where(ProcessorDispute.outcome.is_(None))
                .values(outcome=outcome, outcome_time=func.now())
            )
            decided = session.scalars(
                select(ProcessorDispute.outcome).where(ProcessorDispute.payment_id == payment_id)
            ).one_or_none()
        if decided is None:
            raise ProcessorError(f"no dispute of {payment_id}")
        return decided
