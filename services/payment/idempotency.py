"""Idempotency keys (Stripe's semantics, the IETF Idempotency-Key draft's rules).

A key is scoped to (merchant, mode, operation). The operations that take one (create, confirm,
capture and cancel a payment, create a refund) call nothing outside this database between
taking the key and answering, so the key, the work and the stored response share one
transaction (`Runner.run`):

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
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from sqlalchemy import Table, and_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import LoopPool, render, transaction
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


_IS_KEY_FOR_UPDATE = (
    select(
        _TABLE.c.request_hash,
        _TABLE.c.state,
        _TABLE.c.response,
        _TABLE.c.lock_time,
        _TABLE.c.create_time,
        _TABLE.c.expire_time,
    )
    .where(_IS_KEY)
    .with_for_update()
)
_TRY_LOCK = select(_KEY_LOCK.label("locked"))
# An expired key, or one an earlier version left `in_progress` past the lock timeout, taken
# over by this request (it holds the row's lock from `_IS_KEY_FOR_UPDATE`).
_TAKE_OVER = (
    update(_TABLE)
    .where(_IS_KEY)
    .values(
        request_hash=bindparam("v_request_hash"),
        state="in_progress",
        response=bindparam("v_response"),
        create_time=bindparam("v_create_time"),
        expire_time=bindparam("v_expire_time"),
        lock_time=bindparam("v_lock_time"),
    )
)
# Every statement of the claim and the completion, rendered once for psycopg's cursors.
SQL = {
    "claim": render(_CLAIM),
    "read": render(_IS_KEY_FOR_UPDATE),
    "try_lock": render(_TRY_LOCK),
    "take_over": render(_TAKE_OVER),
    "complete": render(_COMPLETE),
}
# One step of a claim: the statement's name in SQL and its parameters. The driver sends back
# the statement's first row (None when it returned none).
Step = tuple[str, dict[str, Any]]
Steps = Generator[Step, Any, "Claim | bytes"]


def claim_steps(*, scope: Scope, fingerprint: str, ttl_s: float, lock_timeout_s: float) -> Steps:
    """The rules of claiming a key, as the statements to run in the request's transaction.

    Written once, driven by `claim` (a session's connection, on a worker thread) and
    `claim_async` (the event loop's connection). Returns the claim, or the stored response to
    replay; raises what the request must answer instead.
    """
    now = datetime.now(UTC)
    keys = _scope_params(scope)
    values = {
        "v_merchant_id": scope.merchant_id,
        "v_livemode": scope.livemode,
        "v_operation": scope.operation,
        "v_key": scope.key,
        "v_request_hash": fingerprint,
        "v_state": "in_progress",
        "v_lock_time": now,
        "v_create_time": now,
        "v_expire_time": now + timedelta(seconds=ttl_s),
    }
    if (yield "claim", {**keys, **values}) is not None:
        return Claim(scope)
    row = yield "read", keys
    if row is None:
        if not (yield "try_lock", keys).locked:
            # Its holder has not committed: the first request is still running.
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is in progress; retry shortly"
            )
        # The holder rolled back (its request failed) or the key was swept: it is free, and
        # this transaction holds its lock now. (A holder that committed just after the read
        # above leaves a row: the client's retry replays it.)
        if (yield "claim", {**keys, **values}) is not None:
            return Claim(scope)
        raise IdempotencyKeyInUse("a request with this Idempotency-Key has just completed; retry")
    if row.expire_time <= now:
        # Expired but not swept yet: the key is free again.
        yield "take_over", {**keys, **values, "v_response": None}
        return Claim(scope)
    if row.state == "in_progress":
        if row.lock_time > now - timedelta(seconds=lock_timeout_s):
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is in progress; retry shortly"
            )
        # The request that claimed it died before finishing: this one takes the key over
        # (its first claim keeps its times).
        yield (
            "take_over",
            {
                **keys,
                **values,
                "v_response": None,
                "v_create_time": row.create_time,
                "v_expire_time": row.expire_time,
            },
        )
        return Claim(scope)
    if not hmac.compare_digest(row.request_hash, fingerprint):
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request",
            metadata={"idempotency_key": scope.key[:64]},
        )
    assert row.response is not None, "a completed key has a response (check constraint)"
    return bytes(row.response)


def claim(
    session: Session, *, scope: Scope, fingerprint: str, ttl_s: float, lock_timeout_s: float
) -> Claim | bytes:
    """Claims the key in the session's transaction, or returns the stored response to replay."""
    connection = session.connection()
    steps = claim_steps(
        scope=scope, fingerprint=fingerprint, ttl_s=ttl_s, lock_timeout_s=lock_timeout_s
    )
    try:
        name, params = next(steps)
        while True:
            statement = SQL[name]
            result = connection.exec_driver_sql(statement.sql, statement.params(params))
            row = result.first() if result.returns_rows else None
            name, params = steps.send(row)
    except StopIteration as done:
        return cast("Claim | bytes", done.value)


async def claim_async(
    connection: AsyncConnection[Any],
    *,
    scope: Scope,
    fingerprint: str,
    ttl_s: float,
    lock_timeout_s: float,
) -> Claim | bytes:
    """`claim` on the event loop's connection, in its open transaction."""
    steps = claim_steps(
        scope=scope, fingerprint=fingerprint, ttl_s=ttl_s, lock_timeout_s=lock_timeout_s
    )
    cursor = connection.cursor(row_factory=namedtuple_row)
    try:
        name, params = next(steps)
        while True:
            statement = SQL[name]
            await cursor.execute(statement.sql, statement.params(params))
            row = await cursor.fetchone() if cursor.description else None
            name, params = steps.send(row)
    except StopIteration as done:
        return cast("Claim | bytes", done.value)


def complete(session: Session, *, claim: Claim, response: bytes) -> None:
    """Stores the response in the transaction that claimed the key (it commits with the work)."""
    statement = SQL["complete"]
    result = session.connection().exec_driver_sql(
        statement.sql, statement.params({**_scope_params(claim.scope), "v_response": response})
    )
    # The claim inserted or locked the row in this transaction: nobody else can change it.
    assert result.rowcount == 1, "the claimed key is held by this transaction"


async def complete_async(
    connection: AsyncConnection[Any], *, claim: Claim, response: bytes
) -> None:
    """`complete` on the event loop's connection."""
    statement = SQL["complete"]
    cursor = await connection.execute(
        statement.sql, statement.params({**_scope_params(claim.scope), "v_response": response})
    )
    assert cursor.rowcount == 1, "the claimed key is held by this transaction"


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
    """Runs a create method once per idempotency key and replays its stored response.

    `run` runs the work in a session's transaction on a worker thread; `run_async` runs it in
    a transaction of the event loop's connections (`LoopPool`). Both claim and complete the
    key by the same steps (`claim_steps`).
    """

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._hash_key = settings.require_secret("card_fingerprint_key")

    def _claim_args(self, scope: Scope, request: Message) -> dict[str, Any]:
        return {
            "scope": scope,
            "fingerprint": request_hash(
                secret=self._hash_key,
                operation=scope.operation,
                body=request.SerializeToString(deterministic=True),
            ),
            "ttl_s": self._settings.idempotency_key_ttl_s,
            "lock_timeout_s": self._settings.idempotency_lock_timeout_s,
        }

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
            scope = Scope(merchant_id, livemode, operation, key)
            claimed = claim(session, **self._claim_args(scope, request))
            if isinstance(claimed, bytes):
                return parse(claimed), True
            response = work(session)
            complete(session, claim=claimed, response=response.SerializeToString())
            return response, False

    async def run_async(
        self,
        db: LoopPool,
        *,
        merchant_id: str,
        livemode: bool,
        operation: str,
        key: str | None,
        request: Message,
        work: Callable[[AsyncConnection[Any]], Awaitable[M]],
        parse: Callable[[bytes], M],
    ) -> tuple[M, bool]:
        """`run` on the event loop: the same transaction, no worker thread."""
        async with db.transaction() as connection:
            if key is None:
                return await work(connection), False
            scope = Scope(merchant_id, livemode, operation, key)
            claimed = await claim_async(connection, **self._claim_args(scope, request))
            if isinstance(claimed, bytes):
                return parse(claimed), True
            response = await work(connection)
            await complete_async(connection, claim=claimed, response=response.SerializeToString())
            return response, False
