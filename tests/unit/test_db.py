"""The kit's engine: pooled connections the server closed are replaced, without a ping each time."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text

from services.common import db
from services.common.db import make_engine, make_sessionmaker, transaction
from services.runtime.embedded import EmbeddedPostgres, start_postgres, stop_postgres

WAIT_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    data_dir: Path = tmp_path_factory.mktemp("db-kit") / "pg"
    try:
        yield start_postgres(data_dir, password=secrets.token_urlsafe(16))
    finally:
        stop_postgres(data_dir, mode="immediate")


@pytest.fixture
def engine(postgres: EmbeddedPostgres) -> Iterator[Engine]:
    made = make_engine(postgres.url(), pool_size=2)
    yield made
    made.dispose()


@pytest.fixture
def pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pings the engine sends (each is a round trip)."""
    sent: list[int] = []
    ping = engine.dialect.do_ping

    def counting(dbapi_connection):  # type: ignore[no-untyped-def]
        sent.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting)
    return sent


def backend_pid(engine: Engine) -> int:
    """The server process of the connection a new transaction gets."""
    with transaction(make_sessionmaker(engine)) as session:
        return int(session.scalar(text("SELECT pg_backend_pid()")) or 0)


def terminate(postgres: EmbeddedPostgres, pid: int) -> None:
    """Ends a backend as an administrator (or a restart) would, and waits until it is gone."""
    with psycopg.connect(postgres.url(driver="postgresql"), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the backend did not exit"
            time.sleep(0.02)


def test_engine__reuses_a_recent_connection_without_a_ping(
    engine: Engine, pings: list[int]
) -> None:
    first = backend_pid(engine)
    for _ in range(5):
        assert backend_pid(engine) == first
    assert pings == []


def test_engine__a_terminated_backend_is_replaced_at_checkout(
    engine: Engine, postgres: EmbeddedPostgres, pings: list[int]
) -> None:
    first = backend_pid(engine)
    terminate(postgres, first)
    assert backend_pid(engine) not in (first, 0)
    assert pings == []


def test_engine__a_long_idle_connection_is_pinged_and_replaced_when_dead(
    engine: Engine, postgres: EmbeddedPostgres, pings: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = backend_pid(engine)
    # A connection dropped silently (by a firewall, say) shows nothing on its socket: only
    # the ping of a long idle connection finds it.
    monkeypatch.setattr(db, "IDLE_PING_AFTER_S", 0.0)
    monkeypatch.setattr(db, "closed_by_server", lambda dbapi_connection: False)
    assert backend_pid(engine) == first
    assert len(pings) == 1
    terminate(postgres, first)
    assert backend_pid(engine) not in (first, 0)


def test_engine__survives_a_postgres_restart(
    engine: Engine, postgres: EmbeddedPostgres, pings: list[int]
) -> None:
    sessions = make_sessionmaker(engine)
    # Two connections in the pool, both cut by the restart.
    with transaction(sessions) as one, transaction(sessions) as two:
        pids = {
            one.scalar(text("SELECT pg_backend_pid()")),
            two.scalar(text("SELECT pg_backend_pid()")),
        }
    assert len(pids) == 2
    stop_postgres(postgres.data_dir)
    start_postgres(postgres.data_dir, password=postgres.password, port=postgres.port)
    for _ in range(3):
        with transaction(sessions) as one, transaction(sessions) as two:
            assert one.scalar(text("SELECT 1")) == two.scalar(text("SELECT 1")) == 1
    assert pings == []


@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql", "postgres"])
def test_async_pool__takes_every_url_form_and_commits_each_statement(
    postgres: EmbeddedPostgres, driver: str
) -> None:
    table = f"t_{secrets.token_hex(4)}"

    async def scenario() -> str:
        pool = db.make_async_pool(
            postgres.url(driver=driver), max_size=1, application_name="paymesh-test"
        )
        await pool.open()
        try:
            async with pool.connection() as connection:
                await connection.execute(f"CREATE TABLE {table} (n int)")
                await connection.execute(f"INSERT INTO {table} VALUES (1)")  # noqa: S608
                cursor = await connection.execute("SELECT current_setting('application_name')")
                row = await cursor.fetchone()
                return str(row[0]) if row else ""
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == "paymesh-test"
    # Autocommit: another connection sees the row without a COMMIT from the pool.
    with psycopg.connect(postgres.url(driver="postgresql")) as other:
        assert other.execute(f"SELECT n FROM {table}").fetchall() == [(1,)]  # noqa: S608


def test_urls__one_scheme_rule_for_sqlalchemy_and_libpq() -> None:
    for given in (
        "postgresql+psycopg://u:p@h:1/d",
        "postgresql://u:p@h:1/d",
        "postgres://u:p@h:1/d",
    ):
        assert db.sqlalchemy_url(given) == "postgresql+psycopg://u:p@h:1/d"
        assert db.libpq_url(given) == "postgresql://u:p@h:1/d"
    with pytest.raises(ValueError, match="postgresql://"):
        db.libpq_url("mysql://u@h/d")


async def loop_pids(pool: db.LoopPool, count: int) -> set[int]:
    """The server processes of `count` connections the loop pool hands out at once."""
    async with contextlib.AsyncExitStack() as stack:
        pids = set()
        for _ in range(count):
            connection = await stack.enter_async_context(pool.connection())
            cursor = await connection.execute("SELECT pg_backend_pid()")
            row = await cursor.fetchone()
            pids.add(int(row[0]) if row else 0)
        return pids


def test_loop_pool__replaces_terminated_and_restarted_connections_at_checkout(
    postgres: EmbeddedPostgres,
) -> None:
    async def scenario() -> None:
        pool = db.LoopPool(postgres.url(), max_size=2, application_name="paymesh-test")
        try:
            first = await loop_pids(pool, 2)
            assert len(first) == 2
            assert await loop_pids(pool, 2) == first  # reused
            await asyncio.to_thread(terminate, postgres, min(first))
            second = await loop_pids(pool, 2)
            assert min(first) not in second and 0 not in second
            # A restart cuts both: each checkout after it gets a live connection.
            await asyncio.to_thread(stop_postgres, postgres.data_dir)
            await asyncio.to_thread(
                start_postgres, postgres.data_dir, password=postgres.password, port=postgres.port
            )
            for _ in range(3):
                assert not (await loop_pids(pool, 2)) & second
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_loop_pool__a_long_idle_connection_is_pinged_and_replaced_when_dead(
    postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        pool = db.LoopPool(postgres.url(), max_size=1, application_name="paymesh-test")
        try:
            (first,) = await loop_pids(pool, 1)
            # Dropped silently: nothing on the socket, only the ping finds it.
            monkeypatch.setattr(db, "IDLE_PING_AFTER_S", 0.0)
            monkeypatch.setattr(db, "closed_by_server", lambda connection: False)
            assert await loop_pids(pool, 1) == {first}
            await asyncio.to_thread(terminate, postgres, first)
            assert (await loop_pids(pool, 1)) - {first, 0}
        finally:
            await pool.close()

    asyncio.run(scenario())
