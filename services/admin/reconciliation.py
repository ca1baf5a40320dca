"""Kept reconciliation runs: the ledger's reports, stored as they came, listable later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import json_format
from paymesh.ledger.v1 import ledger_internal_pb2
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from services.admin.errors import ReconciliationNotFound
from services.admin.models import ReconciliationRun
from services.common import pages
from services.common.errors import InvalidArgument
from services.common.ids import new_id

RANGE_MAX = timedelta(days=366)


def check_range(start_time: datetime | None, end_time: datetime | None) -> None:
    """InvalidArgument unless start < end, both set, at most a year apart, not in the future."""
    if start_time is None:
        raise InvalidArgument.field("start_time", "is required")
    if end_time is None:
        raise InvalidArgument.field("end_time", "is required")
    if start_time >= end_time:
        raise InvalidArgument.field("end_time", "must be after start_time")
    if end_time - start_time > RANGE_MAX:
        raise InvalidArgument.field("end_time", "must be at most 366 days after start_time")
    if start_time > datetime.now(UTC):
        raise InvalidArgument.field("start_time", "must not be in the future")


def store_run(
    session: Session, *, operator_id: str, report: ledger_internal_pb2.ReconciliationReport
) -> ReconciliationRun:
    """Keeps a report."""
    run = ReconciliationRun(
        id=new_id("rec"),
        operator_id=operator_id,
        start_time=report.start_time.ToDatetime(tzinfo=UTC),
        end_time=report.end_time.ToDatetime(tzinfo=UTC),
        checked_count=report.checked_count,
        mismatch_count=len(report.mismatches),
        report=json_format.MessageToDict(report, preserving_proto_field_name=True),
    )
    session.add(run)
    session.flush()
    session.refresh(run)
    return run


def report_of(run: ReconciliationRun) -> ledger_internal_pb2.ReconciliationReport:
    """The kept report as the ledger gave it."""
    return json_format.ParseDict(run.report, ledger_internal_pb2.ReconciliationReport())


def get_run_or_raise(session: Session, run_id: str) -> ReconciliationRun:
    """The run, or ReconciliationNotFound."""
    run = session.get(ReconciliationRun, run_id)
    if run is None:
        raise ReconciliationNotFound(f"no reconciliation run {run_id!r}")
    return run


def list_runs(
    session: Session, *, tokens: pages.PageTokens, page_size: int = 0, page_token: str = ""
) -> tuple[list[ReconciliationRun], str]:
    """A page of runs, newest first, and the next page's token ("" on the last)."""
    size = pages.page_size(page_size)
    query = (
        select(ReconciliationRun)
        .order_by(ReconciliationRun.create_time.desc(), ReconciliationRun.id.desc())
        .limit(size + 1)
    )
    position = tokens.open_after(page_token, list_name="reconciliation_runs", scope={})
    if position is not None:
        query = query.where(tuple_(ReconciliationRun.create_time, ReconciliationRun.id) < position)
    rows = list(session.scalars(query))
    if len(rows) > size:
        last = rows[size - 1]
        return rows[:size], tokens.seal_after(
            last.create_time, last.id, list_name="reconciliation_runs", scope={}
        )
    return rows, ""
