"""Operator sessions and stream tokens: random bearer tokens, stored only as SHA-256 hashes.

A session token comes from a login and opens every admin method its operator's role allows. A
stream token is issued under a session, opens only the overview stream, expires within a minute
and dies with its session, so it can travel in a query string (EventSource sends no headers)
without exposing the session itself.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, aliased

from services.admin import operators
from services.admin.errors import InvalidCredentials, SessionInvalid
from services.admin.models import Operator, OperatorSession
from services.common.ids import new_id

SESSION_TOKEN_PREFIX = "pms_"  # noqa: S105 - a token's type tag, not a token
STREAM_TOKEN_PREFIX = "pmst_"  # noqa: S105 - a token's type tag, not a token
# 32 random bytes: 256 bits, so a fast hash is as good as a slow one for storage.
TOKEN_BYTES = 32
TOKEN_LENGTH_MAX = 128


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the only time its value exists outside the client."""

    token: str
    record: OperatorSession
    operator: Operator


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _issue(
    session: Session,
    *,
    operator: Operator,
    purpose: str,
    prefix: str,
    ttl_s: float,
    client_ip: str,
    parent_id: str | None = None,
) -> IssuedToken:
    token = prefix + secrets.token_urlsafe(TOKEN_BYTES)
    record = OperatorSession(
        id=new_id("ses" if purpose == "session" else "stk"),
        operator_id=operator.id,
        purpose=purpose,
        parent_id=parent_id,
        token_hash=hash_token(token),
        client_ip=client_ip[:64],
        expire_time=datetime.now(UTC) + timedelta(seconds=ttl_s),
    )
    session.add(record)
    session.flush()
    return IssuedToken(token=token, record=record, operator=operator)


def login(
    session: Session, *, email: str, password: str, client_ip: str, ttl_s: float
) -> IssuedToken:
    """A new session for the operator, or InvalidCredentials (same answer for either mistake)."""
    operator = operators.find_by_email(session, email)
    if not operators.verify_password(operator, password):
        raise InvalidCredentials("the email or password is wrong")
    assert operator is not None, "a verified password has an operator"
    return _issue(
        session,
        operator=operator,
        purpose="session",
        prefix=SESSION_TOKEN_PREFIX,
        ttl_s=ttl_s,
        client_ip=client_ip,
    )


def create_stream_token(
    session: Session, *, parent_id: str, ttl_s: float, client_ip: str
) -> IssuedToken:
    """A stream token under a live session."""
    parent = session.get(OperatorSession, parent_id)
    assert parent is not None and parent.purpose == "session", "authenticated just before"
    operator = session.get(Operator, parent.operator_id)
    assert operator is not None
    return _issue(
        session,
        operator=operator,
        purpose="stream",
        prefix=STREAM_TOKEN_PREFIX,
        ttl_s=ttl_s,
        client_ip=client_ip,
        parent_id=parent.id,
    )


def authenticate(session: Session, token: str, *, purpose: str) -> tuple[OperatorSession, Operator]:
    """The live session (or stream token) and its operator, or SessionInvalid."""
    expected_prefix = SESSION_TOKEN_PREFIX if purpose == "session" else STREAM_TOKEN_PREFIX
    if not token.startswith(expected_prefix) or len(token) > TOKEN_LENGTH_MAX:
        raise SessionInvalid("the session token is malformed")
    now = datetime.now(UTC)
    parent = aliased(OperatorSession)
    query = (
        select(OperatorSession, Operator)
        .join(Operator, Operator.id == OperatorSession.operator_id)
        .outerjoin(parent, parent.id == OperatorSession.parent_id)
        .where(
            OperatorSession.token_hash == hash_token(token),
            OperatorSession.purpose == purpose,
            OperatorSession.revoke_time.is_(None),
            OperatorSession.expire_time > now,
            # A stream token is only as good as the session that asked for it.
            or_(
                OperatorSession.parent_id.is_(None),
                (parent.revoke_time.is_(None)) & (parent.expire_time > now),
            ),
        )
    )
    row = session.execute(query).one_or_none()
    if row is None:
        raise SessionInvalid("the session is unknown, expired or ended")
    return row[0], row[1]


def session_alive(session: Session, session_id: str) -> bool:
    """Whether a session is neither revoked nor expired (long-lived streams ask this)."""
    record = session.get(OperatorSession, session_id)
    return (
        record is not None and record.revoke_time is None and record.expire_time > datetime.now(UTC)
    )


def logout(session: Session, *, session_id: str) -> None:
    """Ends a session and every stream token issued under it."""
    now = datetime.now(UTC)
    session.execute(
        update(OperatorSession)
        .where(
            or_(OperatorSession.id == session_id, OperatorSession.parent_id == session_id),
            OperatorSession.revoke_time.is_(None),
        )
        .values(revoke_time=now)
    )
