"""Delivery rules checked on the real database through the domain functions.

These arrange states that take days to reach (an endpoint failing for five days, events past
their retention) and races (a duplicate job), which the edge cannot set up quickly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.db import transaction
from services.common.ids import new_id
from services.runtime.platform import LocalPlatform
from services.webhook import deliveries, endpoints, events
from services.webhook.crypto import SecretBox
from services.webhook.deliveries import RetryPolicy
from services.webhook.endpoints import Owner
from services.webhook.models import Delivery, Endpoint, Event
from services.webhook.sender import Outcome
from tests.integration.conftest import MerchantKeys

POLICY = RetryPolicy(
    delays_s=(1.0, 1.0, 1.0),
    jitter_ratio=0.1,
    retry_after_max_s=10.0,
    disable_after_failing_s=5 * 86400.0,
)
FAILED = Outcome(status_code=500, body="down", error="HTTP 500", duration_ms=12)


@pytest.fixture(scope="module")
def box(platform: LocalPlatform) -> SecretBox:
    """The platform's secret box (same key as its processes)."""
    return SecretBox(platform.settings.require_secret("secret_encryption_key"))


@pytest.fixture
def claimed(sessions: Any, merchant: MerchantKeys, box: SecretBox) -> tuple[str, str]:
    """An endpoint with one delivery whose first attempt is claimed: (endpoint id, delivery id).

    Arranged and claimed in one transaction, so the platform's own worker never sees it due.
    """
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        endpoint, _ = endpoints.create_endpoint(
            session,
            owner=Owner(merchant.id, False),
            url="https://hooks.example.com/never-called",
            enabled_events=["*"],
            description="",
            box=box,
            allow_private=False,
        )
        event = _event(session, merchant.id, create_time=now)
        delivery = Delivery(
            id=new_id("whd"),
            event_id=event.id,
            endpoint_id=endpoint.id,
            merchant_id=merchant.id,
            livemode=False,
            status="pending",
            attempt_count=0,
            round_attempts=0,
            next_attempt_time=now,
        )
        session.add(delivery)
        session.flush()
        claims = deliveries.claim_attempts(
            session, attempts=[(delivery.id, 1)], lease_s=300, policy=POLICY, box=box
        )
        assert len(claims) == 1
    return endpoint.id, delivery.id


def _event(session: Session, merchant_id: str, *, create_time: datetime) -> Event:
    event = Event(
        id=new_id("evt"),
        merchant_id=merchant_id,
        livemode=False,
        type="payment.succeeded",
        object_id="pay_rules",
        data={"id": "pay_rules"},
        create_time=create_time,
    )
    session.add(event)
    session.flush()
    return event


def _record(sessions: Any, delivery_id: str, outcome: Outcome, attempt_number: int = 1) -> None:
    with transaction(sessions) as session:
        deliveries.record_outcomes(
            session,
            outcomes=[(delivery_id, attempt_number, outcome)],
            policy=POLICY,
            event_bytes_max=256 * 1024,
        )


def test_failing_for_too_long__disables_the_endpoint_and_tells_the_merchant(
    sessions: Any, merchant: MerchantKeys, claimed: tuple[str, str]
) -> None:
    endpoint_id, delivery_id = claimed
    with transaction(sessions) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        assert endpoint is not None
        endpoint.failing_since = datetime.now(UTC) - timedelta(days=5, minutes=1)

    _record(sessions, delivery_id, FAILED)

    with transaction(sessions) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        delivery = session.get(Delivery, delivery_id)
        notices = session.scalars(
            select(Event).where(
                Event.merchant_id == merchant.id, Event.type == "webhook_endpoint.disabled"
            )
        ).all()
        assert endpoint is not None and delivery is not None
        assert (endpoint.status, endpoint.disabled_reason) == ("disabled", "failing")
        assert delivery.status == "dead"
        assert [n.data["id"] for n in notices] == [endpoint_id]


def test_failing_briefly__schedules_a_retry_and_starts_the_streak(
    sessions: Any, claimed: tuple[str, str]
) -> None:
    endpoint_id, delivery_id = claimed
    before = datetime.now(UTC)

    _record(sessions, delivery_id, FAILED)

    with transaction(sessions) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        delivery = session.get(Delivery, delivery_id)
        assert endpoint is not None and delivery is not None
        assert endpoint.status == "enabled"
        assert endpoint.failing_since is not None and endpoint.failing_since >= before
        assert delivery.status == "failing"
        assert delivery.next_attempt_time is not None
        assert delivery.next_attempt_time >= before + timedelta(seconds=0.9)
        assert delivery.lease_expire_time is None
        assert (delivery.last_status_code, delivery.last_error) == (500, "HTTP 500")


def test_duplicate_or_stale_jobs__claim_nothing_and_record_nothing(
    sessions: Any, box: SecretBox, claimed: tuple[str, str]
) -> None:
    _, delivery_id = claimed

    with transaction(sessions) as session:
        again = deliveries.claim_attempts(
            session, attempts=[(delivery_id, 1)], lease_s=300, policy=POLICY, box=box
        )
        ahead = deliveries.claim_attempts(
            session, attempts=[(delivery_id, 2)], lease_s=300, policy=POLICY, box=box
        )
    _record(sessions, delivery_id, FAILED, attempt_number=7)

    assert (again, ahead) == ([], [])
    with transaction(sessions) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        assert (delivery.status, delivery.attempt_count, delivery.last_error) == ("pending", 1, "")


def test_a_success__clears_the_failure_streak(sessions: Any, claimed: tuple[str, str]) -> None:
    endpoint_id, delivery_id = claimed
    with transaction(sessions) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        assert endpoint is not None
        endpoint.failing_since = datetime.now(UTC) - timedelta(days=1)

    _record(sessions, delivery_id, Outcome(204, "", "", 5))

    with transaction(sessions) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        delivery = session.get(Delivery, delivery_id)
        assert endpoint is not None and delivery is not None
        assert endpoint.failing_since is None
        assert (delivery.status, delivery.next_attempt_time) == ("delivered", None)


def test_retention__deletes_only_events_older_than_the_retention(
    sessions: Any, merchant: MerchantKeys
) -> None:
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        old = _event(session, merchant.id, create_time=now - timedelta(days=31)).id
        recent = _event(session, merchant.id, create_time=now - timedelta(days=29)).id

    with transaction(sessions) as session:
        deleted = events.delete_expired_events(session, retention_days=30)

    with transaction(sessions) as session:
        assert deleted >= 1
        assert session.get(Event, old) is None
        assert session.get(Event, recent) is not None
