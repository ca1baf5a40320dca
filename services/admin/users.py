"""Merchant users: invitations, sign-in sessions, roles, and self sign-up.

A user belongs to one merchant and has one role: `viewer` reads, `developer` also manages API
keys and webhook endpoints, `admin` does everything (services/common/auth.py `role_allows`).
Users come from an invitation (by an operator or one of the merchant's admins), whose token is
shown once and kept only as a hash, or from sign-up where the platform allows it. Session and
invitation tokens are random bearer tokens, stored as SHA-256 hashes as operators' are
(services/admin/sessions.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.admin import merchants, passwords
from services.admin.errors import (
    InvalidCredentials,
    InvalidUser,
    InviteInvalid,
    LastAdmin,
    SessionInvalid,
    UserNotFound,
)
from services.admin.models import Merchant, MerchantInvite, MerchantUser, MerchantUserSession
from services.admin.sessions import TOKEN_BYTES, TOKEN_LENGTH_MAX, hash_token
from services.common.auth import USER_SESSION_TOKEN_PREFIX, Principal
from services.common.errors import LiveModeDisabled
from services.common.ids import has_prefix, new_id

ROLES = ("admin", "developer", "viewer")
# Where the merchant dashboard accepts an invitation (frontend/projects/merchant).
ACCEPT_PATH = "/merchant/accept?token="
INVITE_TOKEN_PREFIX = "pmi_"  # noqa: S105 - a token's type tag, not a token
EMAIL_LENGTH_MAX = 320
# A merchant's team; a list this long means something else is wrong.
USERS_MAX = 1000


@dataclass(frozen=True)
class IssuedSession:
    """A session just created: the only time its token exists outside the client."""

    token: str
    record: MerchantUserSession
    user: MerchantUser
    merchant: Merchant


@dataclass(frozen=True)
class IssuedInvite:
    """An invitation just created: the only time its token exists outside the client."""

    token: str
    invite: MerchantInvite


def _email(email: str) -> str:
    email = email.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > EMAIL_LENGTH_MAX or " " in email:
        raise InvalidUser.field("email", "must be an email address")
    return email


def _role(role: str) -> str:
    if role not in ROLES:
        raise InvalidUser.field("role", "must be 'admin', 'developer' or 'viewer'")
    return role


def _password(password: str) -> str:
    if (problem := passwords.problem(password)) is not None:
        raise InvalidUser.field("password", problem)
    return password


def _email_taken(session: Session, email: str) -> bool:
    return session.scalar(select(MerchantUser.id).where(MerchantUser.email == email)) is not None


def invite(
    session: Session,
    *,
    merchant_id: str,
    email: str,
    role: str,
    invited_by: str,
    ttl_s: float,
) -> IssuedInvite:
    """An invitation to the merchant; an earlier open one for the same email stops working."""
    email = _email(email)
    role = _role(role)
    merchants.get_merchant_or_raise(session, merchant_id)
    if _email_taken(session, email):
        raise InvalidUser.field("email", "already belongs to a paymesh user")
    now = datetime.now(UTC)
    session.execute(
        update(MerchantInvite)
        .where(
            MerchantInvite.merchant_id == merchant_id,
            MerchantInvite.email == email,
            MerchantInvite.accept_time.is_(None),
            MerchantInvite.expire_time > now,
        )
        .values(expire_time=now)
    )
    token = INVITE_TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    record = MerchantInvite(
        id=new_id("inv"),
        merchant_id=merchant_id,
        email=email,
        role=role,
        token_hash=hash_token(token),
        invited_by=invited_by,
        expire_time=now + timedelta(seconds=ttl_s),
    )
    session.add(record)
    session.flush()
    return IssuedInvite(token=token, invite=record)


def accept_url(public_url: str, token: str) -> str:
    """The merchant dashboard's link that accepts an invitation."""
    return f"{public_url}{ACCEPT_PATH}{quote(token)}"


