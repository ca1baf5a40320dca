"""Reconciliation: the ledger against the payment service's records and the processor's.

For a time range [start, end) it checks that
- every succeeded payment and refund, every dispute's withdrawal and reinstatement, every
  release of a payment's funds and every payout step (created, paid, failed, canceled) has
  exactly one ledger transaction, with the legs the posting rules give (capture A, fee F: debit
  processor_receivable A, credit merchant_pending A-F, credit platform_fees F; release N: debit
  merchant_pending, credit merchant_balance; refund R: debit merchant_balance R, credit
  processor_receivable R; dispute D, dispute fee F: debit merchant_balance D+F, credit
  processor_receivable D, credit platform_fees F; dispute won: debit processor_receivable D,
  credit merchant_balance D; payout P created: debit merchant_balance, credit
  payouts_in_transit; paid: debit payouts_in_transit, credit platform_cash; failed or canceled:
  debit payouts_in_transit, credit merchant_balance);
- every processor capture, refund, dispute and dispute reinstatement has a ledger transaction
  whose processor_receivable leg moves the same amount, and every such movement has its
  processor record; every bank transfer (payout paid or failed) has its payout movement with
  the same amount and outcome, and the other way round (`BANK_MISMATCH`);
- each merchant's money (merchant_pending + merchant_balance + payouts_in_transit) moved by
  captured - fees - refunded - disputed - dispute fees + reinstated - paid out;
- no ledger transaction of the range is unaccounted for, and the trial balance is zero.

The ledger posts before the payment service marks a movement succeeded, and the processor acts
before both; so movements are fetched up to `grace` after the range end, and processor records
`grace` either side, to match items that straddle the range's edges.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf import timestamp_pb2
from paymesh.ledger.v1 import ledger_internal_pb2
from paymesh.payment.v1 import payment_internal_pb2
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.common.errors import InvalidArgument
from services.ledger import accounts
from services.ledger.errors import ReconciliationRangeTooLarge
from services.ledger.models import Account, Entry, LedgerTransaction
from services.ledger.posting import PLATFORM_OWNER

logger = logging.getLogger(__name__)

# One run holds its range's movements in memory; a bigger range must be split.
ITEMS_MAX = 200_000
PAGE_SIZE = 1000
# Ids per SQL IN list.
CHUNK_SIZE = 1000

Leg = tuple[str, str, str, str]  # owner, kind, direction, currency


class PaymentRecords(Protocol):
    """The payment service's internal RPCs reconciliation reads (a sync stub fits)."""

    def ListSettledMovements(
        self, request: payment_internal_pb2.ListSettledMovementsRequest, *, timeout: float
    ) -> payment_internal_pb2.ListSettledMovementsResponse:
        """One page of settled movements."""

    def ListProcessorRecords(
        self, request: payment_internal_pb2.ListProcessorRecordsRequest, *, timeout: float
    ) -> payment_internal_pb2.ListProcessorRecordsResponse:
        """One page of processor records."""


@dataclass(frozen=True)
class Movement:
    """A succeeded payment capture or refund per the payment service."""

    kind: str  # "payment", "refund", "dispute", "dispute_won", "release" or "payout[_<end>]"
    id: str
    payment_id: str
    merchant_id: str
    amount: int
    fee: int
    currency: str
    livemode: bool
    settle_time: datetime
    ledger_reference: str


@dataclass(frozen=True)
class ProcessorRecord:
    """A capture or refund the processor performed."""

    kind: str  # "capture", "refund", "dispute", "dispute_reinstatement" or "payout_<end>"
    processor_id: str
    payment_id: str
    refund_id: str
    amount: int
    currency: str
    create_time: datetime
    dispute_id: str = ""


@dataclass(frozen=True)
class LedgerView:
    """A ledger transaction reduced to what reconciliation compares."""

    id: str
    external_reference: str
    source_id: str
    livemode: bool
    create_time: datetime
    legs: dict[Leg, int]


@dataclass(frozen=True)
class Mismatch:
    """One discrepancy and the ids to investigate it."""

    kind: str
    description: str
    ids: list[str]
    currency: str = ""
    expected: int = 0
    actual: int = 0


@dataclass
class Totals:
    """One currency's figures from each side."""

    currency: str
    payments_captured: int = 0
    payments_fees: int = 0
    payments_refunded: int = 0
    processor_captured: int = 0
    processor_refunded: int = 0
    ledger_receivable_net: int = 0
    ledger_fees: int = 0
    ledger_merchant_net: int = 0


