"""Payment-shaped ledger postings from N concurrent posters.

Every posting is a 3-leg capture (debit the platform's processor_receivable, credit a merchant's
balance, credit the platform's fees), so the two platform accounts are hot rows every poster
touches. `run_rpc_postings` posts them through the ledger service over gRPC, exactly as the
payment worker does: one PostTransaction per posting, or PostTransactions of a batch (bench/run.py
calls it); `run_postings` calls the domain
layer in-process. The command line runs a matrix of posters x balance shards through the domain
layer on its own embedded PostgreSQL and prints the figures:

    .venv/bin/python -m bench.ledger_postings --clients 8,32 --shards 1,16 --duration-s 10
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from pydantic import SecretStr
from sqlalchemy import select, text

from bench.loadgen import Point, Postgres, Run, parse_pgbench_log, percentile
from services.common.clients import sync_channel
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.ids import new_id
from services.common.migrations import upgrade
from services.common.settings import Settings
from services.ledger import accounts, posting
from services.ledger.models import Account
from services.ledger.posting import Posting
from services.ledger.server import run_unit_of_work
from services.payment import ledger as payment_ledger
from services.payment.models import Payment

MERCHANTS = 50
# Each shard setting gets its own currency, so its platform accounts are created with it.
CURRENCIES = ("USD", "EUR", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN")


def _capture(merchant_id: str, amount: int, currency: str) -> list[Posting]:
    fee = amount * 29 // 1000 + 30
    return [
        Posting("platform", "processor_receivable", "debit", amount, currency),
        Posting(merchant_id, "merchant_balance", "credit", amount - fee, currency),
        Posting("platform", "platform_fees", "credit", fee, currency),
    ]


def run_postings(
    *,
    settings: Settings,
    clients: int,
    duration_s: float,
    slice_s: float = 2.0,
    hot_account_shards: int | None = None,
    currency: str = "USD",
    merchant_prefix: str = "",
) -> Run:
    """Posts captures from `clients` threads for `duration_s`; throughput and latency per slice."""
    shards = hot_account_shards or settings.ledger_hot_account_shards
    engine = make_engine(settings.require_database_url(), pool_size=clients)
    sessions = make_sessionmaker(engine)
    prefix = merchant_prefix or f"{new_id('mer')}_"
    merchants = [f"{prefix}{number}" for number in range(MERCHANTS)]

    def post(index: int) -> None:
        legs = _capture(merchants[index % MERCHANTS], 1000 + index % 9000, currency)
        run_unit_of_work(
            sessions,
            lambda session: posting.post_transaction(
                session,
                external_reference=f"bench:{new_id('pay')}",
                postings=legs,
                livemode=False,
                metadata={"payment_id": new_id("pay")},
                hot_account_shards=shards,
            ),
        )

    # Creates the accounts (with this run's shard count) before the clock starts.
    for index in range(MERCHANTS):
        post(index)
    run = _drive(post, clients=clients, duration_s=duration_s, slice_s=slice_s)
    engine.dispose()
    run.notes += [f"hot_account_shards={shards}", f"currency={currency}"]
    return run


def run_rpc_postings(
    *,
    target: str,
    clients: int,
    duration_s: float,
    slice_s: float = 2.0,
    timeout_s: float = 10.0,
    batch: int = 1,
) -> Run:
    """Posts captures through the ledger service from `clients` threads.

    The request is the payment worker's own (`services.payment.ledger.capture_request`, a 1%
    fee) on a blocking stub over one channel shared by the threads. With `batch` 1 each call
    is one PostTransaction; above 1 each call is one PostTransactions of `batch` captures, as
    the payment worker posts a batch of payments (`post_many`), and every posting of a call
    counts, with the call's latency. The ledger's hot-account shards are the service's setting.
    """
    channel = sync_channel(target)
    stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
    merchants = [f"{new_id('mer')}_{number}" for number in range(MERCHANTS)]

    def request(index: int) -> ledger_internal_pb2.PostTransactionRequest:
        amount = 1000 + index % 9000
        payment = Payment(
            id=new_id("pay"),
            merchant_id=merchants[index % MERCHANTS],
            currency="USD",
            livemode=False,
        )
        return payment_ledger.capture_request(payment, amount=amount, fee=amount // 100)

    def post(index: int) -> int:
        if batch == 1:
            payment_ledger.post(stub, request(index), timeout_s=timeout_s)
            return 1
        answers = payment_ledger.post_many(
            stub, [request(index * batch + n) for n in range(batch)], timeout_s=timeout_s
        )
        failed = [answer for answer in answers if isinstance(answer, Exception)]
        if failed:
            raise failed[0]
        return batch

    try:
        # Creates the merchants' accounts before the clock starts.
        for index in range(MERCHANTS):
            post(index)
        return _drive(post, clients=clients, duration_s=duration_s, slice_s=slice_s)
    finally:
        channel.close()


def _drive(
    post: Callable[[int], int | None], *, clients: int, duration_s: float, slice_s: float
) -> Run:
    """Calls `post` from `clients` threads in a closed loop; throughput and latency per slice.

    `post` answers how many postings its call made (None: one); each counts, with the call's
    latency.
    """
    done: list[tuple[float, float]] = []  # (completion time, latency in ms)
    errors: dict[str, int] = {}
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + duration_s

    def poster(number: int) -> None:
        mine: list[tuple[float, float]] = []
        failed: dict[str, int] = {}
        index = number
        while (began := time.perf_counter()) < deadline:
            try:
                posted = post(index) or 1
            except Exception as error:  # a failure is counted, never retried here
                kind = (
                    error.code().name if isinstance(error, grpc.RpcError) else type(error).__name__
                )
                failed[kind] = failed.get(kind, 0) + 1
            else:
                finished = time.perf_counter()
                mine += [(finished - start, (finished - began) * 1000)] * posted
            index += clients
        with lock:
            done.extend(mine)
            for kind, count in failed.items():
                errors[kind] = errors.get(kind, 0) + count

    threads = [threading.Thread(target=poster, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    latencies = [latency for _, latency in done]
    series = []
    for index in range(int(duration_s // slice_s)):
        chunk = [lat for end, lat in done if index * slice_s <= end < (index + 1) * slice_s]
        if chunk:
            series.append(
                Point(
                    t_s=round(index * slice_s, 2),
                    rps=round(len(chunk) / slice_s, 1),
                    p50_ms=round(percentile(chunk, 50), 2),
                    p99_ms=round(percentile(chunk, 99), 2),
                )
            )
    return Run(
        requests=len(done),
        duration_s=round(elapsed, 3),
        p50_ms=round(percentile(latencies, 50), 2) if latencies else 0.0,
        p99_ms=round(percentile(latencies, 99), 2) if latencies else 0.0,
        errors=sum(errors.values()),
        series=series,
        errors_by_kind=errors,
    )


# One capture in SQL alone (no Python): the same rows and triggers as `posting.post_transaction`,
# so the hot-row cost is measured without the client's overhead. The accounts exist already.
SQL_CAPTURE = """\\set m random(0, {merchants_last})
\\set amount random(1000, 9999)
WITH t AS (
  INSERT INTO ledger.transactions (id, external_reference, postings_hash, livemode)
  VALUES ('ltx_' || md5(random()::text), 'sql:' || md5(random()::text || clock_timestamp()), 'x',
          false)
  RETURNING id
), legs (owner, kind, direction, amount) AS (
  VALUES ('platform', 'processor_receivable', 'debit', :amount),
         ('{merchant_prefix}' || :m, 'merchant_balance', 'credit', :amount - 30),
         ('platform', 'platform_fees', 'credit', 30)
)
INSERT INTO ledger.entries (id, transaction_id, account_id, direction, amount, currency)
SELECT 'le_' || md5(random()::text), t.id, a.id, legs.direction, legs.amount, a.currency
FROM t, legs JOIN ledger.accounts a
  ON a.owner = legs.owner AND a.kind = legs.kind AND a.currency = '{currency}' AND NOT a.livemode
