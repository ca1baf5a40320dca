"""Idempotency keys for every write (Stripe's semantics, the IETF Idempotency-Key draft's rules).

Each service keeps its keys in a table of its own schema (`KeyColumns`), scoped to (owner,
mode, operation, key): the owner is the merchant for merchants' writes (with its mode) and the
operator for operators' (mode false: operators act across modes). `Runner` runs a write under
a key in one of two ways.

`Runner.run` and `run_async`, for writes that call nothing outside this database between
taking the key and answering: the key, the work and the stored response share one transaction.

1. `claim_steps` takes a transaction-level advisory lock on the key and, holding it, inserts the
   key (one statement: `INSERT ... SELECT ... WHERE pg_try_advisory_xact_lock(...) ON CONFLICT
   DO NOTHING RETURNING`). The lock is held until the transaction ends, so a request with the
   same key sent while the first runs does not get it and answers IDEMPOTENCY_KEY_IN_USE (409,
   safe to retry) at once, without waiting; once the first has committed, a retry reads what
   it left (below); if the first failed, its key went with its rollback and the retry runs.
2. The work runs in the same transaction and `complete` stores its response (state
   `completed`): the key, the work's rows and the response commit together or not at all.
3. A request that fails (bad input, a state that does not allow it) rolls back the whole
   transaction, its key with it, so errors are never replayed and the client may retry with
   the same key.

`Runner.run_remote`, for writes that call another service (which commits on its own): the
key is claimed and committed `in_progress` in a transaction of its own, the call is made, and
its result is finished (this service's own rows) and stored in a second transaction. A call
that fails releases the key, so errors are never replayed. A process that dies between the
two leaves the key `in_progress`: it answers IDEMPOTENCY_KEY_IN_USE until the operation's lock
timeout has passed, then a retry takes it over and makes the call again, so the call must be
idempotent itself (it carries a key derived from this one) or safe to repeat.

A key that exists answers: completed, same request -> its stored response (a replay, with
`Idempotent-Replayed: true`); another request -> IDEMPOTENCY_KEY_REUSED; expired but not swept
yet -> free again. Completed keys are kept `idempotency_key_ttl_s` (at least 24 h), then swept.
Stored responses that carry a secret shown once (a webhook signing secret, an API key) are
sealed with AES-GCM (`sealed=True`), bound to their key's scope.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from sqlalchemy import (
    DateTime,
    LargeBinary,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from services.common.db import LoopPool, Rendered, render, transaction
from services.common.errors import IDEMPOTENCY, Conflict, FailedPrecondition, InvalidArgument
from services.common.sealing import Sealer
from services.common.server import add_response_header
from services.common.settings import Settings

KEY_LENGTH_MAX = 255
HEADER = "idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"
M = TypeVar("M", bound=Message)
R = TypeVar("R")
_SEAL_INFO = b"paymesh/idempotency-response/v1"


class IdempotencyKeyReused(FailedPrecondition):
    """The key was used before with a different request."""

    reason = "IDEMPOTENCY_KEY_REUSED"
    error_type = IDEMPOTENCY


class IdempotencyKeyInUse(Conflict):
    """The first request with this key is still running; retry shortly."""

    reason = "IDEMPOTENCY_KEY_IN_USE"
    error_type = IDEMPOTENCY


class KeyColumns:
    """The columns of a service's key table but its owner's (a declarative mixin).

    A service's model adds the owner column (`merchant_id`, `operator_id`) as the first part
    of the primary key; its migration creates the table with the same two check constraints
    and an index on `expire_time`.
    """

    livemode: Mapped[bool] = mapped_column(primary_key=True)
    operation: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    # "in_progress" while the first request runs, then "completed" with its response.
    state: Mapped[str] = mapped_column(String(16))
    response: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    lock_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Scope:
    """Where a key lives: one owner (merchant or operator), one mode, one operation."""

    owner: str
    livemode: bool
    operation: str
    key: str


@dataclass(frozen=True)
class Claim:
    """A key this request holds."""

    scope: Scope
    lock_time: datetime


def validate_key(key: str) -> str:
    """The key, or InvalidArgument when it is empty, too long or not printable ASCII."""
    if not key or len(key) > KEY_LENGTH_MAX or not key.isascii() or not key.isprintable():
        raise InvalidArgument.field(
            "Idempotency-Key", f"must be 1 to {KEY_LENGTH_MAX} printable ASCII characters"
        )
    return key


def key_of(context: Any) -> str | None:
    """The `Idempotency-Key` header of a call (its gRPC context), validated, or None."""
    for name, value in context.invocation_metadata() or ():
        if name == HEADER and isinstance(value, str):
            return validate_key(value.strip())
    return None


def answer(result: tuple[M, bool]) -> M:
    """The response of `Runner`'s result; a stored one answers `Idempotent-Replayed: true`."""
    response, replayed = result
    if replayed:
        add_response_header(REPLAYED_HEADER, "true")
    return response