@dataclass
class Report:
    """The outcome of a run."""

    start: datetime
    end: datetime
    totals: list[Totals]
    mismatches: list[Mismatch]
    checked_count: int
    create_time: datetime = field(default_factory=lambda: datetime.now(UTC))


# Movements matched by their source id as well as their reference. The others share their
# source id between postings (a dispute's two, a payout's steps) or name none (a release).
_BY_SOURCE = frozenset({"payment", "refund"})
# Movements of money the processor moved: the processor's record of each, and the side its
# receivable leg moves.
_PROCESSOR_KIND = {
    "payment": "capture",
    "refund": "refund",
    "dispute": "dispute",
    "dispute_won": "dispute_reinstatement",
}
_RECEIVABLE_INCREASE = {
    "payment": "debit",
    "refund": "credit",
    "dispute": "credit",
    "dispute_won": "debit",
    "capture": "debit",
    "dispute_reinstatement": "debit",
}
# The merchant's money in the ledger: what is pending, available, and on its way to its bank.
MERCHANT_KINDS = frozenset({"merchant_pending", "merchant_balance", "payouts_in_transit"})
# Movements by kind: (kind debited, owner is the merchant?), (kind credited, merchant?).
_TWO_LEGS = {
    "release": (("merchant_pending", True), ("merchant_balance", True)),
    "payout": (("merchant_balance", True), ("payouts_in_transit", True)),
    "payout_paid": (("payouts_in_transit", True), ("platform_cash", False)),
    "payout_failed": (("payouts_in_transit", True), ("merchant_balance", True)),
    "payout_canceled": (("payouts_in_transit", True), ("merchant_balance", True)),
}
# Bank transfer kinds and the payout movement each one stands for.
BANK_KINDS = {"payout_paid": "payout_paid", "payout_failed": "payout_failed"}


def expected_legs(movement: Movement) -> dict[Leg, int]:
    """The legs the posting rules give for a movement (zero-amount legs left out)."""
    currency = movement.currency
    merchant = movement.merchant_id
    if movement.kind == "dispute":
        legs = {
            (merchant, "merchant_balance", "debit", currency): movement.amount + movement.fee,
            (PLATFORM_OWNER, "processor_receivable", "credit", currency): movement.amount,
            (PLATFORM_OWNER, "platform_fees", "credit", currency): movement.fee,
        }
    elif movement.kind == "dispute_won":
        legs = {
            (PLATFORM_OWNER, "processor_receivable", "debit", currency): movement.amount,
            (merchant, "merchant_balance", "credit", currency): movement.amount,
        }
    elif movement.kind == "payment":
        legs = {
            (PLATFORM_OWNER, "processor_receivable", "debit", currency): movement.amount,
            (movement.merchant_id, "merchant_pending", "credit", currency): (
                movement.amount - movement.fee
            ),
            (PLATFORM_OWNER, "platform_fees", "credit", currency): movement.fee,
        }
    elif movement.kind == "refund":
        legs = {
            (movement.merchant_id, "merchant_balance", "debit", currency): movement.amount,
            (PLATFORM_OWNER, "processor_receivable", "credit", currency): movement.amount,
        }
    else:
        (debited, debit_merchant), (credited, credit_merchant) = _TWO_LEGS[movement.kind]
        legs = {
            (
                movement.merchant_id if debit_merchant else PLATFORM_OWNER,
                debited,
                "debit",
                currency,
            ): (movement.amount),
            (
                movement.merchant_id if credit_merchant else PLATFORM_OWNER,
                credited,
                "credit",
                currency,
            ): movement.amount,
        }
    return {leg: amount for leg, amount in legs.items() if amount}


def merchant_effect(movement: Movement) -> int:
    """How a movement changes the merchant's money (pending + available + in transit)."""
    if movement.kind == "payment":
        return movement.amount - movement.fee
    if movement.kind in ("refund", "payout_paid"):
        return -movement.amount
    if movement.kind == "dispute":
        return -(movement.amount + movement.fee)
    if movement.kind == "dispute_won":
        return movement.amount
    return 0


