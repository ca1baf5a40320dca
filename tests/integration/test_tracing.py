"""One trace per payment, from the edge to the webhook (services/common/tracing.py).

A platform of its own traces to an OTLP receiver in this process; a card payment made through
the edge must come back as one trace holding the edge's span, the payment service's, the
relay's, the worker's, the ledger's and the webhook delivery's, each a descendant of the one
before it and starting after it. Set PAYMESH_TEST_TRACE_OUT to a path to have the trace
written there as a text waterfall (docs/observability.md shows one made so).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.admin import merchants, operators
from services.common.db import make_engine, make_sessionmaker, transaction
from services.runtime.platform import LocalPlatform
from tests.conftest import MerchantKeys, platform_variables
from tests.integration.otlp_collector import Collector, Span, serving, waterfall
from tests.integration.test_payments import card, created, wait_for
from tests.integration.webhook_receiver import Receiver, Reply, create_endpoint, wait_until

pytestmark = pytest.mark.integration

# Spans are exported in batches every few seconds (the SDK's default schedule).
EXPORT_WAIT_S = 30.0


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    """The OTLP receiver, and its port."""
    with serving() as served:
        yield served


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, collector: tuple[Collector, int]
) -> Iterator[LocalPlatform]:
    """A platform of this module's own, tracing to the receiver."""
    variables = platform_variables(tmp_path_factory.mktemp("traced"))
    variables["PAYMESH_OTEL_ENDPOINT"] = f"http://127.0.0.1:{collector[1]}"
    running = LocalPlatform(variables)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def traced_merchant(traced: LocalPlatform) -> MerchantKeys:
    """A merchant of the traced platform."""
    engine = make_engine(traced.settings.require_database_url(), pool_size=1)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            made = merchants.create_merchant(session, name="Traced Merchant")
            secret = merchants.create_api_key(
                session, merchant_id=made.id, mode="test", kind="secret"
            )
            publishable = merchants.create_api_key(
                session, merchant_id=made.id, mode="test", kind="publishable"
            )
            return MerchantKeys(made.id, secret.key, publishable.key)
    finally:
        engine.dispose()


def _ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    """The span's parents up to the root, nearest first (within the trace's spans)."""
    found = []
    while span.parent_id:
        parent = by_id.get(span.parent_id)
        assert parent is not None, f"{span.service}: {span.name} has a parent not in the trace"
        found.append(parent)
        span = parent
    return found


def _one(spans: list[Span], service: str, name: str) -> Span:
    matching = [s for s in spans if s.service == service and s.name == name]
    assert len(matching) == 1, (service, name, [(s.service, s.name) for s in spans])
    return matching[0]


