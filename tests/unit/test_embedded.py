"""The embedded PostgreSQL and Redis servers: real processes, started and stopped for real."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from services.common.ports import ephemeral_port_range, free_port, port_is_free
from services.common.settings import Settings
from services.runtime.embedded import (
    PG_HBA,
    EmbeddedPostgres,
    postgres_running,
    start_postgres,
    start_redis,
    stop_postgres,
    stop_redis,
)
from services.runtime.platform import prepare

WAIT_TIMEOUT_S = 10.0
PASSWORD = secrets.token_urlsafe(16)


def _wait_until(condition: Callable[[], bool], *, timeout_s: float = WAIT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s} s"
        time.sleep(0.02)


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture
def pg_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "pg"
    try:
        yield data_dir
    finally:
        stop_postgres(data_dir, mode="immediate")


@pytest.fixture
def redis_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "redis"
    try:
        yield data_dir
    finally:
        stop_redis(data_dir)


def _scalar(server: EmbeddedPostgres, sql: str) -> object:
    with psycopg.connect(server.url(driver="postgresql"), connect_timeout=5) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_free_port__is_bindable_and_below_the_ephemeral_range() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert port < ephemeral_port_range()[0]


def test_port_is_free__not_while_a_listener_holds_it() -> None:
    port = free_port()
    assert port_is_free(port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not port_is_free(port)
    assert port_is_free(port)


def test_postgres__restart_keeps_data_and_port(pg_dir: Path) -> None:
    server = start_postgres(pg_dir, password=PASSWORD)
    assert server.url() == (
        f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{server.port}/paymesh"
    )
    assert PASSWORD not in repr(server)
    assert server.port < ephemeral_port_range()[0]
    assert (pg_dir / "paymesh-port").read_text().strip() == str(server.port)
    with psycopg.connect(server.url(driver="postgresql")) as conn:
        conn.execute("CREATE TABLE note (body text NOT NULL)")
        conn.execute("INSERT INTO note VALUES ('kept')")
    socket_conninfo = (
        f"host={server.socket_dir} port={server.port} user=postgres dbname=paymesh"
        f" password={PASSWORD}"
    )
    with psycopg.connect(socket_conninfo) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections'), current_setting('fsync'),"
            " current_setting('synchronous_commit'), pg_encoding_to_char(encoding)"
            " FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert row == ("200", "on", "on", "UTF8")

    stop_postgres(pg_dir)
    assert not postgres_running(pg_dir)

    again = start_postgres(pg_dir, password=PASSWORD)
    assert again.port == server.port
    assert again.pid != server.pid
    assert _scalar(again, "SELECT body FROM note") == "kept"


def test_postgres__start_twice_returns_the_running_server(pg_dir: Path) -> None:
    first = start_postgres(pg_dir, password=PASSWORD)

    second = start_postgres(pg_dir, password=PASSWORD)

    assert second == first
    assert postgres_running(pg_dir)


def test_postgres__starts_again_after_the_postmaster_is_killed(pg_dir: Path) -> None:
    server = start_postgres(pg_dir, password=PASSWORD)
    with psycopg.connect(server.url(driver="postgresql")) as conn:
        conn.execute("CREATE TABLE note (body text NOT NULL)")
        conn.execute("INSERT INTO note VALUES ('committed before the crash')")

    os.kill(server.pid, signal.SIGKILL)
    _wait_until(lambda: not postgres_running(pg_dir))
    assert (pg_dir / "postmaster.pid").exists()  # stale, left behind by the crash

    again = start_postgres(pg_dir, password=PASSWORD)
    assert again.pid != server.pid
    assert again.port == server.port
    assert _scalar(again, "SELECT body FROM note") == "committed before the crash"


def test_postgres__remembered_port_taken_by_another_picks_a_free_one(pg_dir: Path) -> None:
    server = start_postgres(pg_dir, password=PASSWORD)
    stop_postgres(pg_dir)

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        again = start_postgres(pg_dir, password=PASSWORD)

    assert again.port != server.port
    assert (pg_dir / "paymesh-port").read_text().strip() == str(again.port)
    assert _scalar(again, "SELECT 1") == 1


def test_postgres__long_data_dir_puts_the_socket_under_tmp(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 90) / "pg"
    try:
        server = start_postgres(data_dir, password=PASSWORD, port=free_port(), database="other")
        assert server.socket_dir.parent == Path("/tmp")
        psql = [str(server.bin("psql")), "-h", str(server.socket_dir), "-p", str(server.port)]
        out = subprocess.run(
            [*psql, "-U", "postgres", "-d", "other", "-tAc", "SELECT current_database()"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PGPASSWORD": PASSWORD},
        ).stdout
        assert out.strip() == "other"
    finally:
        stop_postgres(data_dir)
    assert not server.socket_dir.exists()


def test_postgres__refuses_a_connection_without_the_password(pg_dir: Path) -> None:
    server = start_postgres(pg_dir, password=PASSWORD)
    tcp = f"host=127.0.0.1 port={server.port} user=postgres dbname=paymesh"
    unix_socket = f"host={server.socket_dir} port={server.port} user=postgres dbname=paymesh"

    for conninfo in (tcp, unix_socket):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(conninfo, connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"{conninfo} password=wrong", connect_timeout=5)
        with psycopg.connect(f"{conninfo} password={PASSWORD}", connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


# What initdb --auth=trust wrote, as paymesh did before passwords.
TRUST_HBA = """\
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
"""


def test_postgres__a_data_dir_that_trusted_everyone_requires_the_password_after_start(
    pg_dir: Path,
) -> None:
    server = start_postgres(pg_dir, password=PASSWORD)
    with psycopg.connect(server.url(driver="postgresql")) as conn:
        conn.execute("CREATE TABLE note (body text NOT NULL)")
        conn.execute("INSERT INTO note VALUES ('kept')")
        conn.execute("ALTER ROLE postgres PASSWORD NULL")
    stop_postgres(pg_dir)
    (pg_dir / "pg_hba.conf").write_text(TRUST_HBA)

    again = start_postgres(pg_dir, password=PASSWORD)

    assert (pg_dir / "pg_hba.conf").read_text() == PG_HBA
    assert _scalar(again, "SELECT body FROM note") == "kept"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"host=127.0.0.1 port={again.port} user=postgres", connect_timeout=5)


def test_prepare__an_old_data_dir_comes_up_with_a_generated_password(tmp_path: Path) -> None:
    data_dir = tmp_path / "paymesh"
    old = start_postgres(data_dir / "pg", password=PASSWORD)
    with psycopg.connect(old.url(driver="postgresql")) as conn:
        conn.execute("CREATE TABLE note (body text NOT NULL)")
        conn.execute("INSERT INTO note VALUES ('kept')")
        conn.execute("ALTER ROLE postgres PASSWORD NULL")
    stop_postgres(data_dir / "pg")
    (data_dir / "pg" / "pg_hba.conf").write_text(TRUST_HBA)
    old_secrets = {"card_fingerprint_key": "fp", "secret_encryption_key": "enc"}
    (data_dir / "secrets.json").write_text(json.dumps(old_secrets))
    settings = Settings(data_dir=data_dir, database_url=None, redis_url=None)

    environment = prepare(settings)
    try:
        url = environment.variables["PAYMESH_DATABASE_URL"]
        generated = json.loads((data_dir / "secrets.json").read_text())
        assert generated.items() >= old_secrets.items()
        assert urlsplit(url).password == generated["postgres_password"]
        with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=5) as conn:
            assert conn.execute("SELECT body FROM note").fetchone() == ("kept",)
        port = urlsplit(url).port
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"host=127.0.0.1 port={port} user=postgres", connect_timeout=5)
    finally:
        environment.stop_started(data_dir)


def test_postgres__remembered_port_in_the_ephemeral_range_is_replaced(pg_dir: Path) -> None:
    low, high = ephemeral_port_range()
    start_postgres(pg_dir, password=PASSWORD)
    stop_postgres(pg_dir)
    (pg_dir / "paymesh-port").write_text(f"{(low + high) // 2}\n")  # as an older paymesh kept

    server = start_postgres(pg_dir, password=PASSWORD)

    assert server.port < low
    assert (pg_dir / "paymesh-port").read_text().strip() == str(server.port)


def test_postgres__stop_when_not_running_is_a_no_op(pg_dir: Path) -> None:
    stop_postgres(pg_dir)  # never created
    start_postgres(pg_dir, password=PASSWORD)
    stop_postgres(pg_dir)

    stop_postgres(pg_dir)

    assert not postgres_running(pg_dir)


def test_redis__append_only_file_keeps_keys_across_restart(redis_dir: Path) -> None:
    server = start_redis(redis_dir)
    assert server.url() == f"redis://127.0.0.1:{server.port}/0"
    assert server.port < ephemeral_port_range()[0]
    client = redis.Redis.from_url(server.url())
    assert client.ping()
    assert client.set("payment:pay_1", "captured")
    client.close()

    stop_redis(redis_dir)
    assert not _pid_alive(server.pid)

    again = start_redis(redis_dir)
    assert again.port == server.port
    assert again.pid != server.pid
    client = redis.Redis.from_url(again.url())
    assert client.get("payment:pay_1") == b"captured"
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    client.close()


def test_redis__start_twice_returns_the_running_server(redis_dir: Path) -> None:
    first = start_redis(redis_dir)

    second = start_redis(redis_dir)

    assert second == first


def test_redis__stop_when_not_running_is_a_no_op(redis_dir: Path) -> None:
    stop_redis(redis_dir)  # never created
    server = start_redis(redis_dir)
    stop_redis(redis_dir)

    stop_redis(redis_dir)

    assert not _pid_alive(server.pid)