def _net(legs: dict[Leg, int], kind: str, currency: str, *, increase: str) -> int:
    """Net movement of legs of `kind` in `currency`, positive on the side `increase`."""
    total = 0
    for (_, leg_kind, direction, leg_currency), amount in legs.items():
        if leg_kind == kind and leg_currency == currency:
            total += amount if direction == increase else -amount
    return total


def _currencies(legs: dict[Leg, int]) -> set[str]:
    return {currency for (_, _, _, currency) in legs}


def compare(
    *,
    start: datetime,
    end: datetime,
    movements: list[Movement],
    records: list[ProcessorRecord],
    ledger: list[LedgerView],
    trial_balance: list[accounts.CurrencyTotals],
) -> Report:
    """Compares the three sides; `movements` and `records` may reach past the range's edges."""
    in_range = [m for m in movements if start <= m.settle_time < end]
    records_in_range = [r for r in records if start <= r.create_time < end]
    mismatches: list[Mismatch] = []
    totals: dict[str, Totals] = {}

    def totals_of(currency: str) -> Totals:
        return totals.setdefault(currency, Totals(currency))

    by_reference = {view.external_reference: view for view in ledger}
    by_source: dict[str, list[LedgerView]] = defaultdict(list)
    for view in ledger:
        by_source[view.source_id].append(view)

    def views_of(movement: Movement) -> list[LedgerView]:
        by_id = by_source.get(movement.id, []) if movement.kind in _BY_SOURCE else []
        found = {view.id: view for view in by_id}
        if movement.ledger_reference in by_reference:
            view = by_reference[movement.ledger_reference]
            found[view.id] = view
        return sorted(found.values(), key=lambda view: view.id)

    released = {movement.id for movement in movements if movement.kind == "release"}
    accounted: set[str] = set()
    for movement in movements:
        accounted.update(view.id for view in views_of(movement))
    considered: dict[str, LedgerView] = {}

    # Every settled movement: exactly one transaction, with the legs the rules give.
    merchant_expected: dict[tuple[str, str, bool], int] = defaultdict(int)
    for movement in in_range:
        line = totals_of(movement.currency)
        if movement.kind == "payment":
            line.payments_captured += movement.amount
            line.payments_fees += movement.fee
        elif movement.kind == "refund":
            line.payments_refunded += movement.amount
        merchant_expected[movement.merchant_id, movement.currency, movement.livemode] += (
            merchant_effect(movement)
        )
        views = views_of(movement)
        for view in views:
            considered[view.id] = view
        if not views:
            mismatches.append(
                Mismatch(
                    "MISSING_LEDGER_TRANSACTION",
                    f"{movement.kind} {movement.id} succeeded but has no ledger transaction "
                    f"(reference {movement.ledger_reference!r})",
                    [movement.id, movement.payment_id, movement.merchant_id],
                    movement.currency,
                    movement.amount,
                    0,
                )
            )
            continue
        if len(views) > 1:
            mismatches.append(
                Mismatch(
                    "DUPLICATE_LEDGER_TRANSACTION",
                    f"{movement.kind} {movement.id} has {len(views)} ledger transactions",
                    [movement.id, *(view.id for view in views)],
                    movement.currency,
                    1,
                    len(views),
                )
            )
        view = views[0]
        expected = expected_legs(movement)
        if movement.kind == "payment" and movement.id not in released:
            # A capture posted before pending balances (payment_0006) credited available.
            legacy = {
                (owner, "merchant_balance" if kind == "merchant_pending" else kind, side, code): n
                for (owner, kind, side, code), n in expected.items()
            }
            if view.legs == legacy:
                expected = legacy
        if view.legs != expected or view.livemode != movement.livemode:
            increase = _RECEIVABLE_INCREASE.get(movement.kind, "credit")
            mismatches.append(
                Mismatch(
                    "AMOUNT_MISMATCH",
                    f"{movement.kind} {movement.id} expects {_describe(expected)} "
                    f"(livemode={movement.livemode}); ledger transaction {view.id} has "
                    f"{_describe(view.legs)} (livemode={view.livemode})",
                    [movement.id, view.id, movement.merchant_id],
                    movement.currency,
                    movement.amount,
                    abs(
                        _net(
                            view.legs, "processor_receivable", movement.currency, increase=increase
                        )
                    ),
                )
            )

    # Ledger transactions of the range that no movement accounts for.
    for view in ledger:
        if view.id in accounted or not start <= view.create_time < end:
            continue
        considered[view.id] = view
        mismatches.append(
            Mismatch(
                "UNEXPECTED_LEDGER_TRANSACTION",
                f"ledger transaction {view.id} ({view.external_reference!r}, source "
                f"{view.source_id or '-'}) matches no settled payment, refund, dispute or payout: "
                f"{_describe(view.legs)}",
                [view.id, *([view.source_id] if view.source_id else [])],
                ",".join(sorted(_currencies(view.legs))),
            )
        )

    # Each merchant's balance movement against captured - fees - refunded.
    merchant_actual: dict[tuple[str, str, bool], int] = defaultdict(int)
    for view in considered.values():
        for (owner, kind, direction, currency), amount in view.legs.items():
            line = totals_of(currency)
            if kind in MERCHANT_KINDS:
                signed = amount if direction == "credit" else -amount
                merchant_actual[owner, currency, view.livemode] += signed
                line.ledger_merchant_net += signed
            elif kind == "platform_fees":
                line.ledger_fees += amount if direction == "credit" else -amount
            elif kind == "processor_receivable":
                line.ledger_receivable_net += amount if direction == "debit" else -amount
    for key in sorted(merchant_expected.keys() | merchant_actual.keys()):
        merchant_id, currency, livemode = key
        if merchant_expected.get(key, 0) != merchant_actual.get(key, 0):
            mismatches.append(
                Mismatch(
                    "MERCHANT_BALANCE_MISMATCH",
                    f"merchant {merchant_id} ({'live' if livemode else 'test'} mode): "
                    "captured - fees - refunded - disputed + reinstated - paid out differs from "
                    "the movement of its pending, available and in-transit accounts",
                    [merchant_id],
                    currency,
                    merchant_expected.get(key, 0),
                    merchant_actual.get(key, 0),
                )
            )

    # The processor's own records against the ledger's processor_receivable legs.
    record_keys = {(record.kind, _record_source(record)) for record in records}
    payout_movements = {(m.kind, m.id): m for m in movements if m.kind in BANK_KINDS.values()}
    for record in records_in_range:
        if record.kind in BANK_KINDS:
            mismatch = _bank_mismatch(
                record, payout_movements.get((record.kind, record.payment_id))
            )
            if mismatch is not None:
                mismatches.append(mismatch)
            continue
        line = totals_of(record.currency)
        source = _record_source(record)
        if record.kind == "refund":
            line.processor_refunded += record.amount
        elif record.kind == "capture":
            line.processor_captured += record.amount
        views = _record_views(record, by_source, by_reference)
        increase = _RECEIVABLE_INCREASE[record.kind]
        moved = sum(
            _net(view.legs, "processor_receivable", record.currency, increase=increase)
            for view in views
        )
        if moved != record.amount:
            mismatches.append(
                Mismatch(
                    "PROCESSOR_MISMATCH",
                    f"processor {record.kind} {record.processor_id} of {source} moved "
                    f"{record.amount}; the ledger's processor_receivable moved {moved}",
                    [record.processor_id, source, *(view.id for view in views)],
                    record.currency,
                    record.amount,
                    moved,
                )
            )
    for movement in in_range:
        if movement.kind in BANK_KINDS.values():
            if (movement.kind, movement.id) not in record_keys:
                mismatches.append(
                    Mismatch(
                        "BANK_MISMATCH",
                        f"{movement.kind} {movement.id} but the bank has no such transfer",
                        [movement.id, movement.merchant_id],
                        movement.currency,
                        movement.amount,
                        0,
                    )
                )
            continue
        if movement.kind not in _PROCESSOR_KIND:
            continue
        kind = _PROCESSOR_KIND[movement.kind]
        if (kind, movement.id) not in record_keys:
            mismatches.append(
                Mismatch(
                    "PROCESSOR_MISMATCH",
                    f"{movement.kind} {movement.id} succeeded but the processor has no {kind}",
                    [movement.id, movement.payment_id],
                    movement.currency,
                    movement.amount,
                    0,
                )
            )

    for line_totals in trial_balance:
        if line_totals.debits != line_totals.credits:
            mismatches.append(
                Mismatch(
                    "TRIAL_BALANCE_UNBALANCED",
                    f"debits {line_totals.debits} != credits {line_totals.credits}",
                    [],
                    line_totals.currency,
                    line_totals.debits,
                    line_totals.credits,
                )
            )
    return Report(
        start=start,
        end=end,
        totals=[totals[currency] for currency in sorted(totals)],
        mismatches=mismatches,
        checked_count=len(in_range) + len(records_in_range),
    )


