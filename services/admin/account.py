"""AccountService: a merchant's own account behind the merchant dashboard (users and API keys).

The interceptor has resolved the caller's session and checked its role (services/common/auth.py
`role_allows`) before a method runs; every query here is scoped to the caller's merchant, so a
user never reaches another merchant's users, invitations or keys (their ids answer not found).
Writes run under the caller's Idempotency-Key, with their audit line, in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from paymesh.admin.v1 import account_pb2, account_pb2_grpc, admin_pb2
from sqlalchemy.orm import Session, sessionmaker

from services.admin import audit, merchants, users
from services.admin.access import LoginThrottle, client_info
from services.admin.errors import InvalidCredentials, SignupDisabled
from services.admin.models import KEYS, ApiKey, Merchant, MerchantInvite, MerchantUser
from services.common import idempotency
from services.common.auth import MODES, Principal, current_principal
from services.common.db import transaction
from services.common.errors import InvalidArgument
from services.common.settings import Settings

Context = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)
CREDENTIAL_LENGTH_MAX = 1024


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def user_to_proto(user: MerchantUser) -> admin_pb2.User:
    """A merchant user as the APIs show it."""
    return admin_pb2.User(
        id=user.id,
        email=user.email,
        role=user.role,
        merchant_id=user.merchant_id,
        create_time=timestamp(user.create_time),
    )


def invite_to_proto(
    invite: MerchantInvite, *, token: str = "", public_url: str = ""
) -> admin_pb2.Invite:
    """An invitation as the APIs show it; the token and link only when it was just created."""
    return admin_pb2.Invite(
        id=invite.id,
        email=invite.email,
        role=invite.role,
        merchant_id=invite.merchant_id,
        token=token,
        accept_url=users.accept_url(public_url, token) if token else "",
        expire_time=timestamp(invite.expire_time),
        create_time=timestamp(invite.create_time),
    )


def merchant_to_proto(merchant: Merchant) -> admin_pb2.Merchant:
    """The merchant as the APIs show it."""
    return admin_pb2.Merchant(
        id=merchant.id,
        name=merchant.name,
        fee_bps=merchant.fee_bps,
        fee_fixed=merchant.fee_fixed,
        create_time=timestamp(merchant.create_time),
        api_version=merchant.api_version,
    )


def api_key_to_proto(api_key: ApiKey, key: str = "") -> admin_pb2.ApiKey:
    """The key as the APIs show it; `key` only when it was just created."""
    message = admin_pb2.ApiKey(
        id=api_key.id,
        merchant_id=api_key.merchant_id,
        mode=api_key.mode,
        kind=api_key.kind,
        prefix=api_key.prefix,
        key=key,
        create_time=timestamp(api_key.create_time),
    )
    if api_key.revoke_time is not None:
        message.revoke_time.CopyFrom(timestamp(api_key.revoke_time))
    if api_key.expire_time is not None:
        message.expire_time.CopyFrom(timestamp(api_key.expire_time))
    return message


def list_users(sessions: sessionmaker[Session], merchant_id: str) -> admin_pb2.ListUsersResponse:
    """A merchant's users and open invitations as the APIs show them (no tokens)."""
    with transaction(sessions) as session:
        found, invites = users.list_users(session, merchant_id=merchant_id)
        return admin_pb2.ListUsersResponse(
            users=[user_to_proto(user) for user in found],
            invites=[invite_to_proto(invite) for invite in invites],
        )


def _session_to_proto(issued: users.IssuedSession) -> account_pb2.AccountSession:
    return account_pb2.AccountSession(
        session_token=issued.token,
        expire_time=timestamp(issued.record.expire_time),
        user=user_to_proto(issued.user),
        merchant=merchant_to_proto(issued.merchant),
    )