ORDER BY a.id;
"""


def run_sql_postings(
    pg: Postgres,
    *,
    database: str,
    clients: int,
    duration_s: float,
    currency: str,
    merchant_prefix: str,
    log_dir: Path,
    slice_s: float = 2.0,
) -> Run:
    """The same captures as pgbench transactions (one statement, autocommit) from `clients`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    script = log_dir / f"capture_{currency}.sql"
    script.write_text(
        SQL_CAPTURE.format(
            merchants_last=MERCHANTS - 1, merchant_prefix=merchant_prefix, currency=currency
        )
    )
    prefix = log_dir / f"ledger_{currency}_c{clients}"
    for old in log_dir.glob(f"{prefix.name}*"):
        old.unlink()
    completed = subprocess.run(
        pg.command(
            "pgbench",
            "-n",
            "-f",
            str(script),
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(max(1, round(duration_s))),
            "-l",
            f"--log-prefix={prefix}",
            database,
        ),
        capture_output=True,
        text=True,
        timeout=duration_s + 120,
        check=False,
        env=pg.env(),
    )
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed: {completed.stderr[-2000:]}")
    lines: list[str] = []
    for path in sorted(log_dir.glob(f"{prefix.name}*")):
        lines += path.read_text().splitlines()
    return parse_pgbench_log(lines, slice_s=slice_s)