def _bank_mismatch(record: ProcessorRecord, movement: Movement | None) -> Mismatch | None:
    """A bank transfer (its payout id in `payment_id`) against its payout's movement."""
    if movement is not None and movement.amount == record.amount:
        return None
    return Mismatch(
        "BANK_MISMATCH",
        f"bank transfer {record.processor_id} ({record.kind}) of payout {record.payment_id} "
        + (
            "matches no payout in that status"
            if movement is None
            else f"moved {record.amount}; the payout says {movement.amount}"
        ),
        [record.processor_id, record.payment_id],
        record.currency,
        record.amount,
        movement.amount if movement is not None else 0,
    )


def _record_source(record: ProcessorRecord) -> str:
    """The payment, refund or dispute id a processor record is about."""
    if record.kind in ("dispute", "dispute_reinstatement"):
        return record.dispute_id
    return record.refund_id if record.kind == "refund" else record.payment_id


def _record_views(
    record: ProcessorRecord,
    by_source: dict[str, list[LedgerView]],
    by_reference: dict[str, LedgerView],
) -> list[LedgerView]:
    """The ledger transactions a processor record should match.

    A dispute's two postings share its id as source: each record matches its own posting by
    reference (`dispute:<id>`, `dispute:<id>:won`, the payment service's posting rules).
    """
    if record.kind == "dispute":
        reference = f"dispute:{record.dispute_id}"
    elif record.kind == "dispute_reinstatement":
        reference = f"dispute:{record.dispute_id}:won"
    else:
        return by_source.get(_record_source(record), [])
    view = by_reference.get(reference) if record.dispute_id else None
    return [view] if view is not None else []


