"""API-key authentication for merchant-facing RPCs, as a server interceptor's helper.

Keys are resolved by the admin service (which owns them) and cached for a few seconds here, so
a revoked key stops working within `auth_cache_ttl_s` everywhere. Malformed keys are refused
without any lookup.
"""

from __future__ import annotations

import contextvars
import enum
import time
from dataclasses import dataclass
from typing import Protocol

import grpc
from paymesh.admin.v1 import admin_internal_pb2, admin_internal_pb2_grpc

from services.common.api_keys import parse_key
from services.common.errors import SecretKeyRequired, Unauthenticated, Unavailable
from services.common.versions import LATEST

# Bounds memory when many distinct keys are tried.
CACHE_ENTRIES_MAX = 10_000
# Unknown and revoked keys are remembered briefly too, so a flood of them stays cheap.
NEGATIVE_TTL_S = 2.0


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

    @property
    def livemode(self) -> bool:
        """Whether the call is in live mode."""
        return self.mode == "live"


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
    """Checks operator sessions for OPERATOR_* policies (implemented by the admin service)."""

    async def authenticate_operator(
        self, metadata: tuple[tuple[str, str | bytes], ...], policy: AuthPolicy
    ) -> OperatorPrincipal:
        """The operator for the call's credentials, or Unauthenticated / PermissionDenied."""
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

    def cached(self, key: str | None, policy: AuthPolicy) -> Principal | None:
        """The principal of a valid key while its cache entry lasts, without a remote call.

        None means "ask `authenticate`", which gives every refusal its error.
        """
        parsed = parse_key(key) if key else None
        if parsed is None or (policy is AuthPolicy.SECRET_KEY and parsed.kind != "secret"):
            return None
        cached = self._cache.get(parsed.key_hash)
        if cached is None or cached[0] <= time.monotonic():
            return None
        return cached[1]

    async def authenticate(self, key: str | None, policy: AuthPolicy) -> Principal:
        """The principal for `key`, or Unauthenticated / PermissionDenied."""
        if not key:
            raise Unauthenticated("no API key was provided")
        parsed = parse_key(key)
        if parsed is None:
            raise Unauthenticated("the API key is malformed")
        if policy is AuthPolicy.SECRET_KEY and parsed.kind != "secret":
            raise SecretKeyRequired("this call needs a secret key")
        now = time.monotonic()
        cached = self._cache.get(parsed.key_hash)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            principal = await self._resolve(key)
            ttl_s = self._ttl_s if principal is not None else NEGATIVE_TTL_S
            if len(self._cache) >= CACHE_ENTRIES_MAX:
                self._cache.clear()
            self._cache[parsed.key_hash] = (now + ttl_s, principal)
        if principal is None:
            raise Unauthenticated("the API key is unknown or revoked")
        return principal

    async def _resolve(self, key: str) -> Principal | None:
        try:
            reply: admin_internal_pb2.Principal = await self._stub.AuthenticateApiKey(
                admin_internal_pb2.AuthenticateApiKeyRequest(key=key), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                return None
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
        )
