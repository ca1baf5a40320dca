"""The append-only audit log of operators' actions (the database refuses UPDATE and DELETE)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.admin.models import AuditEntry
from services.common import pages

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


def list_entries(
    session: Session,
    *,
    tokens: pages.PageTokens,
    operator_id: str = "",
    action: str = "",
    target_id: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> tuple[list[AuditEntry], str]:
    """A page of entries, newest first, and the next page's token ("" on the last)."""
    size = pages.page_size(page_size, default=PAGE_SIZE_DEFAULT)
    scope: pages.Scope = {"operator_id": operator_id, "action": action, "target_id": target_id}
    # Entries are numbered in order, so the last one's number is the position.
    position = tokens.open(page_token, list_name="audit_log", scope=scope)
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(size + 1)
    if operator_id:
        query = query.where(AuditEntry.operator_id == operator_id)
    if action:
        query = query.where(AuditEntry.action == action)
    if target_id:
        query = query.where(AuditEntry.target_id == target_id)
    if position is not None:
        query = query.where(AuditEntry.id < position[0])
    rows = list(session.scalars(query))
    if len(rows) > size:
        return rows[:size], tokens.seal([rows[size - 1].id], list_name="audit_log", scope=scope)
    return rows, ""