def _describe(legs: dict[Leg, int]) -> str:
    return (
        ", ".join(
            f"{direction} {owner}/{kind} {amount} {currency}"
            for (owner, kind, direction, currency), amount in sorted(legs.items())
        )
        or "nothing"
    )


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def fetch_movements(
    records: PaymentRecords, *, start: datetime, end: datetime, timeout_s: float
) -> list[Movement]:
    """Every settled movement in [start, end) from the payment service, all pages."""
    found: list[Movement] = []
    token = ""
    while True:
        page = records.ListSettledMovements(
            payment_internal_pb2.ListSettledMovementsRequest(
                start_time=_timestamp(start),
                end_time=_timestamp(end),
                page_size=PAGE_SIZE,
                page_token=token,
            ),
            timeout=timeout_s,
        )
        found.extend(
            Movement(
                kind=m.kind,
                id=m.id,
                payment_id=m.payment_id,
                merchant_id=m.merchant_id,
                amount=m.amount,
                fee=m.fee,
                currency=m.currency,
                livemode=m.livemode,
                settle_time=m.settle_time.ToDatetime(tzinfo=UTC),
                ledger_reference=m.ledger_reference,
            )
            for m in page.movements
        )
        _check_size(len(found))
        token = page.next_page_token
        if not token:
            return found


def fetch_processor_records(
    records: PaymentRecords, *, start: datetime, end: datetime, timeout_s: float
) -> list[ProcessorRecord]:
    """Every processor record in [start, end), all pages."""
    found: list[ProcessorRecord] = []
    token = ""
    while True:
        page = records.ListProcessorRecords(
            payment_internal_pb2.ListProcessorRecordsRequest(
                start_time=_timestamp(start),
                end_time=_timestamp(end),
                page_size=PAGE_SIZE,
                page_token=token,
            ),
            timeout=timeout_s,
        )
        found.extend(
            ProcessorRecord(
                kind=r.kind,
                processor_id=r.processor_id,
                payment_id=r.payment_id,
                refund_id=r.refund_id,
                amount=r.amount,
                currency=r.currency,
                create_time=r.create_time.ToDatetime(tzinfo=UTC),
                dispute_id=r.dispute_id,
            )
            for r in page.records
        )
        _check_size(len(found))
        token = page.next_page_token
        if not token:
            return found


