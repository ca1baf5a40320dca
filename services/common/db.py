"""SQLAlchemy 2 engine and sessions over psycopg 3; one schema per service."""

from __future__ import annotations

import asyncio
import select
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg import AsyncConnection, OperationalError
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

# Constraint names follow one pattern so migrations and errors can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def schema_metadata(schema: str) -> MetaData:
    """Metadata for a service's tables, all in its own `schema`."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


URL_PREFIXES = ("postgresql+psycopg://", "postgresql://", "postgres://")
CONNECT_TIMEOUT_S = 10


def _without_scheme(url: str) -> str:
    for prefix in URL_PREFIXES:
        if url.startswith(prefix):
            return url.removeprefix(prefix)
    raise ValueError("database URL must be a postgresql:// URL")


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg 3 driver named, whatever form it was given in."""
    return "postgresql+psycopg://" + _without_scheme(url)


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg itself) takes it, whatever form it was given in."""
    return "postgresql://" + _without_scheme(url)


# A connection back in the pool for less than this is reused without a ping (PgBouncer's
# `server_check_delay` has the same default); one idle longer is pinged, since a network
# device may have dropped it without a word.
IDLE_PING_AFTER_S = 30.0


def closed_by_server(dbapi_connection: Any) -> bool:
    """Whether an idle pooled connection was closed by the server, without a round trip.

    An idle connection has nothing to read: after a transaction every reply has been consumed,
    and paymesh never LISTENs. When PostgreSQL stops or a backend is terminated, the server
    sends its FATAL message and closes the socket, which makes the socket readable; a poll
    with no timeout sees that. A spurious server message (a parameter change after a reload)
    only costs a reconnect.
    """
    if dbapi_connection.closed:
        return True
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _check_on_checkout(engine: Engine) -> None:
    """Replaces dead connections at checkout: a socket poll always, a ping after long idleness."""

    def checkin(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info["checkin_time_s"] = time.monotonic()

    def checkout(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
        checkin_time_s = connection_record.info.get("checkin_time_s")
        if checkin_time_s is None:  # just connected
            return
        alive = not closed_by_server(dbapi_connection)
        if alive and time.monotonic() - checkin_time_s > IDLE_PING_AFTER_S:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except engine.dialect.loaded_dbapi.Error:
                alive = False
        if not alive:
            # The pool then discards this connection and every one pooled before it (all dead
            # after a restart) and hands out a new one, as pool_pre_ping does.
            raise InvalidatePoolError("this pooled connection was closed or is dead")

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "paymesh") -> Engine:
    """An engine with a bounded pool that replaces connections the server has closed.

    `pool_pre_ping` would cost a `SELECT 1` round trip before every transaction. Instead a
    checkout polls the idle socket (`closed_by_server`), so a PostgreSQL restart or a
    terminated backend is found at no cost, and pings only a connection idle longer than
    `IDLE_PING_AFTER_S`. A connection that dies during a transaction fails that transaction
    (as it would with a ping), which callers see as UNAVAILABLE and retry; so does the next
    transaction on one that died silently (a vanished host: no FIN, nothing to poll) within
    `IDLE_PING_AFTER_S` of its last use, after which the pool replaces the rest.
    """
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"application_name": application_name, "connect_timeout": CONNECT_TIMEOUT_S},
    )
    _check_on_checkout(engine)
    return engine


def make_async_pool(
    url: str,
    *,
    max_size: int,
    application_name: str,
    configure: Callable[[AsyncConnection[Any]], Awaitable[None]] | None = None,
) -> AsyncConnectionPool:
    """An unopened pool of async autocommit connections, for one-statement work on the loop.

    The same database, timeout and naming as `make_engine`'s connections; open it with
    `await pool.open()`. `LoopPool` checks a connection at checkout as `make_engine` does.
    """
    return AsyncConnectionPool(
        libpq_url(url),
        min_size=1,
        max_size=max_size,
        kwargs={
            "autocommit": True,
            "application_name": application_name,
            "connect_timeout": CONNECT_TIMEOUT_S,
        },
        open=False,
        name=application_name,
        configure=configure,
    )


class LoopPool:
    """The process's event-loop connections (autocommit), opened on first use.

    The hot paths run on the event loop with psycopg's async driver: no worker-thread hop and
    no ORM or Core execution layers per statement, only SQL rendered once (`render`). One per
    service process, opened by the first call on the server's loop; `close` at shutdown.
    """

    def __init__(
        self,
        url: str,
        *,
        max_size: int,
        application_name: str,
        configure: Callable[[AsyncConnection[Any]], Awaitable[None]] | None = None,
    ) -> None:
        self._url = url
        self._max_size = max_size
        self._application_name = application_name
        self._configure = configure
        self._pool: AsyncConnectionPool | None = None
        self._lock = asyncio.Lock()
        # When each connection last went back to the pool; new ones are not in it.
        self._returned_at: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    async def _opened(self) -> AsyncConnectionPool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    pool = make_async_pool(
                        self._url,
                        max_size=self._max_size,
                        application_name=self._application_name,
                        configure=self._configure,
                    )
                    await pool.open()
                    self._pool = pool
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A live connection in autocommit: each statement is its own transaction."""
        pool = await self._opened()
        connection = await self._live_connection(pool)
        try:
            yield connection
        finally:
            self._returned_at[connection] = time.monotonic()
            await pool.putconn(connection)

    async def _live_connection(self, pool: AsyncConnectionPool) -> AsyncConnection[Any]:
        """A connection from the pool, replacing the dead ones as `make_engine`'s checkout does.

        psycopg_pool's own `check` callback would back off a second, then two, between dead
        connections, and after a PostgreSQL restart every pooled one is dead. Here each costs a
        socket poll: closed, handed back (the pool then opens a replacement) and the next taken.
        """
        for _ in range(self._max_size):
            connection = await pool.getconn()
            try:
                alive = await self._alive(connection)
            except BaseException:  # cancelled during a ping: the connection goes back
                await pool.putconn(connection)
                raise
            if alive:
                return connection
            await connection.close()
            await pool.putconn(connection)
        return await pool.getconn()  # every one was replaced: this one is new

    async def _alive(self, connection: AsyncConnection[Any]) -> bool:
        if closed_by_server(connection):
            return False
        returned_at = self._returned_at.get(connection)
        if returned_at is None or time.monotonic() - returned_at <= IDLE_PING_AFTER_S:
            return True
        try:
            await connection.execute("")
        except OperationalError:
            return False
        return True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """One transaction: commits on success, rolls back on any exception."""
        async with self.connection() as connection, connection.transaction():
            yield connection

    async def close(self) -> None:
        """Closes the connections, if any were opened."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


_DIALECT = postgresql.psycopg.dialect()  # type: ignore[attr-defined,no-untyped-call]


@dataclass(frozen=True)
class Rendered:
    """A Core statement as psycopg's SQL (`%(name)s` parameters) and its constant values."""

    sql: str
    constants: dict[str, Any]

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        """The statement's parameters: its constants and `values`."""
        return {**self.constants, **values}


