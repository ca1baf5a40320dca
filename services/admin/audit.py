"""The append-only audit log of operators' actions (the database refuses UPDATE and DELETE)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.admin.models import AuditEntry
from services.common import pages
from services.common.errors import InvalidArgument

PAGE_SIZE_DEFAULT = 50
USER_AGENT_LENGTH_MAX = 512


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where."""

    operator_id: str
    email: str
    client_ip: str
    user_agent: str


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    target_id: str = "",
    details: dict[str, str] | None = None,
) -> AuditEntry:
    """Appends one entry, in the same transaction as the change it describes."""
    entry = AuditEntry(
        operator_id=actor.operator_id,
        operator_email=actor.email[:320],
        action=action,
        target_id=target_id[:200],
        client_ip=actor.client_ip[:64],
        user_agent=actor.user_agent[:USER_AGENT_LENGTH_MAX],
        details=details or {},
    )
    session.add(entry)
    session.flush()
    return entry


def parse_page(page_size: int, page_token: str) -> tuple[int, int | None]:
    """The page size and the id to continue below, or InvalidArgument."""
    size = pages.page_size(page_size, default=PAGE_SIZE_DEFAULT)
    if not page_token:
        return size, None
    # Entries are numbered in order, so the last one's number is the token.
    if not page_token.isdigit() or len(page_token) > 19:
        raise InvalidArgument.field("page_token", "is not a token from a previous response")
    return size, int(page_token)


def list_entries(
    session: Session,
    *,
    operator_id: str = "",
    action: str = "",
    target_id: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> tuple[list[AuditEntry], str]:
    """A page of entries, newest first, and the next page's token ("" on the last)."""
    size, before_id = parse_page(page_size, page_token)
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(size + 1)
    if operator_id:
        query = query.where(AuditEntry.operator_id == operator_id)
    if action:
        query = query.where(AuditEntry.action == action)
    if target_id:
        query = query.where(AuditEntry.target_id == target_id)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    rows = list(session.scalars(query))
    if len(rows) > size:
        return rows[:size], str(rows[size - 1].id)
    return rows, ""
