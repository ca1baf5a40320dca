"""The outbox relay's rounds (`relay_batch`): own database, real Redis and webhook service.

The shared platform runs its own relay on its own database; these tests write outbox rows to a
fresh payment schema and queue jobs on a queue of their own, so only the relay under test sees
them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from paymesh.webhook.v1 import webhook_internal_pb2, webhook_internal_pb2_grpc
from rq import Queue
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.common.clients import sync_channel
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.ids import new_id
from services.common.migrations import upgrade
from services.common.ports import free_port
from services.common.queue import batch_job_id, make_queue, redis_connection
from services.payment import outbox
from services.payment.models import OutboxMessage
from services.payment.relay import Publisher, relay_batch, webhook_publisher
from services.runtime.platform import LocalPlatform, settings_from
from services.webhook.models import Delivery
from tests.integration.conftest import MerchantKeys, _fresh_database
from tests.integration.webhook_receiver import create_endpoint

RETRY_DELAY_MAX_S = 30.0


class Crash(BaseException):
    """The relay process dying mid-round (not an error the relay handles)."""


@dataclass(frozen=True)
class Relay:
    """What a relay round needs: the outbox's sessions, a job queue and the webhook publisher."""

    sessions: sessionmaker[Session]
    queue: Queue
    publish: Publisher
    internal: webhook_internal_pb2_grpc.WebhookInternalServiceStub

    def round(self, *, queue: Queue | None = None, publish: Publisher | None = None) -> int:
        """One relay round, with the real queue and publisher unless others are given."""
        return relay_batch(
            self.sessions,
            queue=queue or self.queue,
            publish=publish or self.publish,
            batch_size=100,
            retry_delay_max_s=RETRY_DELAY_MAX_S,
        )


@pytest.fixture(scope="module")
def outbox_sessions(platform: LocalPlatform) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh database with the payment schema (and no relay of its own)."""
    url = _fresh_database(platform.settings.require_database_url())
    upgrade(url, ("payment",))
    engine = make_engine(url, pool_size=2)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def relay(platform: LocalPlatform, outbox_sessions: sessionmaker[Session]) -> Iterator[Relay]:
    """A relay on the test's outbox, with a queue of its own and the platform's webhook service."""
    with transaction(outbox_sessions) as session:
        session.query(OutboxMessage).delete()
    channel = sync_channel(platform.settings.target("webhook"))
    queue = make_queue(
        f"paymesh.payments.relay-test-{secrets.token_hex(4)}",
        redis_connection(platform.settings),
    )
    yield Relay(
        outbox_sessions,
        queue,
        webhook_publisher(platform.settings),
        webhook_internal_pb2_grpc.WebhookInternalServiceStub(channel),
    )
    queue.empty()  # type: ignore[no-untyped-call]
    channel.close()


def _write(
    sessions: sessionmaker[Session], merchant_id: str, *, jobs: int, events: list[str]
) -> tuple[list[str], list[str]]:
    """Writes job rows and event rows (of these types, about one payment); returns their ids."""
    payment_id = new_id("pay")
    job_ids = [f"payment-{payment_id}-process-{n}" for n in range(1, jobs + 1)]
    with transaction(sessions) as session:
        for job_id in job_ids:
            outbox.add_job(session, func=outbox.PROCESS_PAYMENT, job_id=job_id, args=[payment_id])
        event_ids = [
            outbox.add_event(
                session,
                event_type=event_type,
                merchant_id=merchant_id,
                livemode=False,
                obj={"id": payment_id, "amount": "100", "status": "succeeded"},
            )
            for event_type in events
        ]
    return job_ids, event_ids


def _paid(job_ids: list[str]) -> str:
    """The payment that `_write`'s drive rows `job_ids` drive."""
    (payment_id,) = {job_id.split("-")[1] for job_id in job_ids}
    return payment_id


def _queued(relay: Relay) -> list[tuple[str, str, list[Any]]]:
    """The jobs on the relay's queue, in order: id, function and arguments."""
    jobs = [relay.queue.fetch_job(job_id) for job_id in relay.queue.get_job_ids()]
    return [(job.id, str(job.func_name), list(job.args)) for job in jobs if job is not None]


def _drives(job_ids: list[str], payment_ids: list[str]) -> tuple[str, str, list[Any]]:
    """The one batch job that the drive rows `job_ids` (of `payment_ids`) become."""
    return (batch_job_id("payments", job_ids), outbox.PROCESS_PAYMENTS, [payment_ids])


def _rows(sessions: sessionmaker[Session]) -> list[OutboxMessage]:
    with transaction(sessions) as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def _stored_events(relay: Relay, event_ids: list[str]) -> list[str]:
    """Which of these events the webhook service stored (each object's events, oldest first)."""
    stored: list[str] = []
    for object_id in {_object_of(relay, event_id) for event_id in event_ids} - {""}:
        reply = relay.internal.ListObjectEvents(
            webhook_internal_pb2.ListObjectEventsRequest(object_id=object_id), timeout=10
        )
        stored += [event.id for event in reply.events if event.id in event_ids]
    return sorted(stored)