def test_a_card_payment_is_one_trace_from_the_edge_to_the_webhook(
    traced: LocalPlatform, traced_merchant: MerchantKeys, collector: tuple[Collector, int]
) -> None:
    spans_of = collector[0]
    with (
        Receiver().running() as receiver,
        httpx.Client(base_url=traced.base_url, timeout=30) as api,
    ):
        path = "/hooks/traced"
        # The first attempt fails; the retry (enqueued by the webhook sweeper after its
        # backoff, by no request of the payment's) must still be a span of the payment's trace.
        receiver.script(path, Reply(500, b"not now"), then=Reply(200))
        create_endpoint(
            api, traced_merchant.secret_key, receiver.url(path), events=["payment.succeeded"]
        )
        payment = created(api, traced_merchant.secret_key, payment_method={"card": card()})
        assert wait_for(api, traced_merchant.secret_key, payment["id"])["status"] == "succeeded"
        first, hook = receiver.wait_for(path, 2)
    event = json.loads(hook.body)
    assert json.loads(first.body)["id"] == event["id"]
    assert event["data"]["object"]["id"] == payment["id"]

    # The delivery attempts' spans name their event; their trace is the payment's.
    def attempts() -> list[Span] | None:
        found = [
            s
            for s in spans_of.spans()
            if s.name == "webhook attempt" and s.attributes.get("paymesh.event.id") == event["id"]
        ]
        return found if len(found) == 2 else None

    failed, delivery = wait_until(attempts, timeout_s=EXPORT_WAIT_S)
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.trace_id == delivery.trace_id

    def whole_trace() -> list[Span] | None:
        spans = spans_of.spans(delivery.trace_id)
        by_id = {s.span_id: s for s in spans}
        complete = all(s.parent_id in by_id or not s.parent_id for s in spans)
        return spans if complete and any(s.service == "edge" for s in spans) else None

    spans = wait_until(whole_trace, timeout_s=EXPORT_WAIT_S)
    by_id = {s.span_id: s for s in spans}
    out = os.environ.get("PAYMESH_TEST_TRACE_OUT")
    if out:
        # Every process's last batch too (the admin's span of the key lookup, say).
        time.sleep(EXPORT_WAIT_S / 4)
        Path(out).write_text(waterfall(spans_of.spans(delivery.trace_id)))
    lineage = _ancestors(delivery, by_id)

    # One root: the edge's span of POST /v1/payments.
    (root,) = [s for s in spans if not s.parent_id]
    assert root.service == "edge"
    create = _one(spans, "payment", "/paymesh.payment.v1.PaymentService/CreatePayment")
    relay = _one(spans, "payment-relay", "outbox relay job")
    drive = _one(spans, "payment-worker", "job process_payments")
    posting = _one(spans, "ledger", "/paymesh.ledger.v1.LedgerInternalService/PostTransactions")
    # Two events are published (payment.processing by the relay, payment.succeeded by the
    # worker); the endpoint takes the second only.
    (publish,) = [
        s
        for s in _ancestors(failed, by_id)
        if (s.service, s.name)
        == ("webhook", "/paymesh.webhook.v1.WebhookInternalService/PublishEvents")
    ]
    # The first attempt's job continues the trace; the retry's job was enqueued by the sweeper
    # (a trace of its own), and its attempt continues the event's context stored with the event.
    deliver = _one(spans, "webhook-worker", "job deliver")

    # Causal order: each hop descends from the one before it, and starts after it started.
    # Between the service and the relay, and the relay and the worker, no call carries the
    # context: the outbox row's and the job's stored traceparents do.
    chain = [root, create, relay, drive, publish, deliver, failed]
    for earlier, later in itertools.pairwise(chain):
        assert earlier in _ancestors(later, by_id), (earlier.name, later.name)
        assert earlier.start_ns <= later.start_ns, (earlier.name, later.name)
    assert publish in lineage
    assert failed.end_ns <= delivery.start_ns
    assert drive in _ancestors(posting, by_id)
    # The ledger posted before the payment's event was published.
    assert posting.end_ns <= publish.start_ns
    assert delivery.attributes["http.response.status_code"] == 200
    assert failed.parent_id == deliver.span_id

    # The operators' payment detail names that trace beside each event of the payment.
    engine = make_engine(traced.settings.require_database_url(), pool_size=1)
    with transaction(make_sessionmaker(engine)) as db:
        operators.create_operator(
            db, email="tracer@paymesh.test", password="trace-password", role="viewer"
        )
    engine.dispose()
    with httpx.Client(base_url=traced.base_url, timeout=30) as api:
        login = api.post(
            "/admin/login", json={"email": "tracer@paymesh.test", "password": "trace-password"}
        )
        headers = {"Authorization": f"Bearer {login.json()['session_token']}"}
        detail = api.get(f"/admin/payments/{payment['id']}", headers=headers).json()
    traces = dict(
        zip([e["type"] for e in detail["events"]], detail["event_trace_ids"], strict=True)
    )
    assert traces["payment.succeeded"] == delivery.trace_id
    assert traces["payment.processing"] == delivery.trace_id
