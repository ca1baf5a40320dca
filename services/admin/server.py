"""The admin service: operators, merchants and keys, operators' views, and API-key resolution.

Two gRPC services: `AdminService` (the dashboard's API, behind operator sessions) and
`AuthInternalService` (API keys for the other services' interceptors; never routed by Envoy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from paymesh.admin.v1 import (
    account_pb2_grpc,
    admin_internal_pb2,
    admin_internal_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
)
from paymesh.ledger.v1 import ledger_internal_pb2
from paymesh.payment.v1 import payment_internal_pb2, payment_pb2
from paymesh.webhook.v1 import webhook_internal_pb2
from sqlalchemy.orm import Session, sessionmaker

from services.admin import audit, merchants, operators, reconciliation, users
from services.admin import sessions as operator_sessions
from services.admin.access import LoginThrottle, SessionAuthenticator, client_info
from services.admin.account import (
    AccountServicer,
    api_key_to_proto,
    invite_to_proto,
    list_users,
    merchant_to_proto,
    timestamp,
)
from services.admin.errors import DependencyUnavailable, InvalidCredentials, SessionInvalid
from services.admin.models import KEYS, AuditEntry, ReconciliationRun
from services.admin.views import RECONCILE_TIMEOUT_S, RemoteServices
from services.common import idempotency, pages
from services.common.auth import (
    MODES,
    AuthPolicy,
    OperatorPrincipal,
    current_operator,
    is_user_session_token,
)
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.errors import InvalidArgument, Unauthenticated
from services.common.money import AMOUNT_MAX, normalize_currency
from services.common.server import ServiceSpec
from services.common.service_main import run_service
from services.common.settings import Settings

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)
R = TypeVar("R")
ADMIN_SERVICE = "paymesh.admin.v1.AdminService"
ACCOUNT_SERVICE = "paymesh.admin.v1.AccountService"
# Methods that change something: viewers may not call them.
WRITE_METHODS = (
    "CreateMerchant",
    "UpdateMerchantFees",
    "CreateApiKey",
    "RevokeApiKey",
    "InviteMerchantUser",
    "RefundPayment",
    "ReplayWebhook",
    "ReplayWebhooks",
    "Reconcile",
)
EMAIL_LENGTH_MAX = 320
PASSWORD_LENGTH_MAX = 1024
ID_LENGTH_MAX = 200
REPLAY_LIMIT_MAX = 1000
TIMELINE_BUCKETS_MAX = 1000
GRANULARITY_S = {"HOUR": 3600, "DAY": 86400}
REFUND_REASONS = ("", "duplicate", "fraudulent", "requested_by_customer")


def _actor(operator: OperatorPrincipal) -> audit.Actor:
    return audit.Actor(
        operator_id=operator.operator_id,
        email=operator.email,
        client_ip=operator.client_ip,
        user_agent=operator.user_agent,
    )


def _audit(
    session: Session,
    operator: OperatorPrincipal,
    action: str,
    target_id: str,
    details: dict[str, str],
) -> None:
    audit.record(
        session, actor=_actor(operator), action=action, target_id=target_id, details=details
    )


def _metadata(context: Context) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(context.invocation_metadata() or ())  # type: ignore[arg-type]


def operator_refund_key(operator_id: str, key: str) -> str:
    """The key an operator's refund carries to the payment service, scoped to the operator.

    A key long enough that the scoped one would pass the 255-character limit is carried as its
    SHA-256 instead, so every key the header accepts here is accepted there too.
    """
    scoped = f"admin:{operator_id}:{key}"
    if len(scoped) <= idempotency.KEY_LENGTH_MAX:
        return scoped
    return f"admin:{operator_id}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _required_id(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument.field(field, "is required")
    if len(value) > ID_LENGTH_MAX:
        raise InvalidArgument.field(field, f"must be at most {ID_LENGTH_MAX} characters")
    return value.strip()


def _check_page_size(page_size: int) -> None:
    pages.page_size(page_size)


def audit_entry_to_proto(entry: AuditEntry) -> admin_pb2.AuditEntry:
    """One audit-log line as the admin API shows it."""
    return admin_pb2.AuditEntry(
        id=str(entry.id),
        create_time=timestamp(entry.create_time),
        operator_id=entry.operator_id,
        operator_email=entry.operator_email,
        action=entry.action,
        target_id=entry.target_id,
        client_ip=entry.client_ip,
        user_agent=entry.user_agent,
        details={str(k): str(v) for k, v in entry.details.items()},
    )


def run_to_proto(run: ReconciliationRun) -> admin_pb2.ReconciliationRun:
    """A kept reconciliation run as the admin API shows it."""
    return admin_pb2.ReconciliationRun(
        id=run.id,
        operator_id=run.operator_id,
        create_time=timestamp(run.create_time),
        mismatch_count=run.mismatch_count,
        report=reconciliation.report_of(run),
    )


class AuthInternalServicer(admin_internal_pb2_grpc.AuthInternalServiceServicer):
    """Resolves API keys, and merchant users' session tokens, for the other services."""

    def __init__(
        self, sessions: sessionmaker[Session], authenticator: SessionAuthenticator
    ) -> None:
        self._sessions = sessions
        self._authenticator = authenticator

    def _authenticate(self, key: str) -> admin_internal_pb2.Principal:
        with transaction(self._sessions) as session:
            found = merchants.authenticate_api_key(session, key)
            if found is None:
                raise Unauthenticated("the API key is unknown or revoked")
            api_key, merchant = found
            return admin_internal_pb2.Principal(
                merchant_id=merchant.id,
                mode=api_key.mode,
                kind=api_key.kind,
                key_id=api_key.id,
                fee_bps=merchant.fee_bps,
                fee_fixed=merchant.fee_fixed,
                merchant_name=merchant.name,
                api_version=merchant.api_version,
            )

    async def AuthenticateApiKey(
        self,
        request: admin_internal_pb2.AuthenticateApiKeyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_internal_pb2.Principal:
        """Resolves one key, or one session token in the mode asked for."""
        if is_user_session_token(request.key):
            if request.mode not in ("", *MODES):
                raise InvalidArgument.field("mode", "must be 'test' or 'live'")
            user = await self._authenticator.resolve_user(request.key, request.mode)
            # The kit's Principal and the message have the same fields, by name.
            return admin_internal_pb2.Principal(**dataclasses.asdict(user))
        return await asyncio.to_thread(self._authenticate, request.key)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """The operators' API; the interceptor has checked the session and role before each call."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        authenticator: SessionAuthenticator,
        throttle: LoginThrottle,
        remote: RemoteServices,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._authenticator = authenticator
        self._throttle = throttle
        self._remote = remote
        self._tokens = pages.PageTokens(settings.require_secret("page_token_key"))
        # Responses that show a secret (an API key, a stream token) are stored sealed.
        self._idempotent = idempotency.Runner(
            sessions,
            settings,
            KEYS,
            secret=settings.require_secret("secret_encryption_key"),
            sealed=True,
        )

    async def _write(
        self,
        context: Context,
        operation: str,
        request: Message,
        *,
        work: Callable[[Session], M],
        response_type: type[M],
    ) -> M:
        """A write of this service's own rows, under the caller's Idempotency-Key if any.

        Keys are the operator's (an operator acts across modes: `livemode` is false); the key,
        the work, its audit line and the stored response commit in one transaction.
        """
        key = idempotency.key_of(context)
        result = await asyncio.to_thread(
            self._idempotent.run,
            owner=current_operator().operator_id,
            livemode=False,
            operation=operation,
            key=key,
            request=request,
            work=work,
            parse=response_type.FromString,
        )
        return idempotency.answer(result)

    async def _remote_write(
        self,
        context: Context,
        operation: str,
        request: Message,
        *,
        key: str | None,
        call: Callable[[], Awaitable[R]],
        finish: Callable[[Session, R], M],
        response_type: type[M],
        call_timeout_s: float | None = None,
    ) -> M:
        """A write through another service (`call`), then its audit line here (`finish`).

        Under a key the call is made once per key (`Runner.run_remote`); a process that dies
        after the call and before `finish` leaves the key claimed until the lock timeout, after
        which a retry calls again: the refund carries a key derived from this one, and
        replays and reconciliations are safe to repeat.
        """
        result = await self._idempotent.run_remote(
            owner=current_operator().operator_id,
            livemode=False,
            operation=operation,
            key=key,
            request=request,
            call=call,
            finish=finish,
            parse=response_type.FromString,
            call_timeout_s=call_timeout_s or self._remote.timeout_s,
        )
        return idempotency.answer(result)

    # Sessions.

    def _login(
        self, email: str, password: str, client_ip: str, user_agent: str
    ) -> admin_pb2.LoginResponse:
        self._throttle.check(email, client_ip)
        try:
            with transaction(self._sessions) as session:
                issued = operator_sessions.login(
                    session,
                    email=email,
                    password=password,
                    client_ip=client_ip,
                    ttl_s=self._settings.admin_session_ttl_s,
                )
                actor = audit.Actor(
                    issued.operator.id, issued.operator.email, client_ip, user_agent
                )
                audit.record(session, actor=actor, action="login", target_id=issued.record.id)
                return admin_pb2.LoginResponse(
                    session_token=issued.token,
                    expire_time=timestamp(issued.record.expire_time),
                    role=issued.operator.role,
                )
        except InvalidCredentials:
            self._throttle.failed(email, client_ip)
            with transaction(self._sessions) as session:
                known = operators.find_by_email(session, email)
                actor = audit.Actor(known.id if known else "", email, client_ip, user_agent)
                audit.record(session, actor=actor, action="login_failed")
            raise

    async def Login(
        self, request: admin_pb2.LoginRequest, context: Context
    ) -> admin_pb2.LoginResponse:
        """Exchanges an email and password for a session token."""
        email = request.email.strip().lower()
        if not email or len(email) > EMAIL_LENGTH_MAX:
            raise InvalidArgument.field("email", "is required (an operator's email address)")
        if not request.password or len(request.password) > PASSWORD_LENGTH_MAX:
            raise InvalidArgument.field("password", "is required")
        client = client_info(_metadata(context))
        return await asyncio.to_thread(
            self._login, email, request.password, client.ip, client.user_agent
        )

    def _logout(self, operator: OperatorPrincipal) -> admin_pb2.LogoutResponse:
        with transaction(self._sessions) as session:
            operator_sessions.logout(session, session_id=operator.session_id)
            audit.record(
                session, actor=_actor(operator), action="logout", target_id=operator.session_id
            )
        return admin_pb2.LogoutResponse()

    async def Logout(
        self, request: admin_pb2.LogoutRequest, context: Context
    ) -> admin_pb2.LogoutResponse:
        """Ends the caller's session."""
        return await asyncio.to_thread(self._logout, current_operator())

    def _stream_token(self, session: Session, operator: OperatorPrincipal) -> admin_pb2.StreamToken:
        issued = operator_sessions.create_stream_token(
            session,
            parent_id=operator.session_id,
            ttl_s=self._settings.admin_stream_token_ttl_s,
            client_ip=operator.client_ip,
        )
        return admin_pb2.StreamToken(
            stream_token=issued.token, expire_time=timestamp(issued.record.expire_time)
        )

    async def CreateStreamToken(
        self, request: admin_pb2.CreateStreamTokenRequest, context: Context
    ) -> admin_pb2.StreamToken:
        """Issues a token that opens the overview stream only."""
        operator = current_operator()
        return await self._write(
            context,
            "create_stream_token",
            request,
            work=lambda session: self._stream_token(session, operator),
            response_type=admin_pb2.StreamToken,
        )

    # Merchants and keys.

    def _create_merchant(
        self,
        session: Session,
        operator: OperatorPrincipal,
        request: admin_pb2.CreateMerchantRequest,
    ) -> admin_pb2.Merchant:
        options: dict[str, int] = {}
        if request.HasField("fee_bps"):
            options["fee_bps"] = request.fee_bps
        if request.HasField("fee_fixed"):
            options["fee_fixed"] = request.fee_fixed
        merchant = merchants.create_merchant(session, name=request.name, **options)
        session.refresh(merchant)
        audit.record(
            session,
            actor=_actor(operator),
            action="merchant.create",
            target_id=merchant.id,
            details={
                "name": merchant.name,
                "fee_bps": str(merchant.fee_bps),
                "fee_fixed": str(merchant.fee_fixed),
            },
        )
        return merchant_to_proto(merchant)

    async def CreateMerchant(
        self, request: admin_pb2.CreateMerchantRequest, context: Context
    ) -> admin_pb2.Merchant:
        """Creates a merchant."""
        operator = current_operator()
        return await self._write(
            context,
            "create_merchant",
            request,
            work=lambda session: self._create_merchant(session, operator, request),
            response_type=admin_pb2.Merchant,
        )

    def _get_merchant(self, merchant_id: str) -> admin_pb2.Merchant:
        with transaction(self._sessions) as session:
            return merchant_to_proto(merchants.get_merchant_or_raise(session, merchant_id))

    async def GetMerchant(
        self, request: admin_pb2.GetMerchantRequest, context: Context
    ) -> admin_pb2.Merchant:
        """Returns one merchant."""
        return await asyncio.to_thread(self._get_merchant, _required_id(request.id, "id"))

    def _list_merchants(
        self, request: admin_pb2.ListMerchantsRequest
    ) -> admin_pb2.ListMerchantsResponse:
        with transaction(self._sessions) as session:
            rows, token = merchants.list_merchants(
                session,
                tokens=self._tokens,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return admin_pb2.ListMerchantsResponse(
                merchants=[merchant_to_proto(m) for m in rows], **pages.next_page(token)
            )

    async def ListMerchants(
        self, request: admin_pb2.ListMerchantsRequest, context: Context
    ) -> admin_pb2.ListMerchantsResponse:
        """Lists merchants, newest first."""
        return await asyncio.to_thread(self._list_merchants, request)

    def _update_fees(
        self,
        session: Session,
        operator: OperatorPrincipal,
        request: admin_pb2.UpdateMerchantFeesRequest,
    ) -> admin_pb2.Merchant:
        before = merchants.get_merchant_or_raise(session, request.id)
        old_bps, old_fixed = before.fee_bps, before.fee_fixed
        merchant = merchants.update_fees(
            session,
            merchant_id=request.id,
            fee_bps=request.fee_bps,
            fee_fixed=request.fee_fixed,
        )
        audit.record(
            session,
            actor=_actor(operator),
            action="merchant.fees_update",
            target_id=merchant.id,
            details={
                "old_fee_bps": str(old_bps),
                "old_fee_fixed": str(old_fixed),
                "fee_bps": str(merchant.fee_bps),
                "fee_fixed": str(merchant.fee_fixed),
            },
        )
        return merchant_to_proto(merchant)

    async def UpdateMerchantFees(
        self, request: admin_pb2.UpdateMerchantFeesRequest, context: Context
    ) -> admin_pb2.Merchant:
        """Changes a merchant's fee schedule."""
        _required_id(request.id, "id")
        operator = current_operator()
        return await self._write(
            context,
            "update_merchant_fees",
            request,
            work=lambda session: self._update_fees(session, operator, request),
            response_type=admin_pb2.Merchant,
        )

    def _create_api_key(
        self, session: Session, operator: OperatorPrincipal, request: admin_pb2.CreateApiKeyRequest
    ) -> admin_pb2.ApiKey:
        issued = merchants.create_api_key(
            session,
            merchant_id=request.merchant_id,
            mode=request.mode,  # type: ignore[arg-type]  # checked by the domain
            kind=request.kind,  # type: ignore[arg-type]
        )
        session.refresh(issued.api_key)
        audit.record(
            session,
            actor=_actor(operator),
            action="api_key.create",
            target_id=issued.api_key.id,
            details={
                "merchant_id": issued.api_key.merchant_id,
                "prefix": issued.api_key.prefix,
                "mode": issued.api_key.mode,
                "kind": issued.api_key.kind,
            },
        )
        return api_key_to_proto(issued.api_key, issued.key)

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: Context
    ) -> admin_pb2.ApiKey:
        """Issues a key; the response is the only time it is shown."""
        _required_id(request.merchant_id, "merchant_id")
        operator = current_operator()
        return await self._write(
            context,
            "create_api_key",
            request,
            work=lambda session: self._create_api_key(session, operator, request),
            response_type=admin_pb2.ApiKey,
        )

    def _list_api_keys(self, merchant_id: str) -> admin_pb2.ListApiKeysResponse:
        with transaction(self._sessions) as session:
            keys = merchants.list_api_keys(session, merchant_id=merchant_id)
            return admin_pb2.ListApiKeysResponse(api_keys=[api_key_to_proto(k) for k in keys])

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: Context
    ) -> admin_pb2.ListApiKeysResponse:
        """Lists a merchant's keys by prefix."""
        merchant_id = _required_id(request.merchant_id, "merchant_id")
        return await asyncio.to_thread(self._list_api_keys, merchant_id)

    # Merchant users.

    def _invite_user(
        self,
        session: Session,
        operator: OperatorPrincipal,
        request: admin_pb2.InviteMerchantUserRequest,
    ) -> admin_pb2.Invite:
        issued = users.invite(
            session,
            merchant_id=request.merchant_id,
            email=request.email,
            role=request.role,
            invited_by=operator.operator_id,
            ttl_s=self._settings.merchant_invite_ttl_s,
        )
        session.refresh(issued.invite)
        _audit(
            session,
            operator,
            "merchant_user.invite",
            issued.invite.id,
            {"merchant_id": request.merchant_id, "role": issued.invite.role},
        )
        return invite_to_proto(
            issued.invite, token=issued.token, public_url=self._settings.public_url()
        )

    async def InviteMerchantUser(
        self, request: admin_pb2.InviteMerchantUserRequest, context: Context
    ) -> admin_pb2.Invite:
        """Invites a person to a merchant's dashboard; the link is shown once."""
        _required_id(request.merchant_id, "merchant_id")
        if len(request.email) > EMAIL_LENGTH_MAX:
            raise InvalidArgument.field("email", f"must be at most {EMAIL_LENGTH_MAX} characters")
        operator = current_operator()
        return await self._write(
            context,
            "invite_merchant_user",
            request,
            work=lambda session: self._invite_user(session, operator, request),
            response_type=admin_pb2.Invite,
        )

    async def ListMerchantUsers(
        self, request: admin_pb2.ListMerchantUsersRequest, context: Context
    ) -> admin_pb2.ListUsersResponse:
        """A merchant's users and open invitations."""
        merchant_id = _required_id(request.merchant_id, "merchant_id")
        return await asyncio.to_thread(list_users, self._sessions, merchant_id)

    def _revoke_api_key(
        self, session: Session, operator: OperatorPrincipal, key_id: str
    ) -> admin_pb2.ApiKey:
        api_key = merchants.revoke_api_key(session, key_id=key_id)
        audit.record(
            session,
            actor=_actor(operator),
            action="api_key.revoke",
            target_id=api_key.id,
            details={"merchant_id": api_key.merchant_id, "prefix": api_key.prefix},
        )
        return api_key_to_proto(api_key)

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: Context
    ) -> admin_pb2.ApiKey:
        """Revokes a key; other services stop accepting it within their auth cache's TTL."""
        key_id = _required_id(request.id, "id")
        operator = current_operator()
        return await self._write(
            context,
            "revoke_api_key",
            request,
            work=lambda session: self._revoke_api_key(session, operator, key_id),
            response_type=admin_pb2.ApiKey,
        )

    # Analytics.

    async def GetOverview(
        self, request: admin_pb2.GetOverviewRequest, context: Context
    ) -> admin_pb2.Overview:
        """Payment and webhook figures per currency."""
        if (
            request.HasField("start_time")
            and request.HasField("end_time")
            and request.start_time.ToDatetime() >= request.end_time.ToDatetime()
        ):
            raise InvalidArgument.field("end_time", "must be after start_time")
        return await self._remote.overview(request)

    async def WatchOverview(
        self, request: admin_pb2.WatchOverviewRequest, context: Context
    ) -> AsyncIterator[admin_pb2.Overview]:
        """Sends the overview now, then whenever it changes; ends when the session does."""
        operator = await self._authenticator.authenticate_stream(_metadata(context))
        scope = admin_pb2.GetOverviewRequest(
            merchant_id=request.merchant_id, livemode=request.livemode
        )
        interval_s = self._settings.admin_watch_poll_interval_s
        keepalive_s = self._settings.admin_watch_keepalive_s
        last: admin_pb2.Overview | None = None
        last_sent = 0.0
        while True:
            try:
                overview = await self._remote.overview(scope)
            except DependencyUnavailable:
                if last is None:
                    raise
                # A dependency blinked: keep the stream, try again on the next tick.
                overview = last
            now = time.monotonic()
            if overview != last or now - last_sent >= keepalive_s:
                yield overview
                last, last_sent = overview, now
            await asyncio.sleep(interval_s)
            alive = await asyncio.to_thread(self._session_alive, operator.session_id)
            if not alive:
                raise SessionInvalid("the session ended")

    def _session_alive(self, session_id: str) -> bool:
        with transaction(self._sessions) as session:
            return operator_sessions.session_alive(session, session_id)

    async def GetRevenueTimeline(
        self, request: admin_pb2.GetRevenueTimelineRequest, context: Context
    ) -> admin_pb2.GetRevenueTimelineResponse:
        """Hourly or daily buckets in one currency."""
        granularity = request.granularity.upper()
        if granularity not in GRANULARITY_S:
            raise InvalidArgument.field("granularity", "must be 'HOUR' or 'DAY'")
        currency = normalize_currency(request.currency)
        if currency is None:
            raise InvalidArgument.field("currency", "must be an ISO 4217 currency code")
        if not request.HasField("start_time"):
            raise InvalidArgument.field("start_time", "is required")
        if not request.HasField("end_time"):
            raise InvalidArgument.field("end_time", "is required")
        span_s = request.end_time.seconds - request.start_time.seconds
        if span_s <= 0:
            raise InvalidArgument.field("end_time", "must be after start_time")
        if span_s / GRANULARITY_S[granularity] > TIMELINE_BUCKETS_MAX:
            raise InvalidArgument.field(
                "end_time", f"the range must hold at most {TIMELINE_BUCKETS_MAX} buckets"
            )
        reply = await self._remote.call(
            "payment",
            self._remote.payments.GetRevenueTimeline,
            payment_internal_pb2.GetRevenueTimelineRequest(
                granularity=granularity,
                currency=currency,
                start_time=request.start_time,
                end_time=request.end_time,
                merchant_id=request.merchant_id,
                livemode=request.livemode,
            ),
        )
        return admin_pb2.GetRevenueTimelineResponse(
            currency=currency,
            buckets=[
                admin_pb2.RevenueBucket(
                    start_time=bucket.start_time,
                    gross=bucket.gross,
                    fees=bucket.fees,
                    refunds=bucket.refunds,
                    succeeded_count=bucket.succeeded_count,
                    failed_count=bucket.failed_count,
                )
                for bucket in reply.buckets
            ],
        )

    async def SearchPayments(
        self, request: admin_pb2.SearchPaymentsRequest, context: Context
    ) -> admin_pb2.SearchPaymentsResponse:
        """Payments across merchants, newest first."""
        _check_page_size(request.page_size)
        reply = await self._remote.call(
            "payment",
            self._remote.payments.SearchPayments,
            payment_internal_pb2.SearchPaymentsRequest(
                merchant_id=request.merchant_id,
                status=request.status,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
        )
        return admin_pb2.SearchPaymentsResponse(
            payments=reply.payments, **pages.next_page(reply.next_page_token)
        )

    async def SearchDisputes(
        self, request: admin_pb2.SearchDisputesRequest, context: Context
    ) -> payment_pb2.ListDisputesResponse:
        """Disputes across merchants, newest first."""
        _check_page_size(request.page_size)
        reply = await self._remote.call(
            "payment",
            self._remote.payments.SearchDisputes,
            payment_internal_pb2.SearchDisputesRequest(
                payment_id=request.payment_id,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
        )
        return payment_pb2.ListDisputesResponse(
            disputes=reply.disputes, **pages.next_page(reply.next_page_token)
        )

    async def SearchPayouts(
        self, request: admin_pb2.SearchPayoutsRequest, context: Context
    ) -> payment_pb2.ListPayoutsResponse:
        """Payouts across merchants, newest first."""
        _check_page_size(request.page_size)
        reply: payment_pb2.ListPayoutsResponse = await self._remote.call(
            "payment",
            self._remote.payments.SearchPayouts,
            payment_internal_pb2.SearchPayoutsRequest(
                merchant_id=request.merchant_id,
                status=request.status,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
        )
        return payment_pb2.ListPayoutsResponse(
            payouts=reply.payouts, **pages.next_page(reply.next_page_token)
        )

    async def GetPaymentDetail(
        self, request: admin_pb2.GetPaymentDetailRequest, context: Context
    ) -> admin_pb2.PaymentDetail:
        """A payment with its refunds, events and ledger entries."""
        return await self._remote.payment_detail(_required_id(request.id, "id"))

    async def RefundPayment(
        self, request: admin_pb2.RefundPaymentRequest, context: Context
    ) -> payment_pb2.Refund:
        """Refunds through the payment service on the operator's behalf."""
        operator = current_operator()
        payment_id = _required_id(request.payment_id, "payment_id")
        # Absent refunds what is left; 0 is refused, never read as "everything".
        if request.HasField("amount") and not 0 < request.amount <= AMOUNT_MAX:
            raise InvalidArgument.field("amount", f"must be between 1 and {AMOUNT_MAX}")
        if request.reason not in REFUND_REASONS:
            raise InvalidArgument.field(
                "reason", "must be 'duplicate', 'fraudulent' or 'requested_by_customer'"
            )
        # Required, in the body field or the Idempotency-Key header.
        if request.idempotency_key:
            if len(request.idempotency_key) > idempotency.KEY_LENGTH_MAX:
                raise InvalidArgument.field(
                    "idempotency_key", f"must be at most {idempotency.KEY_LENGTH_MAX} characters"
                )
            key: str | None = request.idempotency_key
        else:
            key = idempotency.key_of(context)
        if not key:
            raise InvalidArgument.field(
                "idempotency_key", "is required (the field or the Idempotency-Key header)"
            )
        remote_request = payment_internal_pb2.CreateOperatorRefundRequest(
            payment_id=payment_id,
            amount=request.amount if request.HasField("amount") else None,
            reason=request.reason,
            # Two operators reusing a key never collide with each other's refunds.
            idempotency_key=operator_refund_key(operator.operator_id, key),
            operator_id=operator.operator_id,
        )

        async def call() -> payment_pb2.Refund:
            refund: payment_pb2.Refund = await self._remote.call(
                "payment", self._remote.payments.CreateOperatorRefund, remote_request
            )
            return refund

        def finish(session: Session, refund: payment_pb2.Refund) -> payment_pb2.Refund:
            _audit(
                session,
                operator,
                "payment.refund",
                payment_id,
                {
                    "refund_id": refund.id,
                    "amount": str(refund.amount),
                    "currency": refund.currency,
                    "merchant_id": refund.merchant_id,
                    "reason": refund.reason,
                },
            )
            return refund

        # The key may come in the body or the header: the request it names is the rest.
        keyed = admin_pb2.RefundPaymentRequest()
        keyed.CopyFrom(request)
        keyed.ClearField("idempotency_key")
        return await self._remote_write(
            context,
            "refund_payment",
            keyed,
            key=idempotency.validate_key(key),
            call=call,
            finish=finish,
            response_type=payment_pb2.Refund,
        )

    # Webhooks.

    async def ListFailedWebhooks(
        self, request: admin_pb2.ListFailedWebhooksRequest, context: Context
    ) -> admin_pb2.ListFailedWebhooksResponse:
        """The dead-letter list."""
        _check_page_size(request.page_size)
        reply = await self._remote.call(
            "webhook",
            self._remote.webhooks.ListFailedDeliveries,
            webhook_internal_pb2.ListFailedDeliveriesRequest(
                merchant_id=request.merchant_id,
                include_failing=request.include_failing,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
        )
        return admin_pb2.ListFailedWebhooksResponse(
            deliveries=reply.deliveries, **pages.next_page(reply.next_page_token)
        )

    async def ReplayWebhook(
        self, request: admin_pb2.ReplayWebhookRequest, context: Context
    ) -> webhook_internal_pb2.Delivery:
        """Re-sends one delivery by job id."""
        operator = current_operator()
        job_id = _required_id(request.job_id, "job_id")

        async def call() -> webhook_internal_pb2.Delivery:
            delivery: webhook_internal_pb2.Delivery = await self._remote.call(
                "webhook",
                self._remote.webhooks.ReplayDelivery,
                webhook_internal_pb2.ReplayDeliveryRequest(id=job_id),
            )
            return delivery

        def finish(
            session: Session, delivery: webhook_internal_pb2.Delivery
        ) -> webhook_internal_pb2.Delivery:
            _audit(
                session,
                operator,
                "webhook.replay",
                delivery.id,
                {
                    "job_id": job_id,
                    "event_id": delivery.event_id,
                    "merchant_id": delivery.merchant_id,
                    "endpoint_url": delivery.endpoint_url,
                },
            )
            return delivery

        return await self._remote_write(
            context,
            "replay_webhook",
            request,
            key=idempotency.key_of(context),
            call=call,
            finish=finish,
            response_type=webhook_internal_pb2.Delivery,
        )

    async def ReplayWebhooks(
        self, request: admin_pb2.ReplayWebhooksRequest, context: Context
    ) -> admin_pb2.ReplayWebhooksResponse:
        """Re-sends every dead delivery matching the filter."""
        operator = current_operator()
        if not 0 <= request.limit <= REPLAY_LIMIT_MAX:
            raise InvalidArgument.field("limit", f"must be between 1 and {REPLAY_LIMIT_MAX}")
        remote_request = webhook_internal_pb2.ReplayDeliveriesRequest(
            merchant_id=request.merchant_id,
            endpoint_id=request.endpoint_id,
            limit=request.limit,
        )
        if request.HasField("since"):
            remote_request.since.CopyFrom(request.since)

        async def call() -> webhook_internal_pb2.ReplayDeliveriesResponse:
            reply: webhook_internal_pb2.ReplayDeliveriesResponse = await self._remote.call(
                "webhook", self._remote.webhooks.ReplayDeliveries, remote_request
            )
            return reply

        def finish(
            session: Session, reply: webhook_internal_pb2.ReplayDeliveriesResponse
        ) -> admin_pb2.ReplayWebhooksResponse:
            _audit(
                session,
                operator,
                "webhook.replay_bulk",
                request.merchant_id or request.endpoint_id,
                {
                    "merchant_id": request.merchant_id,
                    "endpoint_id": request.endpoint_id,
                    "count": str(len(reply.delivery_ids)),
                    "delivery_ids": ",".join(reply.delivery_ids),
                },
            )
            return admin_pb2.ReplayWebhooksResponse(delivery_ids=reply.delivery_ids)

        return await self._remote_write(
            context,
            "replay_webhooks",
            request,
            key=idempotency.key_of(context),
            call=call,
            finish=finish,
            response_type=admin_pb2.ReplayWebhooksResponse,
        )

    async def ListDeliveryAttempts(
        self, request: admin_pb2.ListDeliveryAttemptsRequest, context: Context
    ) -> admin_pb2.ListDeliveryAttemptsResponse:
        """A delivery's attempts."""
        reply = await self._remote.call(
            "webhook",
            self._remote.webhooks.ListDeliveryAttempts,
            webhook_internal_pb2.ListDeliveryAttemptsRequest(
                delivery_id=_required_id(request.delivery_id, "delivery_id")
            ),
        )
        return admin_pb2.ListDeliveryAttemptsResponse(attempts=reply.attempts)

    # Reconciliation and the ledger.

    def _store_run(
        self,
        session: Session,
        operator: OperatorPrincipal,
        report: ledger_internal_pb2.ReconciliationReport,
    ) -> admin_pb2.ReconciliationRun:
        run = reconciliation.store_run(session, operator_id=operator.operator_id, report=report)
        audit.record(
            session,
            actor=_actor(operator),
            action="reconciliation.run",
            target_id=run.id,
            details={
                "start_time": run.start_time.isoformat(),
                "end_time": run.end_time.isoformat(),
                "mismatch_count": str(run.mismatch_count),
            },
        )
        return run_to_proto(run)

    async def Reconcile(
        self, request: admin_pb2.ReconcileRequest, context: Context
    ) -> admin_pb2.ReconciliationRun:
        """Runs the ledger's reconciliation and keeps the report."""
        operator = current_operator()
        reconciliation.check_range(
            request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None,
            request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None,
        )

        async def call() -> ledger_internal_pb2.ReconciliationReport:
            report: ledger_internal_pb2.ReconciliationReport = await self._remote.call(
                "ledger",
                self._remote.ledger.Reconcile,
                ledger_internal_pb2.ReconcileRequest(
                    start_time=request.start_time, end_time=request.end_time
                ),
                timeout_s=RECONCILE_TIMEOUT_S,
            )
            return report

        return await self._remote_write(
            context,
            "reconcile",
            request,
            key=idempotency.key_of(context),
            call=call,
            finish=lambda session, report: self._store_run(session, operator, report),
            response_type=admin_pb2.ReconciliationRun,
            call_timeout_s=RECONCILE_TIMEOUT_S,
        )

    def _list_runs(
        self, request: admin_pb2.ListReconciliationsRequest
    ) -> admin_pb2.ListReconciliationsResponse:
        with transaction(self._sessions) as session:
            runs, token = reconciliation.list_runs(
                session,
                tokens=self._tokens,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return admin_pb2.ListReconciliationsResponse(
                runs=[run_to_proto(run) for run in runs], **pages.next_page(token)
            )

    async def ListReconciliations(
        self, request: admin_pb2.ListReconciliationsRequest, context: Context
    ) -> admin_pb2.ListReconciliationsResponse:
        """Kept runs, newest first."""
        return await asyncio.to_thread(self._list_runs, request)

    def _get_run(self, run_id: str) -> admin_pb2.ReconciliationRun:
        with transaction(self._sessions) as session:
            return run_to_proto(reconciliation.get_run_or_raise(session, run_id))

    async def GetReconciliation(
        self, request: admin_pb2.GetReconciliationRequest, context: Context
    ) -> admin_pb2.ReconciliationRun:
        """One kept run."""
        return await asyncio.to_thread(self._get_run, _required_id(request.id, "id"))

    async def GetTrialBalance(
        self, request: admin_pb2.GetTrialBalanceRequest, context: Context
    ) -> ledger_internal_pb2.GetTrialBalanceResponse:
        """Debits and credits per currency."""
        remote_request = ledger_internal_pb2.GetTrialBalanceRequest()
        if request.HasField("as_of"):
            remote_request.as_of.CopyFrom(request.as_of)
        reply: ledger_internal_pb2.GetTrialBalanceResponse = await self._remote.call(
            "ledger", self._remote.ledger.GetTrialBalance, remote_request
        )
        return reply

    async def ListAccounts(
        self, request: admin_pb2.ListAccountsRequest, context: Context
    ) -> ledger_internal_pb2.ListAccountsResponse:
        """Ledger accounts with balances."""
        _check_page_size(request.page_size)
        reply: ledger_internal_pb2.ListAccountsResponse = await self._remote.call(
            "ledger",
            self._remote.ledger.ListAccounts,
            ledger_internal_pb2.ListAccountsRequest(
                owner=request.owner, page_size=request.page_size, page_token=request.page_token
            ),
        )
        return reply

    # The audit log.

    def _list_audit(self, request: admin_pb2.ListAuditLogRequest) -> admin_pb2.ListAuditLogResponse:
        with transaction(self._sessions) as session:
            entries, token = audit.list_entries(
                session,
                tokens=self._tokens,
                operator_id=request.operator_id,
                action=request.action,
                target_id=request.target_id,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return admin_pb2.ListAuditLogResponse(
                entries=[audit_entry_to_proto(e) for e in entries], **pages.next_page(token)
            )

    async def ListAuditLog(
        self, request: admin_pb2.ListAuditLogRequest, context: Context
    ) -> admin_pb2.ListAuditLogResponse:
        """The audit log, newest first."""
        return await asyncio.to_thread(self._list_audit, request)


def policies() -> dict[str, AuthPolicy]:
    """Every admin method needs a session; writes need the operator role; Login needs nothing.

    AccountService methods need a merchant user's session, except those that issue one."""
    result = {ADMIN_SERVICE: AuthPolicy.OPERATOR_SESSION}
    for method in WRITE_METHODS:
        result[f"/{ADMIN_SERVICE}/{method}"] = AuthPolicy.OPERATOR_WRITE
    result[f"/{ADMIN_SERVICE}/Login"] = AuthPolicy.NONE
    # EventSource sends no headers: the stream checks its query-string token itself.
    result[f"/{ADMIN_SERVICE}/WatchOverview"] = AuthPolicy.NONE
    # Merchant users' own account: their session; signing in (or up, or by invitation) is how
    # they get one.
    result[ACCOUNT_SERVICE] = AuthPolicy.USER_SESSION
    for method in ("CreateSession", "AcceptInvite", "SignUp"):
        result[f"/{ACCOUNT_SERVICE}/{method}"] = AuthPolicy.NONE
    return result


def build_spec(settings: Settings) -> ServiceSpec:
    """The admin service's servicers and their auth policies."""
    sessions = make_sessionmaker(
        make_engine(
            settings.require_database_url(),
            pool_size=settings.db_pool_size,
            application_name="paymesh-admin",
        )
    )
    authenticator = SessionAuthenticator(sessions)
    throttle = LoginThrottle(
        settings.require_redis_url(),
        failures_max=settings.admin_login_failures_max,
        window_s=settings.admin_login_failure_window_s,
    )
    user_throttle = LoginThrottle(
        settings.require_redis_url(),
        failures_max=settings.admin_login_failures_max,
        window_s=settings.admin_login_failure_window_s,
        key_prefix="paymesh:account:login",
    )

    def register(server: grpc.aio.Server) -> None:
        admin_internal_pb2_grpc.add_AuthInternalServiceServicer_to_server(
            AuthInternalServicer(sessions, authenticator), server
        )
        account_pb2_grpc.add_AccountServiceServicer_to_server(
            AccountServicer(settings=settings, sessions=sessions, throttle=user_throttle), server
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(
                settings=settings,
                sessions=sessions,
                authenticator=authenticator,
                throttle=throttle,
                # Channels are made here, inside the server's event loop.
                remote=RemoteServices(settings),
            ),
            server,
        )

    return ServiceSpec(
        name="admin",
        register=register,
        service_names=["paymesh.admin.v1.AuthInternalService", ADMIN_SERVICE, ACCOUNT_SERVICE],
        policies=policies(),
        operator_authenticator=authenticator,
    )


def main() -> None:
    """Runs the admin service until SIGTERM."""
    run_service("admin", build_spec, needs_api_keys=False)


if __name__ == "__main__":
    main()