def _object_of(relay: Relay, event_id: str) -> str:
    with transaction(relay.sessions) as session:
        for row in session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "event")):
            if row.payload["id"] == event_id:
                return str(row.payload["object"]["id"])
    return ""


def test_relay_batch__hands_every_row_over_in_one_round(
    relay: Relay, merchant: MerchantKeys
) -> None:
    job_ids, event_ids = _write(
        relay.sessions, merchant.id, jobs=2, events=["payment.processing", "payment.succeeded"]
    )
    more_jobs, more_events = _write(relay.sessions, merchant.id, jobs=1, events=["payment.failed"])

    assert relay.round() == 6

    rows = _rows(relay.sessions)
    assert all(row.relay_time is not None and row.attempts == 0 for row in rows)
    # One job drives both payments; the first one's two drives are one.
    assert _queued(relay) == [_drives(job_ids + more_jobs, [_paid(job_ids), _paid(more_jobs)])]
    assert _stored_events(relay, event_ids + more_events) == sorted(event_ids + more_events)
    assert relay.round() == 0


def test_relay_batch__a_refused_event_waits_alone(relay: Relay, merchant: MerchantKeys) -> None:
    job_ids, event_ids = _write(
        relay.sessions, merchant.id, jobs=1, events=["payment.succeeded", "Not A Type"]
    )
    before = datetime.now(UTC)

    assert relay.round() == 3

    rows = {row.payload.get("id", row.payload.get("job_id")): row for row in _rows(relay.sessions)}
    good, bad = rows[event_ids[0]], rows[event_ids[1]]
    assert good.relay_time is not None and rows[job_ids[0]].relay_time is not None
    assert bad.relay_time is None and bad.attempts == 1
    assert "INVALID_ARGUMENT" in bad.last_error and "type" in bad.last_error
    assert bad.next_attempt_time > before
    assert _stored_events(relay, event_ids) == [event_ids[0]]
    assert relay.round() == 0, "the refused event waits for its backoff"


def test_relay_batch__redis_down_defers_every_job_row_and_events_still_go(
    relay: Relay, merchant: MerchantKeys
) -> None:
    _, event_ids = _write(relay.sessions, merchant.id, jobs=2, events=["payment.succeeded"])
    dead = make_queue("paymesh.payments", redis.Redis(port=free_port(), socket_connect_timeout=1))

    assert relay.round(queue=dead) == 3

    rows = _rows(relay.sessions)
    jobs = [row for row in rows if row.kind == "job"]
    assert [row.relay_time for row in jobs] == [None, None]
    assert all(row.attempts == 1 and row.last_error.startswith("redis") for row in jobs)
    assert [row.relay_time is not None for row in rows if row.kind == "event"] == [True]
    assert _stored_events(relay, event_ids) == event_ids
    assert relay.queue.get_job_ids() == []


def test_relay_batch__webhook_down_defers_every_event_row_and_jobs_still_go(
    relay: Relay, platform: LocalPlatform, merchant: MerchantKeys
) -> None:
    job_ids, _ = _write(
        relay.sessions, merchant.id, jobs=1, events=["payment.processing", "payment.succeeded"]
    )
    nowhere = settings_from(
        {
            "PAYMESH_WEBHOOK_TARGET": f"127.0.0.1:{free_port()}",
            "PAYMESH_DATABASE_URL": platform.settings.require_database_url(),
        }
    )

    assert relay.round(publish=webhook_publisher(nowhere)) == 3

    rows = _rows(relay.sessions)
    events = [row for row in rows if row.kind == "event"]
    assert [row.relay_time for row in events] == [None, None]
    assert all(row.attempts == 1 and "webhook: UNAVAILABLE" in row.last_error for row in events)
    assert [row.relay_time is not None for row in rows if row.kind == "job"] == [True]
    assert _queued(relay) == [_drives(job_ids, [_paid(job_ids)])]


def test_relay_batch__killed_after_handing_over_before_commit__rows_go_again_harmlessly(
    relay: Relay, api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    create_endpoint(api, merchant.secret_key, "http://127.0.0.1:9/hook", ["*"])
    job_ids, event_ids = _write(
        relay.sessions, merchant.id, jobs=2, events=["payment.processing", "payment.succeeded"]
    )

    def publish_then_die(payloads: list[dict[str, Any]]) -> list[str | None]:
        relay.publish(payloads)
        raise Crash

    with pytest.raises(Crash):
        relay.round(publish=publish_then_die)
    assert all(row.relay_time is None for row in _rows(relay.sessions))
    assert _queued(relay) == [_drives(job_ids, [_paid(job_ids)])]
    assert _stored_events(relay, event_ids) == sorted(event_ids)

    assert relay.round() == 4

    assert all(row.relay_time is not None for row in _rows(relay.sessions))
    assert _queued(relay) == [_drives(job_ids, [_paid(job_ids)])], "the same job, once"
    assert _stored_events(relay, event_ids) == sorted(event_ids)
    with transaction(sessions) as session:
        delivered = session.scalars(
            select(Delivery.event_id).where(Delivery.event_id.in_(event_ids))
        )
        assert sorted(delivered) == sorted(event_ids)