def hot_balance_read_ms(settings: Settings, *, currency: str) -> tuple[float, float, int]:
    """Time to read the platform fee balance: stored (sum of shards) vs summing its entries."""
    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            account_id = session.scalars(
                select(Account.id).where(
                    Account.owner == "platform",
                    Account.kind == "platform_fees",
                    Account.currency == currency,
                    Account.livemode.is_(False),
                )
            ).one()
            began = time.perf_counter()
            stored = accounts.stored_balances(session, [account_id])[account_id]
            stored_ms = (time.perf_counter() - began) * 1000
            began = time.perf_counter()
            summed = accounts.entries_balance(session, account_id)
            summed_ms = (time.perf_counter() - began) * 1000
            assert stored == summed, (stored, summed)
            entries = session.execute(
                text("SELECT count(*) FROM ledger.entries WHERE account_id = :a"),
                {"a": account_id},
            ).scalar_one()
        return stored_ms, summed_ms, int(entries)
    finally:
        engine.dispose()


def main() -> None:
    """Runs the matrix (domain layer, then SQL alone) and prints one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="8,32", help="comma-separated poster counts")
    parser.add_argument("--shards", default="1,16", help="comma-separated hot-account shards")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--no-sql", action="store_true", help="skip the pgbench runs")
    args = parser.parse_args()
    shard_counts = [int(value) for value in args.shards.split(",")]
    client_counts = [int(value) for value in args.clients.split(",")]
    assert len(shard_counts) <= len(CURRENCIES), "too many shard settings"

    from services.runtime import embedded  # noqa: PLC0415 - only the CLI starts a server

    with tempfile.TemporaryDirectory(prefix="paymesh-ledger-bench-") as folder:
        server = embedded.start_postgres(Path(folder) / "pg", password=secrets.token_urlsafe(32))
        try:
            url = server.url()
            upgrade(url, ("ledger",))
            settings = Settings(database_url=SecretStr(url))
            parts = urlsplit(server.url(driver="postgresql"))
            pg = Postgres(
                bin_dir=server.bin("pgbench").parent,
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 5432,
                user=parts.username or "postgres",
                password=server.password,
            )
            print(
                f"{'layer':>6} {'shards':>6} {'posters':>7} {'postings/s':>10} "
                f"{'p50 ms':>8} {'p99 ms':>8}"
            )
            for shards, currency in zip(shard_counts, CURRENCIES, strict=False):
                prefix = f"{new_id('mer')}_"
                for clients in client_counts:
                    run = run_postings(
                        settings=settings,
                        clients=clients,
                        duration_s=args.duration_s,
                        hot_account_shards=shards,
                        currency=currency,
                        merchant_prefix=prefix,
                    )
                    _line("python", shards, clients, run)
                if not args.no_sql:
                    for clients in client_counts:
                        run = run_sql_postings(
                            pg,
                            database=(parts.path or "/paymesh").lstrip("/"),
                            clients=clients,
                            duration_s=args.duration_s,
                            currency=currency,
                            merchant_prefix=prefix,
                            log_dir=Path(folder) / "logs",
                        )
                        _line("sql", shards, clients, run)
                stored_ms, summed_ms, entries = hot_balance_read_ms(settings, currency=currency)
                print(
                    f"       fee balance read: stored {stored_ms:.2f} ms, summed over "
                    f"{entries} entries {summed_ms:.2f} ms",
                    flush=True,
                )
        finally:
            embedded.stop_postgres(Path(folder) / "pg")


def _line(layer: str, shards: int, clients: int, run: Run) -> None:
    print(
        f"{layer:>6} {shards:>6} {clients:>7} {run.rps:>10.1f} {run.p50_ms:>8.1f} "
        f"{run.p99_ms:>8.1f}" + (f"  errors={run.errors}" if run.errors else ""),
        flush=True,
    )


if __name__ == "__main__":
    main()
