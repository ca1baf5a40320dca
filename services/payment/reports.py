"""Figures across merchants for trusted internal callers: stats, timelines, reconciliation feeds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from services.common import pages
from services.common.errors import FieldViolation, InvalidArgument
from services.common.money import normalize_currency
from services.payment import disputes
from services.payment.models import Dispute

FEED_PAGE_SIZE_DEFAULT = 500
FEED_PAGE_SIZE_MAX = 1000
TIMELINE_BUCKETS_MAX = 2000
GRANULARITIES = {"HOUR": timedelta(hours=1), "DAY": timedelta(days=1)}


@dataclass(frozen=True)
class CurrencyStats:
    """One currency's counts and sums."""

    currency: str
    counts: dict[str, int]
    gross_volume: int
    fees: int
    refunded: int


def payment_stats(
    session: Session,
    *,
    merchant_id: str,
    livemode: bool,
    start_time: datetime | None,
    end_time: datetime | None,
) -> list[CurrencyStats]:
    """Counts by status and captured, fee and refunded sums per currency."""
    rows = session.execute(
        text(
            "SELECT currency, status, count(*) AS n,"
            " coalesce(sum(amount_received) FILTER (WHERE status = 'succeeded'), 0) AS gross,"
            " coalesce(sum(fee) FILTER (WHERE status = 'succeeded'), 0) AS fees,"
            " coalesce(sum(amount_refunded), 0) AS refunded"
            " FROM payment.payments"
            " WHERE livemode = :livemode"
            " AND (:merchant_id = '' OR merchant_id = :merchant_id)"
            " AND (CAST(:start AS timestamptz) IS NULL OR create_time >= :start)"
            " AND (CAST(:end AS timestamptz) IS NULL OR create_time < :end)"
            " GROUP BY currency, status ORDER BY currency"
        ),
        {"livemode": livemode, "merchant_id": merchant_id, "start": start_time, "end": end_time},
    ).all()
    by_currency: dict[str, dict[str, Any]] = {}
    for currency, status, count, gross, fees, refunded in rows:
        entry = by_currency.setdefault(
            currency, {"counts": {}, "gross": 0, "fees": 0, "refunded": 0}
        )
        entry["counts"][status] = int(count)
        entry["gross"] += int(gross)
        entry["fees"] += int(fees)
        entry["refunded"] += int(refunded)
    return [
        CurrencyStats(
            currency=currency,
            counts=entry["counts"],
            gross_volume=entry["gross"],
            fees=entry["fees"],
            refunded=entry["refunded"],
        )
        for currency, entry in sorted(by_currency.items())
    ]


@dataclass
class Bucket:
    """One hour or day of revenue."""

    start_time: datetime
    gross: int = 0
    fees: int = 0
    refunds: int = 0
    succeeded_count: int = 0
    failed_count: int = 0