def _issue(session: Session, user: MerchantUser, *, client_ip: str, ttl_s: float) -> IssuedSession:
    token = USER_SESSION_TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    record = MerchantUserSession(
        id=new_id("uss"),
        user_id=user.id,
        token_hash=hash_token(token),
        client_ip=client_ip[:64],
        expire_time=datetime.now(UTC) + timedelta(seconds=ttl_s),
    )
    session.add(record)
    session.flush()
    merchant = session.get(Merchant, user.merchant_id)
    assert merchant is not None, "a user's merchant exists (foreign key)"
    return IssuedSession(token=token, record=record, user=user, merchant=merchant)


def accept(
    session: Session, *, token: str, password: str, client_ip: str, ttl_s: float
) -> IssuedSession:
    """Creates the invited user with this password and signs them in."""
    if not token.startswith(INVITE_TOKEN_PREFIX) or len(token) > TOKEN_LENGTH_MAX:
        raise InviteInvalid.field("token", "is not an invitation token")
    _password(password)
    record = session.scalars(
        select(MerchantInvite)
        .where(MerchantInvite.token_hash == hash_token(token))
        .with_for_update()
    ).one_or_none()
    now = datetime.now(UTC)
    if record is None or record.accept_time is not None or record.expire_time <= now:
        raise InviteInvalid.field("token", "is unknown, expired or already used")
    if _email_taken(session, record.email):
        raise InviteInvalid.field("token", "its email already belongs to a paymesh user")
    record.accept_time = now
    user = MerchantUser(
        id=new_id("usr"),
        merchant_id=record.merchant_id,
        email=record.email,
        role=record.role,
        password_hash=passwords.hash_password(password),
    )
    session.add(user)
    session.flush()
    return _issue(session, user, client_ip=client_ip, ttl_s=ttl_s)


def sign_up(
    session: Session,
    *,
    email: str,
    password: str,
    business_name: str,
    client_ip: str,
    ttl_s: float,
) -> IssuedSession:
    """A new test-mode-only merchant with this user as its admin, signed in."""
    email = _email(email)
    _password(password)
    if _email_taken(session, email):
        raise InvalidUser.field("email", "already belongs to a paymesh user")
    merchant = merchants.create_merchant(session, name=business_name)
    merchant.live_enabled = False
    user = MerchantUser(
        id=new_id("usr"),
        merchant_id=merchant.id,
        email=email,
        role="admin",
        password_hash=passwords.hash_password(password),
    )
    session.add(user)
    session.flush()
    return _issue(session, user, client_ip=client_ip, ttl_s=ttl_s)


def create_user(
    session: Session, *, merchant_id: str, email: str, password: str, role: str
) -> MerchantUser:
    """Creates a user directly (the demo data), or resets an existing one's password and role."""
    email = _email(email)
    _password(password)
    role = _role(role)
    merchants.get_merchant_or_raise(session, merchant_id)
    user = session.scalars(select(MerchantUser).where(MerchantUser.email == email)).one_or_none()
    if user is None:
        user = MerchantUser(id=new_id("usr"), merchant_id=merchant_id, email=email)
        session.add(user)
    elif user.merchant_id != merchant_id:
        raise InvalidUser.field("email", "already belongs to another merchant's user")
    user.password_hash = passwords.hash_password(password)
    user.role = role
    session.flush()
    return user


def sign_in(
    session: Session, *, email: str, password: str, client_ip: str, ttl_s: float
) -> IssuedSession:
    """A new session, or InvalidCredentials (the same answer for either mistake)."""
    user = session.scalars(
        select(MerchantUser).where(MerchantUser.email == email.strip().lower())
    ).one_or_none()
    if not passwords.verify(user.password_hash if user else None, password):
        raise InvalidCredentials("the email or password is wrong")
    assert user is not None, "a verified password has a user"
    return _issue(session, user, client_ip=client_ip, ttl_s=ttl_s)


