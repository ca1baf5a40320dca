"""API-key authentication for merchant-facing RPCs, as a server interceptor's helper.

Keys are resolved by the admin service (which owns them) and cached for a few seconds here, so
a revoked key stops working within `auth_cache_ttl_s` everywhere. Malformed keys are refused
without any lookup.

A merchant user's session token (the merchant dashboard's) opens the same methods for the user's
merchant, in the mode the `Paymesh-Mode` header names, as far as the user's role allows
(`role_allows`); it is resolved and cached the same way, per mode.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import time
from dataclasses import dataclass
from typing import Protocol

import grpc
from paymesh.admin.v1 import admin_internal_pb2, admin_internal_pb2_grpc

from services.common.api_keys import parse_key
from services.common.errors import (
    InvalidRequest,
    LiveModeDisabled,
    MerchantRoleRequired,
    SecretKeyRequired,
    Unauthenticated,
    Unavailable,
)
from services.common.versions import LATEST

# Bounds memory when many distinct keys are tried.
CACHE_ENTRIES_MAX = 10_000
# Unknown and revoked keys are remembered briefly too, so a flood of them stays cheap.
NEGATIVE_TTL_S = 2.0
# A merchant user's session token (services/admin/users.py issues them).
USER_SESSION_TOKEN_PREFIX = "pmu_"  # noqa: S105 - a token's type tag, not a token
USER_SESSION_TOKEN_LENGTH_MAX = 128
# The header a session's calls name their mode with; keys carry their own mode.
MODE_HEADER = "paymesh-mode"
MODES = ("test", "live")
# What a merchant user's role may call beyond reading (methods named Get*, List*, Search*,
# Watch*): developers manage webhook endpoints and API keys; admins may call anything.
READ_METHOD_PREFIXES = ("Get", "List", "Search", "Watch")
DEVELOPER_WRITES = frozenset(
    {
        "paymesh.webhook.v1.WebhookService",
        "/paymesh.admin.v1.AccountService/CreateApiKey",
        "/paymesh.admin.v1.AccountService/RollApiKey",
        "/paymesh.admin.v1.AccountService/RevokeApiKey",
    }
)
# What any signed-in user may call, whatever the role.
ANY_ROLE = frozenset({"/paymesh.admin.v1.AccountService/EndSession"})


class AuthPolicy(enum.Enum):
    """What a method requires of its caller."""

    NONE = "none"
    SECRET_KEY = "secret_key"  # noqa: S105 - a policy name, not a secret
    ANY_KEY = "any_key"  # secret, or publishable where the method checks a client secret
    # The key is optional (the hosted checkout page has none); a key that is given must be
    # valid. The method itself checks the object's client secret unless the caller is a secret
    # key of the owning merchant.
    CLIENT_SECRET = "client_secret"  # noqa: S105 - a policy name, not a secret
    # Admin methods: an operator session (never a merchant key); WRITE also needs the
    # "operator" role. The admin service provides the OperatorAuthenticator that checks them.
    OPERATOR_SESSION = "operator_session"
    OPERATOR_WRITE = "operator_write"
    # A merchant user's own account (services/admin/account.py): a session token, never a key.
    USER_SESSION = "user_session"


@dataclass(frozen=True)
class Principal:
    """The merchant (and mode) a call is made for."""

    merchant_id: str
    mode: str
    kind: str
    key_id: str
    fee_bps: int
    fee_fixed: int
    merchant_name: str
    api_version: str = LATEST
    # For a merchant user's session ("session" kind): the role, and the user.
    role: str = ""
    user_id: str = ""

    @property
    def livemode(self) -> bool:
        """Whether the call is in live mode."""
        return self.mode == "live"


def role_allows(role: str, method: str) -> bool:
    """Whether a merchant user with `role` may call `method` ("/pkg.Service/Method")."""
    service, _, name = method.lstrip("/").partition("/")
    if role == "admin" or name.startswith(READ_METHOD_PREFIXES) or method in ANY_ROLE:
        return True
    return role == "developer" and (service in DEVELOPER_WRITES or method in DEVELOPER_WRITES)


def check_role(principal: Principal, method: str) -> None:
    """MerchantRoleRequired when a merchant user's role does not allow the method."""
    if principal.kind == "session" and not role_allows(principal.role, method):
        raise MerchantRoleRequired(
            f"a merchant user with the {principal.role!r} role may not call this method"
        )


def is_user_session_token(credential: str | None) -> bool:
    """Whether a bearer credential is a merchant user's session token (not an API key)."""
    return bool(credential) and credential.startswith(USER_SESSION_TOKEN_PREFIX)  # type: ignore[union-attr]


def mode_from_metadata(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    """The mode a session's call asks for (`Paymesh-Mode`), "test" when unsaid."""
    for name, value in metadata or ():
        if name == MODE_HEADER and isinstance(value, str):
            mode = value.strip().lower()
            if mode not in MODES:
                raise InvalidRequest("the Paymesh-Mode header must be 'test' or 'live'")
            return mode
    return "test"


principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)


