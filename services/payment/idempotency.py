"""Idempotency keys (Stripe's semantics, the IETF Idempotency-Key draft's rules).

A key is scoped to (merchant, mode, operation). The operations that take one (create a payment,
create a refund) call nothing outside this database between taking the key and answering, so
the key, the work and the stored response share one transaction (`Runner.run`):

1. `claim` takes a transaction-level advisory lock on the key and, holding it, inserts the key
   (one statement: `INSERT ... SELECT ... WHERE pg_try_advisory_xact_lock(...) ON CONFLICT DO
   NOTHING RETURNING`). The lock is held until the transaction ends, so a request with the
   same key sent while the first runs does not get it and answers IDEMPOTENCY_KEY_IN_USE (409,
   safe to retry) at once, without waiting; once the first has committed, a retry reads what
   it left (below); if the first failed, its key went with its rollback and the retry runs.
2. The work runs in the same transaction and `complete` stores its response (state
   `completed`): the key, the payment or refund, its outbox rows and the response commit
   together or not at all.
3. A request that fails (bad input, a state that does not allow it) rolls back the whole
   transaction, its key with it, so errors are never replayed and the client may retry with
   the same key.

A key that exists answers: completed, same request -> its stored response (a replay); another
request -> IDEMPOTENCY_KEY_REUSED; expired but not swept yet -> free again. A key committed
`in_progress` can only come from an earlier version, which claimed keys in a transaction of
their own (during a rolling deploy, or left by a request that died): it answers
IDEMPOTENCY_KEY_IN_USE until `idempotency_lock_timeout_s` has passed, then this request takes
it over. Completed keys are kept `idempotency_key_ttl_s` (at least 24 h) and then swept.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from google.protobuf.message import Message
from sqlalchemy import Table, and_, bindparam, func, select, text, update
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
    """A key this request holds, in its own open transaction."""

    scope: Scope


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


# The hot path's two statements, built once with bind parameters: building them per call
# (the values coerced, the cache key computed) cost a third of a create's CPU. They run on the
# session's connection, in its transaction, as Core statements (no ORM bulk evaluation).
_TABLE = cast(Table, IdempotencyKey.__table__)
# The key's row: its scope, bound by `_scope_params`.
_IS_KEY = and_(
    _TABLE.c.merchant_id == bindparam("w_merchant_id"),
    _TABLE.c.livemode == bindparam("w_livemode"),
    _TABLE.c.operation == bindparam("w_operation"),
    _TABLE.c.key == bindparam("w_key"),
)
# Tries the transaction-level advisory lock that marks this key's request as running (named
# by `_scope_params`); a transaction that holds it already gets it again.
_KEY_LOCK = func.pg_try_advisory_xact_lock(func.hashtextextended(bindparam("lock_name"), 0))
_CLAIM_COLUMNS = (
    "merchant_id",
    "livemode",
    "operation",
    "key",
    "request_hash",
    "state",
    "lock_time",
    "create_time",
    "expire_time",
)
# Take the key's advisory lock and, holding it, insert the key. Without the lock (another
# request with this key is running) nothing is inserted and nothing waits.
_CLAIM = (
    insert(_TABLE)
    .from_select(
        list(_CLAIM_COLUMNS),
        select(
            *(bindparam(f"v_{name}", type_=_TABLE.c[name].type) for name in _CLAIM_COLUMNS)
        ).where(_KEY_LOCK),
    )
    .on_conflict_do_nothing()
    .returning(_TABLE.c.key)
)
_COMPLETE = (
    update(_TABLE)
    .where(_IS_KEY, _TABLE.c.state == "in_progress")
    .values(state="completed", response=bindparam("v_response"))
)


def _scope_params(scope: Scope) -> dict[str, str | bool]:
    """The bind parameters of `_IS_KEY` and `_KEY_LOCK` for this key."""
    lock_name = "\x1f".join(
        ("idempotency", scope.merchant_id, str(scope.livemode), scope.operation, scope.key)
    )
    return {
        "w_merchant_id": scope.merchant_id,
        "w_livemode": scope.livemode,
        "w_operation": scope.operation,
        "w_key": scope.key,
        "lock_name": lock_name,
    }


def _insert_claimed(session: Session, scope: Scope, values: dict[str, object]) -> bool:
    """Inserts the key as `values` when this transaction gets or holds its lock; whether it did."""
    inserted = session.connection().execute(
        _CLAIM, {**_scope_params(scope), **{f"v_{name}": v for name, v in values.items()}}
    )
    return inserted.first() is not None


def claim(
    session: Session,
    *,
    scope: Scope,
    fingerprint: str,
    ttl_s: float,
    lock_timeout_s: float,
) -> Claim | bytes:
    """Claims the key in the request's transaction, or returns the stored response to replay."""
    now = datetime.now(UTC)
    values = {
        "merchant_id": scope.merchant_id,
        "livemode": scope.livemode,
        "operation": scope.operation,
        "key": scope.key,
        "request_hash": fingerprint,
        "state": "in_progress",
        "lock_time": now,
        "create_time": now,
        "expire_time": now + timedelta(seconds=ttl_s),
    }
    if _insert_claimed(session, scope, values):
        return Claim(scope)
    row = session.scalars(
        select(IdempotencyKey).where(_IS_KEY).with_for_update(), _scope_params(scope)
    ).one_or_none()
    if row is None:
        if not session.scalar(select(_KEY_LOCK), _scope_params(scope)):
            # Its holder has not committed: the first request is still running.
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is in progress; retry shortly"
            )
        # The holder rolled back (its request failed) or the key was swept: it is free, and
        # this transaction holds its lock now. (A holder that committed just after the read
        # above leaves a row: the client's retry replays it.)
        if _insert_claimed(session, scope, values):
            return Claim(scope)
        raise IdempotencyKeyInUse("a request with this Idempotency-Key has just completed; retry")
    if row.expire_time <= now:
        # Expired but not swept yet: the key is free again.
        row.request_hash = fingerprint
        row.state = "in_progress"
        row.response = None
        row.create_time = now
        row.expire_time = now + timedelta(seconds=ttl_s)
        row.lock_time = now
        # Written now: `complete` updates the row with a Core statement, which does not flush.
        session.flush()
        return Claim(scope)
    if row.state == "in_progress":
        if row.lock_time > now - timedelta(seconds=lock_timeout_s):
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is in progress; retry shortly"
            )
        # The request that claimed it died before finishing: this one takes the key over.
        row.request_hash = fingerprint
        row.lock_time = now
        session.flush()
        return Claim(scope)
    if not hmac.compare_digest(row.request_hash, fingerprint):
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request",
            metadata={"idempotency_key": scope.key[:64]},
        )
    assert row.response is not None, "a completed key has a response (check constraint)"
    return row.response


def complete(session: Session, *, claim: Claim, response: bytes) -> None:
    """Stores the response in the transaction that claimed the key (it commits with the work)."""
    result = session.connection().execute(
        _COMPLETE, {**_scope_params(claim.scope), "v_response": response}
    )
    # The claim inserted or locked the row in this transaction: nobody else can change it.
    assert result.rowcount == 1, "the claimed key is held by this transaction"  # type: ignore[attr-defined]


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
        """The response and whether it is a replay; key, work and response commit as one."""
        with transaction(self._sessions) as session:
            if key is None:
                return work(session), False
            claimed = claim(
                session,
                scope=Scope(merchant_id, livemode, operation, key),
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
            response = work(session)
            complete(session, claim=claimed, response=response.SerializeToString())
            return response, False
