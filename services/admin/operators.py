"""Operator accounts; passwords hashed with argon2id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.admin import passwords
from services.admin.errors import InvalidOperator
from services.admin.models import Operator
from services.common.ids import new_id

ROLES = ("viewer", "operator")


def create_operator(session: Session, *, email: str, password: str, role: str) -> Operator:
    """Creates an operator, or updates the password and role of an existing one."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise InvalidOperator.field("email", "must be an email address")
    if (problem := passwords.problem(password)) is not None:
        raise InvalidOperator.field("password", problem)
    if role not in ROLES:
        raise InvalidOperator.field("role", "must be 'viewer' or 'operator'")
    operator = session.scalars(select(Operator).where(Operator.email == email)).one_or_none()
    if operator is None:
        operator = Operator(id=new_id("op"), email=email, role=role, password_hash="")
        session.add(operator)
    operator.password_hash = passwords.hash_password(password)
    operator.role = role
    session.flush()
    return operator


def find_by_email(session: Session, email: str) -> Operator | None:
    """The operator with this email (case-insensitive), if any."""
    return session.scalars(
        select(Operator).where(Operator.email == email.strip().lower())
    ).one_or_none()


def verify_password(operator: Operator | None, password: str) -> bool:
    """Whether `password` is the operator's; spends the same time when there is no operator."""
    return passwords.verify(operator.password_hash if operator else None, password)
