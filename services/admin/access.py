"""Who is calling an admin method: operator sessions, roles, client address, login throttling."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from limits import RateLimitItemPerSecond, storage, strategies
from sqlalchemy.orm import Session, sessionmaker

from services.admin import sessions as operator_sessions
from services.admin import users
from services.admin.errors import (
    LoginRateLimited,
    OperatorRoleRequired,
    OperatorSessionRequired,
    SessionInvalid,
    UserSessionRequired,
)
from services.common.auth import (
    AuthPolicy,
    OperatorPrincipal,
    Principal,
    is_user_session_token,
    key_from_metadata,
    mode_from_metadata,
)
from services.common.db import transaction
from services.common.ratelimit import seconds_until

Metadata = tuple[tuple[str, str | bytes], ...]
MERCHANT_KEY_TAGS = ("sk_", "pk_")
USER_AGENT_LENGTH_MAX = 512


@dataclass(frozen=True)
class ClientInfo:
    """Where a call came from, as the edge reports it."""

    ip: str
    user_agent: str


def client_info(metadata: Metadata) -> ClientInfo:
    """The client's address and User-Agent from the edge's headers.

    Envoy (with `use_remote_address`) appends the address it accepted the connection from to
    `x-forwarded-for`, so only the last entry is trustworthy; earlier ones are the client's say.
    """
    values = {name: value for name, value in metadata if isinstance(value, str)}
    ip = values.get("x-envoy-external-address", "").strip()
    if not ip:
        ip = values.get("x-forwarded-for", "").split(",")[-1].strip()
    return ClientInfo(ip=ip[:64], user_agent=values.get("user-agent", "")[:USER_AGENT_LENGTH_MAX])


def _has_merchant_key(metadata: Metadata) -> bool:
    names = {name for name, _ in metadata}
    token = key_from_metadata(metadata) or ""
    return "x-api-key" in names or token.startswith(MERCHANT_KEY_TAGS)


class SessionAuthenticator:
    """The admin service's OperatorAuthenticator: bearer session tokens checked in PostgreSQL,
    operators' and merchant users' alike.

    Sessions are looked up on every call (no cache), so a logout takes effect at once here (the
    other services cache a user's session for `auth_cache_ttl_s`, as they do keys).
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def _lookup(self, token: str, purpose: str) -> tuple[str, str, str, str]:
        with transaction(self._sessions) as session:
            record, operator = operator_sessions.authenticate(session, token, purpose=purpose)
            # A stream is bound to the session its token came from.
            session_id = record.parent_id or record.id
            return operator.id, operator.email, operator.role, session_id

    async def authenticate_operator(
        self, metadata: Metadata, policy: AuthPolicy
    ) -> OperatorPrincipal:
        """The operator of a bearer session token; 403 for merchant keys and for viewers writing."""
        if _has_merchant_key(metadata) or is_user_session_token(key_from_metadata(metadata)):
            raise OperatorSessionRequired(
                "merchant API keys and merchant users' sessions cannot call admin methods"
            )
        token = key_from_metadata(metadata)
        if not token:
            raise SessionInvalid("an operator session is required (Authorization: Bearer)")
        return await self._principal(metadata, token, "session", policy)

    def _user_lookup(self, token: str, mode: str) -> Principal:
        with transaction(self._sessions) as session:
            record, user, merchant = users.authenticate(session, token)
            return users.principal(record, user, merchant, mode)

    async def authenticate_user(self, metadata: Metadata) -> Principal:
        """The merchant user of a bearer session token; API keys and operators are refused."""
        token = key_from_metadata(metadata)
        if _has_merchant_key(metadata):
            raise UserSessionRequired("API keys cannot manage the account; sign in instead")
        if not token:
            raise SessionInvalid("a merchant user's session is required (Authorization: Bearer)")
        if not is_user_session_token(token):
            raise UserSessionRequired("only a merchant user's session manages the account")
        return await asyncio.to_thread(self._user_lookup, token, mode_from_metadata(metadata))

    async def resolve_user(self, token: str, mode: str) -> Principal:
        """A session token's principal in `mode`, for the other services (AuthenticateApiKey)."""
        return await asyncio.to_thread(self._user_lookup, token, mode)

    async def authenticate_stream(self, metadata: Metadata) -> OperatorPrincipal:
        """The operator of the overview stream: a bearer stream token, or else a session token."""
        token = key_from_metadata(metadata) or ""
        if token.startswith(operator_sessions.STREAM_TOKEN_PREFIX):
            return await self._principal(metadata, token, "stream", AuthPolicy.OPERATOR_SESSION)
        return await self.authenticate_operator(metadata, AuthPolicy.OPERATOR_SESSION)

    async def _principal(
        self, metadata: Metadata, token: str, purpose: str, policy: AuthPolicy
    ) -> OperatorPrincipal:
        operator_id, email, role, session_id = await asyncio.to_thread(self._lookup, token, purpose)
        if policy is AuthPolicy.OPERATOR_WRITE and role != "operator":
            raise OperatorRoleRequired("this method needs the operator role; viewers only read")
        client = client_info(metadata)
        return OperatorPrincipal(
            operator_id=operator_id,
            email=email,
            role=role,
            session_id=session_id,
            client_ip=client.ip,
            user_agent=client.user_agent,
        )


class LoginThrottle:
    """Counts failed logins per email and client address in Redis (a moving window)."""

    def __init__(
        self,
        redis_url: str,
        *,
        failures_max: int,
        window_s: int,
        key_prefix: str = "paymesh:admin:login",
    ) -> None:
        self._limiter = strategies.MovingWindowRateLimiter(
            storage.RedisStorage(redis_url, key_prefix=key_prefix)
        )
        self._item = RateLimitItemPerSecond(failures_max, window_s)

    def check(self, email: str, client_ip: str) -> None:
        """LoginRateLimited when this email and address have failed too often lately."""
        email = email.strip().lower()
        if not self._limiter.test(self._item, email, client_ip):
            # The moving window frees an attempt when its oldest failure leaves it.
            stats = self._limiter.get_window_stats(self._item, email, client_ip)
            raise LoginRateLimited(
                "too many failed logins; try again later",
                retry_after_s=seconds_until(stats.reset_time),
            )

    def failed(self, email: str, client_ip: str) -> None:
        """Counts one failed login."""
        self._limiter.hit(self._item, email.strip().lower(), client_ip)