def _truncate(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "DAY" else moment


def revenue_timeline(
    session: Session,
    *,
    granularity: str,
    currency: str,
    start_time: datetime | None,
    end_time: datetime | None,
    merchant_id: str,
    livemode: bool,
) -> list[Bucket]:
    """Buckets of succeeded volume, fees, refunds and counts, empty buckets included."""
    violations: list[FieldViolation] = []
    unit = granularity.upper()
    if unit not in GRANULARITIES:
        violations.append(FieldViolation("granularity", "must be HOUR or DAY"))
    code = normalize_currency(currency) if currency else None
    if code is None:
        violations.append(FieldViolation("currency", "must be an ISO 4217 currency code"))
    if start_time is None or end_time is None or end_time <= start_time:
        violations.append(
            FieldViolation("end_time", "start_time and end_time must be set, in order")
        )
    if violations or start_time is None or end_time is None or code is None:
        raise InvalidArgument("the timeline request is invalid", violations=violations)
    step = GRANULARITIES[unit]
    first = _truncate(start_time, unit)
    if (end_time - first) / step > TIMELINE_BUCKETS_MAX:
        raise InvalidArgument.field("end_time", f"at most {TIMELINE_BUCKETS_MAX} buckets")
    buckets: dict[datetime, Bucket] = {}
    moment = first
    while moment < end_time:
        buckets[moment] = Bucket(start_time=moment)
        moment += step
    params = {
        "unit": unit.lower(),
        "currency": code,
        "livemode": livemode,
        "merchant_id": merchant_id,
        "start": first,
        "end": end_time,
    }
    scope = (
        " currency = :currency AND livemode = :livemode"
        " AND (:merchant_id = '' OR merchant_id = :merchant_id)"
    )
    succeeded = session.execute(
        text(
            "SELECT date_trunc(:unit, settle_time, 'UTC') AS b, sum(amount_received), sum(fee),"  # noqa: S608 - constant SQL, values bound
            " count(*) FROM payment.payments WHERE status = 'succeeded' AND"
            + scope
            + " AND settle_time >= :start AND settle_time < :end GROUP BY b"
        ),
        params,
    ).all()
    for start, gross, fees, count in succeeded:
        bucket = buckets.get(start.astimezone(UTC))
        if bucket is not None:
            bucket.gross, bucket.fees, bucket.succeeded_count = int(gross), int(fees), int(count)
    failed = session.execute(
        text(
            "SELECT date_trunc(:unit, update_time, 'UTC') AS b, count(*) FROM payment.payments"  # noqa: S608 - constant SQL, values bound
            " WHERE status = 'failed' AND"
            + scope
            + " AND update_time >= :start AND update_time < :end GROUP BY b"
        ),
        params,
    ).all()
    for start, count in failed:
        bucket = buckets.get(start.astimezone(UTC))
        if bucket is not None:
            bucket.failed_count = int(count)
    refunded = session.execute(
        text(
            "SELECT date_trunc(:unit, settle_time, 'UTC') AS b, sum(amount) FROM payment.refunds"  # noqa: S608 - constant SQL, values bound
            " WHERE status = 'succeeded' AND"
            + scope
            + " AND settle_time >= :start AND settle_time < :end GROUP BY b"
        ),
        params,
    ).all()
    for start, amount in refunded:
        bucket = buckets.get(start.astimezone(UTC))
        if bucket is not None:
            bucket.refunds = int(amount)
    return list(buckets.values())


def _feed(
    session: Session,
    sql: str,
    *,
    tokens: pages.PageTokens,
    list_name: str,
    start_time: datetime | None,
    end_time: datetime | None,
    page_size: int,
    page_token: str,
) -> tuple[list[Any], str]:
    """Rows of a union ordered by (at, id), oldest first, with keyset pagination."""
    size = pages.page_size(page_size, maximum=FEED_PAGE_SIZE_MAX, default=FEED_PAGE_SIZE_DEFAULT)
    scope: pages.Scope = {
        "start_time": start_time.isoformat() if start_time else None,
        "end_time": end_time.isoformat() if end_time else None,
    }
    position = tokens.open_after(page_token, list_name=list_name, scope=scope)
    rows = session.execute(
        text(
            "SELECT * FROM (" + sql + ") AS feed"  # noqa: S608 - constant SQL, values bound
            " WHERE (CAST(:start AS timestamptz) IS NULL OR at >= :start)"
            " AND (CAST(:end AS timestamptz) IS NULL OR at < :end)"
            " AND (CAST(:after_time AS timestamptz) IS NULL OR (at, id) > (:after_time, :after_id))"
            " ORDER BY at, id LIMIT :limit"
        ),
        {
            "start": start_time,
            "end": end_time,
            "after_time": position[0] if position else None,
            "after_id": position[1] if position else "",
            "limit": size + 1,
        },
    ).all()
    token = ""
    if len(rows) > size:
        rows = rows[:size]
        token = tokens.seal_after(rows[-1].at, rows[-1].id, list_name=list_name, scope=scope)
    return list(rows), token


SETTLED_SQL = (
    "SELECT 'payment' AS kind, id, id AS payment_id, merchant_id, amount_received AS amount,"
    " fee, currency, livemode, settle_time AS at, ledger_reference"
    " FROM payment.payments WHERE status = 'succeeded'"
    " UNION ALL"
    " SELECT 'refund', id, payment_id, merchant_id, amount, 0, currency, livemode, settle_time,"
    " ledger_reference FROM payment.refunds WHERE status = 'succeeded'"
    " UNION ALL"
    " SELECT 'dispute', id, payment_id, merchant_id, amount, fee, currency, livemode,"
    " withdraw_time, ledger_reference FROM payment.disputes WHERE withdraw_time IS NOT NULL"
    " UNION ALL"
    " SELECT 'dispute_won', id, payment_id, merchant_id, amount, 0, currency, livemode,"
    " reinstate_time, reinstate_reference FROM payment.disputes"
    " WHERE reinstate_time IS NOT NULL"
    " UNION ALL"
    " SELECT 'release', id, id, merchant_id, amount_received - fee, 0, currency, livemode,"
    " funds_release_time, 'payment:' || id || ':' || 'available' FROM payment.payments"
    " WHERE funds_release_time > settle_time AND amount_received > fee"
    " UNION ALL"
    " SELECT 'payout', id, '', merchant_id, amount, 0, currency, livemode, post_time,"
    " 'payout:' || id FROM payment.payouts WHERE post_time IS NOT NULL"
    " UNION ALL"
    " SELECT 'payout_' || status, id, '', merchant_id, amount, 0, currency, livemode,"
    " finish_time, 'payout:' || id || ':' || status FROM payment.payouts"
    " WHERE ledger_complete AND status IN ('paid', 'failed', 'canceled')"
)
PROCESSOR_SQL = (
    "SELECT 'capture' AS kind, id, payment_id, '' AS refund_id, amount_captured AS amount,"
    " currency, capture_time AS at, '' AS dispute_id"
    " FROM processor.charges WHERE status = 'captured'"
    " UNION ALL"
    " SELECT 'refund', id, payment_id, refund_id, amount, currency, create_time, ''"
    " FROM processor.refunds"
    # A chargeback takes the amount back when filed, and gives it back when won; inquiries
    # move no money.
    " UNION ALL"
    " SELECT 'dispute', d.id, d.payment_id, '', d.amount, d.currency, d.create_time,"
    " coalesce(p.dispute_id, '') FROM processor.disputes d"
    " LEFT JOIN payment.payments p ON p.id = d.payment_id WHERE d.kind = 'chargeback'"
    " UNION ALL"
    " SELECT 'dispute_reinstatement', d.id, d.payment_id, '', d.amount, d.currency,"
    " d.outcome_time, coalesce(p.dispute_id, '') FROM processor.disputes d"
    " LEFT JOIN payment.payments p ON p.id = d.payment_id"
    " WHERE d.kind = 'chargeback' AND d.outcome = 'won'"
    " UNION ALL"
    " SELECT 'payout_' || status, bank_reference, payout_id, '', amount, currency, create_time,"
    " ''"
    " FROM processor.bank_transfers"
)


def settled_movements(
    session: Session,
    *,
    tokens: pages.PageTokens,
    start_time: datetime | None,
    end_time: datetime | None,
    page_size: int,
    page_token: str,
) -> tuple[list[Any], str]:
    """Succeeded captures and refunds, disputes' withdrawals and reinstatements, oldest first."""
    return _feed(
        session,
        SETTLED_SQL,
        tokens=tokens,
        list_name="settled_movements",
        start_time=start_time,
        end_time=end_time,
        page_size=page_size,
        page_token=page_token,
    )


def processor_records(
    session: Session,
    *,
    tokens: pages.PageTokens,
    start_time: datetime | None,
    end_time: datetime | None,
    page_size: int,
    page_token: str,
) -> tuple[list[Any], str]:
    """The simulator's captures, refunds and chargebacks (taken and given back), oldest first."""
    return _feed(
        session,
        PROCESSOR_SQL,
        tokens=tokens,
        list_name="processor_records",
        start_time=start_time,
        end_time=end_time,
        page_size=page_size,
        page_token=page_token,
    )


def open_dispute_count(session: Session, *, merchant_id: str, livemode: bool) -> int:
    """Disputes not yet closed, of one merchant (all when empty) in one mode."""
    query = (
        select(func.count())
        .select_from(Dispute)
        .where(Dispute.livemode == livemode, Dispute.status.not_in(disputes.CLOSED))
    )
    if merchant_id:
        query = query.where(Dispute.merchant_id == merchant_id)
    return int(session.scalar(query) or 0)