def _credential(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if len(value) > CREDENTIAL_LENGTH_MAX:
        raise InvalidArgument.field(field, f"must be at most {CREDENTIAL_LENGTH_MAX} characters")
    return value


def _mode(mode: str, *, default: str | None) -> str:
    if not mode and default is not None:
        return default
    if mode not in MODES:
        raise InvalidArgument.field("mode", "must be 'test' or 'live'")
    return mode


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """The merchant users' own API."""

    def __init__(
        self, *, settings: Settings, sessions: sessionmaker[Session], throttle: LoginThrottle
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._throttle = throttle
        # Responses that show a secret (a key, an invitation's token) are stored sealed.
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
        work: Callable[[Session, Principal, audit.Actor], M],
        response_type: type[M],
    ) -> M:
        """A write under the user's Idempotency-Key (keys are the user's own), audited."""
        principal = current_principal()
        client = client_info(tuple(context.invocation_metadata() or ()))  # type: ignore[arg-type]

        def audited(session: Session) -> M:
            user = session.get(MerchantUser, principal.user_id)
            email = user.email if user is not None else ""
            actor = audit.Actor(principal.user_id, email, client.ip, client.user_agent)
            return work(session, principal, actor)

        result = await asyncio.to_thread(
            self._idempotent.run,
            owner=principal.user_id,
            livemode=False,
            operation=f"account.{operation}",
            key=idempotency.key_of(context),
            request=request,
            work=audited,
            parse=response_type.FromString,
        )
        return idempotency.answer(result)

    # Signing in and out.

    def _sign_in(self, email: str, password: str, client_ip: str) -> account_pb2.AccountSession:
        self._throttle.check(email, client_ip)
        try:
            with transaction(self._sessions) as session:
                return _session_to_proto(
                    users.sign_in(
                        session,
                        email=email,
                        password=password,
                        client_ip=client_ip,
                        ttl_s=self._settings.merchant_session_ttl_s,
                    )
                )
        except InvalidCredentials:
            self._throttle.failed(email, client_ip)
            raise

    async def CreateSession(
        self, request: account_pb2.CreateSessionRequest, context: Context
    ) -> account_pb2.AccountSession:
        """Signs a user in; failures per email and address are throttled."""
        email = _credential(request.email, "email")
        password = _credential(request.password, "password")
        client = client_info(tuple(context.invocation_metadata() or ()))  # type: ignore[arg-type]
        return await asyncio.to_thread(self._sign_in, email, password, client.ip)

    def _end(self, session_id: str) -> account_pb2.EndSessionResponse:
        with transaction(self._sessions) as session:
            users.end_session(session, session_id=session_id)
        return account_pb2.EndSessionResponse()

    async def EndSession(
        self, request: account_pb2.EndSessionRequest, context: Context
    ) -> account_pb2.EndSessionResponse:
        """Ends the caller's session."""
        return await asyncio.to_thread(self._end, current_principal().key_id)

    def _accept(self, token: str, password: str, client_ip: str) -> account_pb2.AccountSession:
        with transaction(self._sessions) as session:
            issued = users.accept(
                session,
                token=token,
                password=password,
                client_ip=client_ip,
                ttl_s=self._settings.merchant_session_ttl_s,
            )
            actor = audit.Actor(issued.user.id, issued.user.email, client_ip, "")
            audit.record(
                session,
                actor=actor,
                action="account.invite.accept",
                target_id=issued.user.id,
                details={"merchant_id": issued.merchant.id, "role": issued.user.role},
            )
            return _session_to_proto(issued)

    async def AcceptInvite(
        self, request: account_pb2.AcceptInviteRequest, context: Context
    ) -> account_pb2.AccountSession:
        """Creates the invited user and signs them in."""
        token = _credential(request.token, "token")
        password = _credential(request.password, "password")
        client = client_info(tuple(context.invocation_metadata() or ()))  # type: ignore[arg-type]
        return await asyncio.to_thread(self._accept, token, password, client.ip)

    def _sign_up(
        self, request: account_pb2.SignUpRequest, client_ip: str
    ) -> account_pb2.AccountSession:
        with transaction(self._sessions) as session:
            issued = users.sign_up(
                session,
                email=request.email,
                password=request.password,
                business_name=request.business_name,
                client_ip=client_ip,
                ttl_s=self._settings.merchant_session_ttl_s,
            )
            actor = audit.Actor(issued.user.id, issued.user.email, client_ip, "")
            audit.record(
                session, actor=actor, action="account.signup", target_id=issued.merchant.id
            )
            return _session_to_proto(issued)

    async def SignUp(
        self, request: account_pb2.SignUpRequest, context: Context
    ) -> account_pb2.AccountSession:
        """A new test-mode merchant and its admin, where the platform allows it."""
        if not self._settings.merchant_signup:
            raise SignupDisabled("this platform does not allow signing up; ask an operator")
        _credential(request.email, "email")
        _credential(request.password, "password")
        _credential(request.business_name, "business_name")
        client = client_info(tuple(context.invocation_metadata() or ()))  # type: ignore[arg-type]
        return await asyncio.to_thread(self._sign_up, request, client.ip)

    # The account and its team.

    def _account(self, principal: Principal) -> account_pb2.Account:
        with transaction(self._sessions) as session:
            user = session.get(MerchantUser, principal.user_id)
            merchant = session.get(Merchant, principal.merchant_id)
            assert user is not None and merchant is not None, "the session was just resolved"
            return account_pb2.Account(
                user=user_to_proto(user), merchant=merchant_to_proto(merchant)
            )

    async def GetAccount(
        self, request: account_pb2.GetAccountRequest, context: Context
    ) -> account_pb2.Account:
        """The signed-in user and their merchant."""
        return await asyncio.to_thread(self._account, current_principal())

    async def ListUsers(
        self, request: account_pb2.ListUsersRequest, context: Context
    ) -> admin_pb2.ListUsersResponse:
        """The merchant's users and open invitations."""
        merchant_id = current_principal().merchant_id
        return await asyncio.to_thread(list_users, self._sessions, merchant_id)

    def _invite(
        self,
        session: Session,
        principal: Principal,
        actor: audit.Actor,
        request: account_pb2.InviteUserRequest,
    ) -> admin_pb2.Invite:
        issued = users.invite(
            session,
            merchant_id=principal.merchant_id,
            email=request.email,
            role=request.role,
            invited_by=principal.user_id,
            ttl_s=self._settings.merchant_invite_ttl_s,
        )
        session.refresh(issued.invite)
        audit.record(
            session,
            actor=actor,
            action="account.invite",
            target_id=issued.invite.id,
            details={"merchant_id": principal.merchant_id, "role": issued.invite.role},
        )
        return invite_to_proto(
            issued.invite, token=issued.token, public_url=self._settings.public_url()
        )

    async def InviteUser(
        self, request: account_pb2.InviteUserRequest, context: Context
    ) -> admin_pb2.Invite:
        """Invites a person; the link is shown once."""
        _credential(request.email, "email")
        return await self._write(
            context,
            "invite_user",
            request,
            work=lambda session, principal, actor: self._invite(session, principal, actor, request),
            response_type=admin_pb2.Invite,
        )

    def _update_user(
        self,
        session: Session,
        principal: Principal,
        actor: audit.Actor,
        request: account_pb2.UpdateUserRequest,
    ) -> admin_pb2.User:
        user = users.update_role(
            session, merchant_id=principal.merchant_id, user_id=request.id, role=request.role
        )
        audit.record(
            session,
            actor=actor,
            action="account.user.update",
            target_id=user.id,
            details={"merchant_id": principal.merchant_id, "role": user.role},
        )
        return user_to_proto(user)

    async def UpdateUser(
        self, request: account_pb2.UpdateUserRequest, context: Context
    ) -> admin_pb2.User:
        """Changes a user's role."""
        _credential(request.id, "id")
        return await self._write(
            context,
            "update_user",
            request,
            work=lambda session, principal, actor: self._update_user(
                session, principal, actor, request
            ),
            response_type=admin_pb2.User,
        )

    def _remove_user(
        self,
        session: Session,
        principal: Principal,
        actor: audit.Actor,
        request: account_pb2.RemoveUserRequest,
    ) -> admin_pb2.User:
        user = users.remove(session, merchant_id=principal.merchant_id, user_id=request.id)
        audit.record(
            session,
            actor=actor,
            action="account.user.remove",
            target_id=user.id,
            details={"merchant_id": principal.merchant_id},
        )
        return user_to_proto(user)

    async def RemoveUser(
        self, request: account_pb2.RemoveUserRequest, context: Context
    ) -> admin_pb2.User:
        """Removes a user and ends their sessions."""
        _credential(request.id, "id")
        return await self._write(
            context,
            "remove_user",
            request,
            work=lambda session, principal, actor: self._remove_user(
                session, principal, actor, request
            ),
            response_type=admin_pb2.User,
        )

    # API keys.

    def _list_keys(self, merchant_id: str, mode: str) -> admin_pb2.ListApiKeysResponse:
        with transaction(self._sessions) as session:
            keys = merchants.list_api_keys(session, merchant_id=merchant_id, mode=mode)
            return admin_pb2.ListApiKeysResponse(api_keys=[api_key_to_proto(k) for k in keys])

    async def ListApiKeys(
        self, request: account_pb2.AccountServiceListApiKeysRequest, context: Context
    ) -> admin_pb2.ListApiKeysResponse:
        """The merchant's keys in one mode."""
        mode = _mode(request.mode, default="test")
        return await asyncio.to_thread(self._list_keys, current_principal().merchant_id, mode)

    def _key_audit(
        self, session: Session, actor: audit.Actor, action: str, api_key: ApiKey, **more: str
    ) -> None:
        audit.record(
            session,
            actor=actor,
            action=action,
            target_id=api_key.id,
            details={
                "merchant_id": api_key.merchant_id,
                "prefix": api_key.prefix,
                "mode": api_key.mode,
                "kind": api_key.kind,
                **more,
            },
        )

    def _create_key(
        self,
        session: Session,
        principal: Principal,
        actor: audit.Actor,
        request: account_pb2.AccountServiceCreateApiKeyRequest,
    ) -> admin_pb2.ApiKey:
        issued = merchants.create_api_key(
            session,
            merchant_id=principal.merchant_id,
            mode=request.mode,  # type: ignore[arg-type]  # checked by the domain
            kind=request.kind,  # type: ignore[arg-type]
        )
        session.refresh(issued.api_key)
        self._key_audit(session, actor, "account.api_key.create", issued.api_key)
        return api_key_to_proto(issued.api_key, issued.key)

    async def CreateApiKey(
        self, request: account_pb2.AccountServiceCreateApiKeyRequest, context: Context
    ) -> admin_pb2.ApiKey:
        """Issues a key; the response is the only time it is shown."""
        return await self._write(
            context,
            "create_api_key",
            request,
            work=lambda session, principal, actor: self._create_key(
                session, principal, actor, request
            ),
            response_type=admin_pb2.ApiKey,
        )

    def _roll_key(
        self,
        session: Session,
        principal: Principal,
        actor: audit.Actor,
        request: account_pb2.RollApiKeyRequest,
    ) -> admin_pb2.ApiKey:
        issued = merchants.roll_api_key(
            session,
            key_id=request.id,
            merchant_id=principal.merchant_id,
            expire_in_s=request.expire_in_seconds,
        )
        session.refresh(issued.api_key)
        self._key_audit(session, actor, "account.api_key.roll", issued.api_key, replaces=request.id)
        return api_key_to_proto(issued.api_key, issued.key)

    async def RollApiKey(
        self, request: account_pb2.RollApiKeyRequest, context: Context
    ) -> admin_pb2.ApiKey:
        """Replaces a key; the old one works for the window asked for."""
        _credential(request.id, "id")
        return await self._write(
            context,
            "roll_api_key",
            request,
            work=lambda session, principal, actor: self._roll_key(
                session, principal, actor, request
            ),
            response_type=admin_pb2.ApiKey,
        )

    def _revoke_key(
        self,
        session: Session,
        principal: Principal,
        actor: audit.Actor,
        request: account_pb2.AccountServiceRevokeApiKeyRequest,
    ) -> admin_pb2.ApiKey:
        api_key = merchants.revoke_api_key(
            session, key_id=request.id, merchant_id=principal.merchant_id
        )
        session.flush()
        self._key_audit(session, actor, "account.api_key.revoke", api_key)
        return api_key_to_proto(api_key)

    async def RevokeApiKey(
        self, request: account_pb2.AccountServiceRevokeApiKeyRequest, context: Context
    ) -> admin_pb2.ApiKey:
        """Revokes a key at once."""
        _credential(request.id, "id")
        return await self._write(
            context,
            "revoke_api_key",
            request,
            work=lambda session, principal, actor: self._revoke_key(
                session, principal, actor, request
            ),
            response_type=admin_pb2.ApiKey,
        )