def _check_size(count: int) -> None:
    if count > ITEMS_MAX:
        raise ReconciliationRangeTooLarge(
            f"more than {ITEMS_MAX} items in the range; reconcile a shorter range"
        )


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == CHUNK_SIZE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_ledger(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    references: set[str],
    source_ids: set[str],
) -> list[LedgerView]:
    """Ledger transactions of the range, or named by reference or source, with their legs."""
    transactions: dict[str, LedgerTransaction] = {
        t.id: t
        for t in session.scalars(
            select(LedgerTransaction).where(
                LedgerTransaction.create_time >= start, LedgerTransaction.create_time < end
            )
        )
    }
    _check_size(len(transactions))
    references = {r for r in references if r}
    for reference_chunk, source_chunk in _paired_chunks(references, source_ids):
        for t in session.scalars(
            select(LedgerTransaction).where(
                or_(
                    LedgerTransaction.external_reference.in_(reference_chunk),
                    LedgerTransaction.source_id.in_(source_chunk),
                )
            )
        ):
            transactions[t.id] = t
    legs: dict[str, dict[Leg, int]] = defaultdict(lambda: defaultdict(int))
    for chunk in _chunks(sorted(transactions)):
        rows = session.execute(
            select(
                Entry.transaction_id,
                Account.owner,
                Account.kind,
                Entry.direction,
                Entry.currency,
                Entry.amount,
            )
            .join(Account, Account.id == Entry.account_id)
            .where(Entry.transaction_id.in_(chunk))
        ).all()
        for transaction_id, owner, kind, direction, currency, amount in rows:
            legs[transaction_id][owner, kind, direction, currency] += amount
    return [
        LedgerView(
            id=t.id,
            external_reference=t.external_reference,
            source_id=t.source_id,
            livemode=t.livemode,
            create_time=t.create_time,
            legs=dict(legs[t.id]),
        )
        for t in transactions.values()
    ]


def _paired_chunks(first: set[str], second: set[str]) -> Iterator[tuple[list[str], list[str]]]:
    firsts = list(_chunks(sorted(first)))
    seconds = list(_chunks(sorted(second)))
    for index in range(max(len(firsts), len(seconds))):
        yield (
            firsts[index] if index < len(firsts) else [],
            seconds[index] if index < len(seconds) else [],
        )


def reconcile(
    session: Session,
    records: PaymentRecords,
    *,
    start: datetime,
    end: datetime,
    grace: timedelta,
    timeout_s: float,
) -> Report:
    """Runs a reconciliation of [start, end) against the payment service's records."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidArgument.field("start_time", "must carry a time zone")
    if not start < end:
        raise InvalidArgument.field("end_time", "must be after start_time")
    movements = fetch_movements(records, start=start, end=end + grace, timeout_s=timeout_s)
    processor = fetch_processor_records(
        records, start=start - grace, end=end + grace, timeout_s=timeout_s
    )
    ledger = load_ledger(
        session,
        start=start,
        end=end,
        references={m.ledger_reference for m in movements},
        source_ids={m.id for m in movements} | {_record_source(r) for r in processor},
    )
    report = compare(
        start=start,
        end=end,
        movements=movements,
        records=processor,
        ledger=ledger,
        trial_balance=accounts.trial_balance(session),
    )
    logger.info(
        "reconciled",
        extra={
            "start": start.isoformat(),
            "end": end.isoformat(),
            "checked": report.checked_count,
            "mismatches": len(report.mismatches),
        },
    )
    return report


def render_text(report: ledger_internal_pb2.ReconciliationReport) -> str:
    """A reconciliation report for people: totals per currency, then every mismatch."""
    start = report.start_time.ToDatetime(tzinfo=UTC).isoformat()
    end = report.end_time.ToDatetime(tzinfo=UTC).isoformat()
    lines = [f"reconciliation {start} .. {end}: {report.checked_count} items checked"]
    for line in report.totals:
        lines.append(
            f"  {line.currency}: captured {line.payments_captured}, fees {line.payments_fees}, "
            f"refunded {line.payments_refunded} | processor captured {line.processor_captured}, "
            f"refunded {line.processor_refunded} | ledger receivable "
            f"{line.ledger_receivable_net}, fees {line.ledger_fees}, merchants "
            f"{line.ledger_merchant_net}"
        )
    lines.append(f"{len(report.mismatches)} mismatches")
    for mismatch in report.mismatches:
        lines.append(
            f"  {mismatch.kind} [{', '.join(mismatch.ids)}] {mismatch.currency} "
            f"expected {mismatch.expected} actual {mismatch.actual}: {mismatch.description}"
        )
    return "\n".join(lines)
