"""Delivery batches: one job carries the attempts due for one endpoint.

The batch runs in-process (`run_batch`) on a database of its own, so neither the shared
platform's sweeper nor its worker sees these deliveries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select

from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.ids import new_id
from services.common.migrations import upgrade
from services.common.ports import free_port
from services.common.queue import make_queue, redis_connection
from services.runtime.platform import LocalPlatform, settings_from
from services.webhook import endpoints
from services.webhook.crypto import SecretBox
from services.webhook.deliveries import RetryPolicy
from services.webhook.dispatch import (
    BATCH_ATTEMPTS_MAX,
    BATCH_ATTEMPTS_MIN,
    DueAttempt,
    batches,
)
from services.webhook.endpoints import Owner
from services.webhook.jobs import run_batch
from services.webhook.models import Delivery, DeliveryAttempt, Event
from services.webhook.runtime import Runtime
from tests.integration.conftest import _fresh_database
from tests.integration.webhook_receiver import Receiver

MERCHANT = "acct_batches"


@pytest.fixture(scope="module")
def runtime(platform: LocalPlatform) -> Iterator[Runtime]:
    """A webhook runtime on a fresh database, delivering to loopback receivers."""
    url = _fresh_database(platform.settings.require_database_url())
    upgrade(url, ("webhook",))
    settings = settings_from(
        {
            "PAYMESH_DATABASE_URL": url,
            "PAYMESH_REDIS_URL": platform.settings.require_redis_url(),
            "PAYMESH_SECRET_ENCRYPTION_KEY": "batches-test-key",
            "PAYMESH_PAGE_TOKEN_KEY": "batches-test-key",
            "PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "PAYMESH_WEBHOOK_TIMEOUT_S": "3",
        }
    )
    engine = make_engine(url, pool_size=2)
    yield Runtime(
        settings=settings,
        sessions=make_sessionmaker(engine),
        # A queue of its own: the shared platform's worker must not see these jobs.
        queue=make_queue("paymesh.webhooks.batches-test", redis_connection(settings)),
        box=SecretBox("batches-test-key"),
        policy=RetryPolicy(
            delays_s=(60.0,), jitter_ratio=0.1, retry_after_max_s=5, disable_after_failing_s=3600
        ),
    )
    engine.dispose()


def _due_deliveries(runtime: Runtime, url: str, count: int) -> list[tuple[str, int]]:
    """An endpoint at `url` with `count` deliveries due now; their first attempts."""
    now = datetime.now(UTC)
    with transaction(runtime.sessions) as session:
        endpoint, _ = endpoints.create_endpoint(
            session,
            owner=Owner(MERCHANT, False),
            url=url,
            enabled_events=["*"],
            description="",
            box=runtime.box,
            allow_private=True,
        )
        events = [
            Event(
                id=new_id("evt"),
                merchant_id=MERCHANT,
                livemode=False,
                type="payment.succeeded",
                object_id=f"pay_batch{index}",
                data={"id": f"pay_batch{index}"},
                create_time=now,
            )
            for index in range(count)
        ]
        session.add_all(events)
        session.flush()
        deliveries = [
            Delivery(
                id=new_id("whd"),
                event_id=evt.id,
                endpoint_id=endpoint.id,
                merchant_id=MERCHANT,
                livemode=False,
                status="pending",
                attempt_count=0,
                round_attempts=0,
                next_attempt_time=now,
            )
            for evt in events
        ]
        session.add_all(deliveries)
        attempts = [(delivery.id, 1) for delivery in deliveries]
    return attempts


def test_run_batch__delivers_every_attempt_in_two_transactions(runtime: Runtime) -> None:
    engine = runtime.sessions.kw["bind"]
    statements: list[str] = []
    commits: list[object] = []

    def on_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def on_commit(conn: Any) -> None:
        commits.append(conn)

    with Receiver().running() as receiver:
        attempts = _due_deliveries(runtime, receiver.url("/batch"), 20)
        event.listen(engine, "before_cursor_execute", on_statement)
        event.listen(engine, "commit", on_commit)
        try:
            results = run_batch(runtime, attempts=attempts)
        finally:
            event.remove(engine, "before_cursor_execute", on_statement)
            event.remove(engine, "commit", on_commit)

        assert results == ["delivered"] * 20
        assert len(receiver.received("/batch")) == 20
    # Claim and record: two transactions and a handful of statements for the whole batch
    # (one attempt per job cost two transactions and about ten statements per delivery).
    assert len(commits) == 2
    assert len(statements) <= 12, Counter(s.split(" WHERE ")[0][:100] for s in statements)
    with transaction(runtime.sessions) as session:
        statuses = session.scalars(
            select(Delivery.status).where(Delivery.id.in_([d for d, _ in attempts]))
        ).all()
    assert statuses == ["delivered"] * 20


def test_run_batch__after_an_attempt_gets_no_answer_the_rest_are_released_unspent(
    runtime: Runtime,
) -> None:
    # Nothing listens on this port: the first attempt is refused, the others would be too.
    attempts = _due_deliveries(runtime, f"http://127.0.0.1:{free_port()}/down", 3)

    results = run_batch(runtime, attempts=attempts)

    assert results == ["failed", "released", "released"]
    with transaction(runtime.sessions) as session:
        rows = {
            d.id: d
            for d in session.scalars(
                select(Delivery).where(Delivery.id.in_([d for d, _ in attempts]))
            )
        }
        tried = rows[attempts[0][0]]
        assert (tried.status, tried.attempt_count, tried.round_attempts) == ("failing", 1, 1)
        for delivery_id, _ in attempts[1:]:
            kept = rows[delivery_id]
            # Released as never claimed: same attempt number next, retry schedule untouched.
            assert (kept.status, kept.attempt_count, kept.round_attempts) == ("pending", 0, 0)
            assert kept.lease_expire_time is None
            assert kept.next_attempt_time is not None
            assert kept.next_attempt_time <= datetime.now(UTC)
        logged = session.scalars(
            select(DeliveryAttempt.delivery_id).where(
                DeliveryAttempt.delivery_id.in_([d for d, _ in attempts])
            )
        ).all()
    assert logged == [attempts[0][0]]


def test_run_batch__a_duplicate_batch_sends_nothing_twice(runtime: Runtime) -> None:
    with Receiver().running() as receiver:
        attempts = _due_deliveries(runtime, receiver.url("/twice"), 3)

        first = run_batch(runtime, attempts=attempts)
        second = run_batch(runtime, attempts=attempts)

        assert first == ["delivered"] * 3
        assert second == ["not due"] * 3
        assert len(receiver.received("/twice")) == 3


def test_batches__one_endpoint_per_batch_bounded_and_spread() -> None:
    many = [DueAttempt(f"whd_a{i}", 1, "we_a") for i in range(3 * BATCH_ATTEMPTS_MAX + 1)]
    few = [DueAttempt(f"whd_b{i}", 2, "we_b") for i in range(BATCH_ATTEMPTS_MIN + 1)]
    one = [DueAttempt("whd_c", 1, "we_c")]

    grouped = batches([*many[:1], *few, *one, *many[1:]])

    sizes: dict[str, list[int]] = {a.endpoint_id: [] for a in many + few + one}
    for batch in grouped:
        (endpoint_id,) = {a.endpoint_id for a in batch}
        sizes[endpoint_id].append(len(batch))
    # Bounded: 151 attempts make four batches of at most 50; spread: 6 make two of 3.
    assert sizes == {"we_a": [38, 38, 38, 37], "we_b": [3, 3], "we_c": [1]}
    assert [a for batch in grouped if batch[0].endpoint_id == "we_a" for a in batch] == many