def current_principal() -> Principal:
    """The principal of the call being served."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("no API key was provided")
    return principal


def optional_principal() -> Principal | None:
    """The principal of the call being served, or None when it came without a key."""
    return principal_var.get()


@dataclass(frozen=True)
class OperatorPrincipal:
    """The operator (and session) an admin call is made by, with where it came from."""

    operator_id: str
    email: str
    role: str
    session_id: str
    client_ip: str
    user_agent: str


operator_var: contextvars.ContextVar[OperatorPrincipal | None] = contextvars.ContextVar(
    "operator", default=None
)


def current_operator() -> OperatorPrincipal:
    """The operator of the admin call being served."""
    operator = operator_var.get()
    if operator is None:
        raise Unauthenticated("an operator session is required")
    return operator


class OperatorAuthenticator(Protocol):
    """Checks operator sessions for OPERATOR_* policies, and merchant users' sessions for
    USER_SESSION (implemented by the admin service, which owns both)."""

    async def authenticate_operator(
        self, metadata: tuple[tuple[str, str | bytes], ...], policy: AuthPolicy
    ) -> OperatorPrincipal:
        """The operator for the call's credentials, or Unauthenticated / PermissionDenied."""
        ...

    async def authenticate_user(self, metadata: tuple[tuple[str, str | bytes], ...]) -> Principal:
        """The merchant user's principal for the call's session token, or Unauthenticated /
        PermissionDenied (API keys and operator sessions are refused)."""
        ...


def key_from_metadata(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The API key from `x-api-key` or `authorization: Bearer`, if any."""
    for name, value in metadata or ():
        if isinstance(value, bytes):
            continue
        if name == "x-api-key":
            return value.strip()
        if name == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return None


class ApiKeyAuthenticator:
    """Resolves keys through the admin service, with a short cache."""

    def __init__(self, channel: grpc.aio.Channel, *, ttl_s: float, timeout_s: float) -> None:
        self._stub = admin_internal_pb2_grpc.AuthInternalServiceStub(channel)
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def cached(self, key: str | None, policy: AuthPolicy, mode: str = "") -> Principal | None:
        """The principal of a valid key while its cache entry lasts, without a remote call.

        None means "ask `authenticate`", which gives every refusal its error. `mode` is the
        mode a session token's call asks for (keys carry theirs).
        """
        if is_user_session_token(key):
            cache_key = _session_cache_key(key, mode)  # type: ignore[arg-type]
        else:
            parsed = parse_key(key) if key else None
            if parsed is None or (policy is AuthPolicy.SECRET_KEY and parsed.kind != "secret"):
                return None
            cache_key = parsed.key_hash
        cached = self._cache.get(cache_key)
        if cached is None or cached[0] <= time.monotonic():
            return None
        return cached[1]

    async def authenticate(self, key: str | None, policy: AuthPolicy, mode: str = "") -> Principal:
        """The principal for `key` (or a session token in `mode`), or Unauthenticated /
        PermissionDenied."""
        if not key:
            raise Unauthenticated("no API key was provided")
        if is_user_session_token(key):
            if len(key) > USER_SESSION_TOKEN_LENGTH_MAX:
                raise Unauthenticated("the session token is malformed")
            cache_key = _session_cache_key(key, mode)
        else:
            parsed = parse_key(key)
            if parsed is None:
                raise Unauthenticated("the API key is malformed")
            if policy is AuthPolicy.SECRET_KEY and parsed.kind != "secret":
                raise SecretKeyRequired("this call needs a secret key")
            cache_key = parsed.key_hash
        now = time.monotonic()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            principal = await self._resolve(key, mode)
            ttl_s = self._ttl_s if principal is not None else NEGATIVE_TTL_S
            if len(self._cache) >= CACHE_ENTRIES_MAX:
                self._cache.clear()
            self._cache[cache_key] = (now + ttl_s, principal)
        if principal is None:
            raise Unauthenticated("the API key (or session) is unknown, revoked or expired")
        return principal

    async def _resolve(self, key: str, mode: str) -> Principal | None:
        try:
            reply: admin_internal_pb2.Principal = await self._stub.AuthenticateApiKey(
                admin_internal_pb2.AuthenticateApiKeyRequest(key=key, mode=mode),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                return None
            if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                # A session asking for live mode on a test-only merchant.
                raise LiveModeDisabled(error.details() or "live mode is not open") from error
            raise Unavailable("cannot check the API key right now") from error
        return Principal(
            merchant_id=reply.merchant_id,
            mode=reply.mode,
            kind=reply.kind,
            key_id=reply.key_id,
            fee_bps=reply.fee_bps,
            fee_fixed=reply.fee_fixed,
            merchant_name=reply.merchant_name,
            api_version=reply.api_version or LATEST,
            role=reply.role,
            user_id=reply.user_id,
        )


def _session_cache_key(token: str, mode: str) -> str:
    return hashlib.sha256(f"{mode}:{token}".encode()).hexdigest()