def authenticate(
    session: Session, token: str
) -> tuple[MerchantUserSession, MerchantUser, Merchant]:
    """The live session, its user and merchant, or SessionInvalid."""
    if not token.startswith(USER_SESSION_TOKEN_PREFIX) or len(token) > TOKEN_LENGTH_MAX:
        raise SessionInvalid("the session token is malformed")
    row = session.execute(
        select(MerchantUserSession, MerchantUser, Merchant)
        .join(MerchantUser, MerchantUser.id == MerchantUserSession.user_id)
        .join(Merchant, Merchant.id == MerchantUser.merchant_id)
        .where(
            MerchantUserSession.token_hash == hash_token(token),
            MerchantUserSession.revoke_time.is_(None),
            MerchantUserSession.expire_time > datetime.now(UTC),
        )
    ).one_or_none()
    if row is None:
        raise SessionInvalid("the session is unknown, expired or ended")
    return row[0], row[1], row[2]


def principal(
    record: MerchantUserSession, user: MerchantUser, merchant: Merchant, mode: str
) -> Principal:
    """Who a session's call is made for, in `mode`; LiveModeDisabled for a test-only merchant."""
    mode = mode or "test"
    if mode == "live" and not merchant.live_enabled:
        raise LiveModeDisabled("this merchant is in test mode only")
    return Principal(
        merchant_id=merchant.id,
        mode=mode,
        kind="session",
        key_id=record.id,
        fee_bps=merchant.fee_bps,
        fee_fixed=merchant.fee_fixed,
        merchant_name=merchant.name,
        api_version=merchant.api_version,
        role=user.role,
        user_id=user.id,
    )


def end_session(session: Session, *, session_id: str) -> None:
    """Ends one session at once."""
    session.execute(
        update(MerchantUserSession)
        .where(MerchantUserSession.id == session_id, MerchantUserSession.revoke_time.is_(None))
        .values(revoke_time=datetime.now(UTC))
    )


def list_users(
    session: Session, *, merchant_id: str
) -> tuple[list[MerchantUser], list[MerchantInvite]]:
    """The merchant's users (oldest first) and open invitations (newest first)."""
    merchants.get_merchant_or_raise(session, merchant_id)
    users = list(
        session.scalars(
            select(MerchantUser)
            .where(MerchantUser.merchant_id == merchant_id)
            .order_by(MerchantUser.create_time, MerchantUser.id)
            .limit(USERS_MAX)
        )
    )
    invites = list(
        session.scalars(
            select(MerchantInvite)
            .where(
                MerchantInvite.merchant_id == merchant_id,
                MerchantInvite.accept_time.is_(None),
                MerchantInvite.expire_time > datetime.now(UTC),
            )
            .order_by(MerchantInvite.create_time.desc(), MerchantInvite.id)
            .limit(USERS_MAX)
        )
    )
    return users, invites


def _user_of(session: Session, merchant_id: str, user_id: str) -> MerchantUser:
    user = (
        session.get(MerchantUser, user_id, with_for_update=True)
        if has_prefix(user_id, "usr")
        else None
    )
    if user is None or user.merchant_id != merchant_id:
        raise UserNotFound(f"no user {user_id!r}")
    return user


def _keep_an_admin(session: Session, merchant_id: str, leaving: MerchantUser) -> None:
    if leaving.role != "admin":
        return
    # Every admin row locked, so two admins demoting each other at once cannot both succeed.
    admins = session.scalars(
        select(MerchantUser.id)
        .where(MerchantUser.merchant_id == merchant_id, MerchantUser.role == "admin")
        .with_for_update()
    ).all()
    if len(admins) <= 1:
        raise LastAdmin("a merchant keeps at least one admin")


def update_role(session: Session, *, merchant_id: str, user_id: str, role: str) -> MerchantUser:
    """Changes a user's role; the last admin stays one."""
    role = _role(role)
    user = _user_of(session, merchant_id, user_id)
    if role != "admin":
        _keep_an_admin(session, merchant_id, user)
    user.role = role
    session.flush()
    return user


def remove(session: Session, *, merchant_id: str, user_id: str) -> MerchantUser:
    """Deletes a user and their sessions; the last admin stays."""
    user = _user_of(session, merchant_id, user_id)
    _keep_an_admin(session, merchant_id, user)
    session.execute(delete(MerchantUserSession).where(MerchantUserSession.user_id == user.id))
    session.delete(user)
    session.flush()
    return user