def request_hash(*, secret: str, operation: str, body: bytes) -> str:
    """A keyed hash of the request: compares requests without storing their card data."""
    return hmac.new(secret.encode(), operation.encode() + b"\0" + body, hashlib.sha256).hexdigest()


# One step of a claim: the statement's name in `KeyStore.sql` and its parameters. The driver
# sends back the statement's first row (None when it returned none).
Step = tuple[str, dict[str, Any]]
Steps = Generator[Step, Any, "Claim | bytes"]


class KeyStore:
    """A service's key table and its statements, built once with bind parameters.

    Building them per call (the values coerced, the cache key computed) cost a third of a
    payment create's CPU; they run on the caller's connection, in its transaction, as Core
    statements rendered for psycopg (`render`).
    """

    def __init__(self, table: Table, *, owner: str) -> None:
        self.table = table
        c = table.c
        self._lock_prefix = f"idempotency\x1f{table.fullname}"
        # The key's row: its scope, bound by `_scope_params`.
        is_key = and_(
            c[owner] == bindparam("w_owner"),
            c.livemode == bindparam("w_livemode"),
            c.operation == bindparam("w_operation"),
            c.key == bindparam("w_key"),
        )
        # Tries the transaction-level advisory lock that marks this key's request as running
        # (named by `_scope_params`); a transaction that holds it already gets it again.
        key_lock = func.pg_try_advisory_xact_lock(func.hashtextextended(bindparam("lock_name"), 0))
        names = {owner: "owner"} | {
            name: name
            for name in (
                "livemode",
                "operation",
                "key",
                "request_hash",
                "state",
                "lock_time",
                "create_time",
                "expire_time",
            )
        }
        # Take the key's advisory lock and, holding it, insert the key. Without the lock
        # (another request with this key is running) nothing is inserted and nothing waits.
        claim = (
            insert(table)
            .from_select(
                list(names),
                select(
                    *(bindparam(f"v_{param}", type_=c[name].type) for name, param in names.items())
                ).where(key_lock),
            )
            .on_conflict_do_nothing()
            .returning(c.key)
        )
        read = select(
            c.request_hash, c.state, c.response, c.lock_time, c.create_time, c.expire_time
        ).where(is_key)
        # An expired key, or one left `in_progress` past the lock timeout, taken over by this
        # request (it holds the row's lock from `read`).
        take_over = (
            update(table)
            .where(is_key)
            .values(
                request_hash=bindparam("v_request_hash"),
                state="in_progress",
                response=bindparam("v_response"),
                create_time=bindparam("v_create_time"),
                expire_time=bindparam("v_expire_time"),
                lock_time=bindparam("v_lock_time"),
            )
        )
        held = and_(is_key, c.state == "in_progress", c.lock_time == bindparam("w_lock_time"))
        self.sql: dict[str, Rendered] = {
            "claim": render(claim),
            "read": render(read.with_for_update()),
            "try_lock": render(select(key_lock.label("locked"))),
            "take_over": render(take_over),
            "complete": render(
                update(table)
                .where(is_key, c.state == "in_progress")
                .values(state="completed", response=bindparam("v_response"))
            ),
            # A claim committed on its own (`run_remote`), completed or released only by the
            # request that holds it: one that took it over has changed its lock time.
            "complete_held": render(
                update(table)
                .where(held)
                .values(state="completed", response=bindparam("v_response"))
            ),
            "release_held": render(delete(table).where(held)),
        }

    def scope_params(self, scope: Scope) -> dict[str, str | bool]:
        """The bind parameters naming the key's row and its advisory lock."""
        lock_name = "\x1f".join(
            (self._lock_prefix, scope.owner, str(scope.livemode), scope.operation, scope.key)
        )
        return {
            "w_owner": scope.owner,
            "w_livemode": scope.livemode,
            "w_operation": scope.operation,
            "w_key": scope.key,
            "lock_name": lock_name,
        }

    def claim_steps(
        self, *, scope: Scope, fingerprint: str, ttl_s: float, lock_timeout_s: float
    ) -> Steps:
        """The rules of claiming a key, as the statements to run in the request's transaction.

        Written once, driven by `claim` (a session's connection, on a worker thread) and
        `claim_async` (the event loop's connection). Returns the claim, or the stored response
        to replay; raises what the request must answer instead.
        """
        now = datetime.now(UTC)
        keys = self.scope_params(scope)
        values = {
            "v_owner": scope.owner,
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
            return Claim(scope, now)
        row = yield "read", keys
        if row is None:
            if not (yield "try_lock", keys).locked:
                # Its holder has not committed: the first request is still running.
                raise IdempotencyKeyInUse(
                    "a request with this Idempotency-Key is in progress; retry shortly"
                )
            # The holder rolled back (its request failed) or the key was swept: it is free,
            # and this transaction holds its lock now. (A holder that committed just after the
            # read above leaves a row: the client's retry replays it.)
            if (yield "claim", {**keys, **values}) is not None:
                return Claim(scope, now)
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key has just completed; retry"
            )
        if row.expire_time <= now:
            # Expired but not swept yet: the key is free again.
            yield "take_over", {**keys, **values, "v_response": None}
            return Claim(scope, now)
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
            return Claim(scope, now)
        if not hmac.compare_digest(row.request_hash, fingerprint):
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request",
                metadata={"idempotency_key": scope.key[:64]},
            )
        assert row.response is not None, "a completed key has a response (check constraint)"
        return bytes(row.response)

    def claim(
        self,
        session: Session,
        *,
        scope: Scope,
        fingerprint: str,
        ttl_s: float,
        lock_timeout_s: float,
    ) -> Claim | bytes:
        """Claims the key in the session's transaction, or returns the stored response."""
        connection = session.connection()
        steps = self.claim_steps(
            scope=scope, fingerprint=fingerprint, ttl_s=ttl_s, lock_timeout_s=lock_timeout_s
        )
        try:
            name, params = next(steps)
            while True:
                statement = self.sql[name]
                result = connection.exec_driver_sql(statement.sql, statement.params(params))
                row = result.first() if result.returns_rows else None
                name, params = steps.send(row)
        except StopIteration as done:
            return cast("Claim | bytes", done.value)

    async def claim_async(
        self,
        connection: AsyncConnection[Any],
        *,
        scope: Scope,
        fingerprint: str,
        ttl_s: float,
        lock_timeout_s: float,
    ) -> Claim | bytes:
        """`claim` on the event loop's connection, in its open transaction."""
        steps = self.claim_steps(
            scope=scope, fingerprint=fingerprint, ttl_s=ttl_s, lock_timeout_s=lock_timeout_s
        )
        cursor = connection.cursor(row_factory=namedtuple_row)
        try:
            name, params = next(steps)
            while True:
                statement = self.sql[name]
                await cursor.execute(statement.sql, statement.params(params))
                row = await cursor.fetchone() if cursor.description else None
                name, params = steps.send(row)
        except StopIteration as done:
            return cast("Claim | bytes", done.value)

    def _run(self, session: Session, name: str, claim: Claim, **values: Any) -> int:
        statement = self.sql[name]
        params = {**self.scope_params(claim.scope), "w_lock_time": claim.lock_time, **values}
        result = session.connection().exec_driver_sql(statement.sql, statement.params(params))
        return int(result.rowcount)

    def complete(self, session: Session, *, claim: Claim, response: bytes) -> None:
        """Stores the response in the claiming transaction (it commits with the work)."""
        # The claim inserted or locked the row in this transaction: nobody else can change it.
        rows = self._run(session, "complete", claim, v_response=response)
        assert rows == 1, "the claimed key is held by this transaction"

    async def complete_async(
        self, connection: AsyncConnection[Any], *, claim: Claim, response: bytes
    ) -> None:
        """`complete` on the event loop's connection."""
        statement = self.sql["complete"]
        cursor = await connection.execute(
            statement.sql,
            statement.params({**self.scope_params(claim.scope), "v_response": response}),
        )
        assert cursor.rowcount == 1, "the claimed key is held by this transaction"

    def complete_held(self, session: Session, *, claim: Claim, response: bytes) -> bool:
        """Stores the response of a claim committed on its own; False if it was taken over."""
        return self._run(session, "complete_held", claim, v_response=response) == 1

    def release_held(self, session: Session, *, claim: Claim) -> None:
        """Deletes a claim committed on its own (its request failed), unless taken over."""
        self._run(session, "release_held", claim)

    def sweep_expired(self, session: Session, *, limit: int = 1000) -> int:
        """Deletes up to `limit` expired keys; returns how many."""
        name = self.table.fullname
        result = session.execute(
            text(
                f"DELETE FROM {name} WHERE ctid IN ("  # noqa: S608 - a table name, not input
                f" SELECT ctid FROM {name} WHERE expire_time <= now()"
                " LIMIT :limit FOR UPDATE SKIP LOCKED)"
            ),
            {"limit": limit},
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def _bound(scope: Scope) -> bytes:
    """A sealed response's associated data: its key's scope."""
    return "\x1f".join((scope.owner, str(scope.livemode), scope.operation, scope.key)).encode()


class Runner:
    """Runs a write once per idempotency key and replays its stored response.

    `secret` keys the requests' hashes (and, with `sealed`, the stored responses' encryption).
    Without a key a write just runs, in the same transaction it would have had.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        store: KeyStore,
        *,
        secret: str,
        sealed: bool = False,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._store = store
        self._hash_key = secret
        self._seal = Sealer(secret, purpose=_SEAL_INFO) if sealed else None

    def _claim_args(
        self, scope: Scope, request: Message, lock_timeout_s: float | None = None
    ) -> dict[str, Any]:
        return {
            "scope": scope,
            "fingerprint": request_hash(
                secret=self._hash_key,
                operation=scope.operation,
                body=request.SerializeToString(deterministic=True),
            ),
            "ttl_s": self._settings.idempotency_key_ttl_s,
            "lock_timeout_s": max(self._settings.idempotency_lock_timeout_s, lock_timeout_s or 0.0),
        }

    def _stored(self, scope: Scope, response: Message) -> bytes:
        data = response.SerializeToString()
        return self._seal.seal(data, bound=_bound(scope)) if self._seal is not None else data

    def _replay(self, scope: Scope, stored: bytes, parse: Callable[[bytes], M]) -> tuple[M, bool]:
        data = self._seal.open(stored, bound=_bound(scope)) if self._seal is not None else stored
        return parse(data), True

    def run(
        self,
        *,
        owner: str,
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
            scope = Scope(owner, livemode, operation, key)
            claimed = self._store.claim(session, **self._claim_args(scope, request))
            if isinstance(claimed, bytes):
                return self._replay(scope, claimed, parse)
            response = work(session)
            self._store.complete(session, claim=claimed, response=self._stored(scope, response))
            return response, False

    async def run_async(
        self,
        db: LoopPool,
        *,
        owner: str,
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
            scope = Scope(owner, livemode, operation, key)
            claimed = await self._store.claim_async(connection, **self._claim_args(scope, request))
            if isinstance(claimed, bytes):
                return self._replay(scope, claimed, parse)
            response = await work(connection)
            await self._store.complete_async(
                connection, claim=claimed, response=self._stored(scope, response)
            )
            return response, False

    async def run_remote(
        self,
        *,
        owner: str,
        livemode: bool,
        operation: str,
        key: str | None,
        request: Message,
        call: Callable[[], Awaitable[R]],
        finish: Callable[[Session, R], M],
        parse: Callable[[bytes], M],
        call_timeout_s: float,
    ) -> tuple[M, bool]:
        """A write that calls another service: `call`, then `finish` with its result.

        `finish` writes this service's own rows; it and the stored response commit together.
        The key stays claimed at least `call_timeout_s`, so a retry cannot take it over while
        the call may still be running.
        """
        if key is None:
            result = await call()
            return await asyncio.to_thread(self._finish, None, finish, result), False
        scope = Scope(owner, livemode, operation, key)
        args = self._claim_args(scope, request, lock_timeout_s=call_timeout_s * 2)
        claimed = await asyncio.to_thread(self._claim_alone, args)
        if isinstance(claimed, bytes):
            return self._replay(scope, claimed, parse)
        try:
            result = await call()
            response = await asyncio.to_thread(self._finish, claimed, finish, result)
        except BaseException:
            await asyncio.to_thread(self._release, claimed)
            raise
        return response, False

    def _claim_alone(self, args: dict[str, Any]) -> Claim | bytes:
        with transaction(self._sessions) as session:
            return self._store.claim(session, **args)

    def _finish(self, claim: Claim | None, finish: Callable[[Session, R], M], result: R) -> M:
        with transaction(self._sessions) as session:
            response = finish(session, result)
            if claim is not None and not self._store.complete_held(
                session, claim=claim, response=self._stored(claim.scope, response)
            ):
                # Taken over by a retry after the lock timeout: that one answers the key.
                raise IdempotencyKeyInUse(
                    "a request with this Idempotency-Key took over this one; retry to get its"
                    " response"
                )
            return response

    def _release(self, claim: Claim) -> None:
        with transaction(self._sessions) as session:
            self._store.release_held(session, claim=claim)
