"""Idempotency keys (Stripe's semantics, the IETF Idempotency-Key draft's rules).

A key is scoped to (merchant, mode, operation). The first request claims it in a short
transaction of its own (`claim`), so a second request with the same key sees it at once and
answers IDEMPOTENCY_KEY_IN_USE instead of waiting. The request's work then runs in one
transaction that also stores the response (`complete`), together with the payment and its
outbox rows: either all of them commit or none. A request that fails (bad input, a state that
does not allow it) releases its claim (`release`), so errors are never replayed and the client
may retry with the same key. A claim whose request died is taken over after
`idempotency_lock_timeout_s`; completed keys are kept `idempotency_key_ttl_s` (at least 24 h)
and then swept.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import transaction
from services.common.errors import InvalidArgument
from services.common.settings import Settings
from services.payment.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from services.payment.models import IdempotencyKey

KEY_LENGTH_MAX = 255
HEADER = "idempotency-key"
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Scope:
    """Where a key lives: one merchant, one mode, one operation."""

    merchant_id: str
    livemode: bool
    operation: str
    key: str


@dataclass(frozen=True)
class Claim:
    """A key this request holds; `lock_time` tells it apart from a later taker-over."""

    scope: Scope
    lock_time: datetime


def validate_key(key: str) -> str:
    """The key, or InvalidArgument when it is empty, too long or not printable ASCII."""
    if not key or len(key) > KEY_LENGTH_MAX or not key.isascii() or not key.isprintable():
        raise InvalidArgument.field(
            "Idempotency-Key", f"must be 1 to {KEY_LENGTH_MAX} printable ASCII characters"
        )
    return key


def request_hash(*, secret: str, operation: str, body: bytes) -> str:
    """A keyed hash of the request: compares requests without storing their card data."""
    return hmac.new(secret.encode(), operation.encode() + b"\0" + body, hashlib.sha256).hexdigest()


def _where(scope: Scope):  # type: ignore[no-untyped-def]
    return (
        (IdempotencyKey.merchant_id == scope.merchant_id)
        & (IdempotencyKey.livemode == scope.livemode)
        & (IdempotencyKey.operation == scope.operation)
        & (IdempotencyKey.key == scope.key)
    )


def claim(
    sessions: sessionmaker[Session],
    *,
    scope: Scope,
    fingerprint: str,
    ttl_s: float,
    lock_timeout_s: float,
) -> Claim | bytes:
    """Claims the key for this request, or returns the stored response to replay."""
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        inserted = session.execute(
            insert(IdempotencyKey)
            .values(
                merchant_id=scope.merchant_id,
                livemode=scope.livemode,
                operation=scope.operation,
                key=scope.key,
                request_hash=fingerprint,
                state="in_progress",
                lock_time=now,
                create_time=now,
                expire_time=now + timedelta(seconds=ttl_s),
            )
            .on_conflict_do_nothing()
            .returning(IdempotencyKey.key)
        ).first()
        if inserted is not None:
            return Claim(scope, now)
        row = session.scalars(
            select(IdempotencyKey).where(_where(scope)).with_for_update()
        ).one_or_none()
        if row is None:  # swept between the insert and the select
            raise IdempotencyKeyInUse("a request with this Idempotency-Key is in progress")
        if row.expire_time <= now:
            # Expired but not swept yet: the key is free again.
            row.request_hash = fingerprint
            row.state = "in_progress"
            row.response = None
            row.create_time = now
            row.expire_time = now + timedelta(seconds=ttl_s)
            row.lock_time = now
            return Claim(scope, now)
        if row.state == "in_progress":
            if row.lock_time > now - timedelta(seconds=lock_timeout_s):
                raise IdempotencyKeyInUse(
                    "a request with this Idempotency-Key is in progress; retry shortly"
                )
            # The first request died before finishing: this one takes the key over.
            row.request_hash = fingerprint
            row.lock_time = now
            return Claim(scope, now)
        if not hmac.compare_digest(row.request_hash, fingerprint):
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request",
                metadata={"idempotency_key": scope.key[:64]},
            )
        assert row.response is not None, "a completed key has a response (check constraint)"
        return row.response


def complete(session: Session, *, claim: Claim, response: bytes) -> None:
    """Stores the response in the request's own transaction (so it commits with the work)."""
    result = session.execute(
        update(IdempotencyKey)
        .where(_where(claim.scope))
        .where(IdempotencyKey.state == "in_progress")
        .where(IdempotencyKey.lock_time == claim.lock_time)
        .values(state="completed", response=response)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        # Another request took the key over after ours was presumed dead; let it win.
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is in progress")


def release(sessions: sessionmaker[Session], *, claim: Claim) -> None:
    """Frees the key after a failed request, so nothing about the failure is kept."""
    with transaction(sessions) as session:
        session.execute(
            delete(IdempotencyKey)
            .where(_where(claim.scope))
            .where(IdempotencyKey.state == "in_progress")
            .where(IdempotencyKey.lock_time == claim.lock_time)
        )


def sweep_expired(session: Session, *, limit: int = 1000) -> int:
    """Deletes up to `limit` expired keys; returns how many."""
    result = session.execute(
        text(
            "DELETE FROM payment.idempotency_keys WHERE ctid IN ("
            " SELECT ctid FROM payment.idempotency_keys WHERE expire_time <= now()"
            " LIMIT :limit FOR UPDATE SKIP LOCKED)"
        ),
        {"limit": limit},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class Runner:
    """Runs a create method once per idempotency key and replays its stored response."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._hash_key = settings.require_secret("card_fingerprint_key")

    def run(
        self,
        *,
        merchant_id: str,
        livemode: bool,
        operation: str,
        key: str | None,
        request: Message,
        work: Callable[[Session], M],
        parse: Callable[[bytes], M],
    ) -> tuple[M, bool]:
        """The response and whether it is a replay; the work commits with the stored response."""
        if key is None:
            with transaction(self._sessions) as session:
                return work(session), False
        scope = Scope(merchant_id, livemode, operation, key)
        claimed = claim(
            self._sessions,
            scope=scope,
            fingerprint=request_hash(
                secret=self._hash_key,
                operation=operation,
                body=request.SerializeToString(deterministic=True),
            ),
            ttl_s=self._settings.idempotency_key_ttl_s,
            lock_timeout_s=self._settings.idempotency_lock_timeout_s,
        )
        if isinstance(claimed, bytes):
            return parse(claimed), True
        try:
            with transaction(self._sessions) as session:
                response = work(session)
                complete(session, claim=claimed, response=response.SerializeToString())
                return response, False
        except BaseException:
            release(self._sessions, claim=claimed)
            raise