def render(statement: ClauseElement, *, columns: Iterable[str] | None = None) -> Rendered:
    """A Core statement rendered once (at import) for psycopg's own cursors.

    `columns` names the values an INSERT or UPDATE sets (the others keep their defaults).
    Constants in the statement (literal values SQLAlchemy binds) travel in `constants`.
    """
    keys = list(columns) if columns is not None else None
    compiled = cast(SQLCompiler, statement.compile(dialect=_DIALECT, column_keys=keys))
    constants = {
        name: value
        for name, value in compiled.params.items()
        if value is not None and not compiled.binds[name].required
    }
    return Rendered(str(compiled), constants)


def execute_many(
    connection: Connection, statement: Rendered, values: Sequence[dict[str, Any]]
) -> list[Any]:
    """Runs `statement` once per item of `values`, in one round trip; each run's first row.

    For a batch's statements (the payment worker's): psycopg sends them in pipeline mode and
    prepares a statement it sees often. Each answer is a named tuple (attributes by column
    name) or None when that run returned no row. In the connection's transaction, or each its
    own on an autocommit connection.
    """
    if not values:
        return []
    dbapi_connection = cast(psycopg.Connection[Any], connection.connection.dbapi_connection)
    rows: list[Any] = []
    with dbapi_connection.cursor(row_factory=namedtuple_row) as cursor:
        cursor.executemany(
            statement.sql, [statement.params(value) for value in values], returning=True
        )
        while True:
            rows.append(cursor.fetchone())
            if not cursor.nextset():
                break
    return rows


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def autocommit(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A pooled connection on which each statement commits on its own.

    For work whose writes are single statements: no `BEGIN` or `COMMIT` round trips. The pool
    puts the connection back in its default (transactional) mode when it returns.
    """
    with factory() as session:
        yield session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any exception."""
    with factory() as session, session.begin():
        yield session
