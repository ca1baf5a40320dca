"""Idempotency-Key rules through Envoy: replay, reuse, in use, scope, failures, expiry, races."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
from paymesh.payment.v1 import payment_pb2
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from services.admin import merchants
from services.common import idempotency
from services.common.auth import Principal
from services.common.db import LoopPool, make_engine, make_sessionmaker, transaction
from services.common.idempotency import IdempotencyKeyInUse
from services.payment.models import KEYS, IdempotencyKey
from services.payment.processor import SimulatedProcessor
from services.payment.server import PaymentServicer
from services.runtime.platform import LocalPlatform
from tests.conftest import StatementLog
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import (
    card,
    charge_count,
    create_payment,
    paid,
    payment_count,
    violations,
    wait_for,
)
from tests.rest_errors import error_code

SWEEP_TIMEOUT_S = 30.0
RUNNER_TIMEOUT_S = 30.0


def key_row(sessions, merchant_id: str, key: str) -> IdempotencyKey | None:  # type: ignore[no-untyped-def]
    """The stored idempotency key of a merchant's create_payment call, if any."""
    with transaction(sessions) as session:
        return session.scalars(
            select(IdempotencyKey).where(
                IdempotencyKey.merchant_id == merchant_id, IdempotencyKey.key == key
            )
        ).one_or_none()


def test_same_key_same_request__replays_status_and_body_with_header(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    body = {"amount": 1500, "currency": "GBP", "payment_method": {"card": card()}}
    first = create_payment(api, merchant.secret_key, idempotency_key="order-1", **body)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    wait_for(api, merchant.secret_key, first.json()["id"])
    for _ in range(3):
        again = create_payment(api, merchant.secret_key, idempotency_key="order-1", **body)
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        # The stored response, not the payment as it is now.
        assert again.json() == first.json()
        assert again.json()["status"] == "processing"
    assert payment_count(sessions, merchant.id) == 1
    assert charge_count(sessions, first.json()["id"]) == 1


def test_same_key_different_request__is_rejected_and_changes_nothing(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    first = create_payment(api, merchant.secret_key, idempotency_key="k-reuse", amount=100)
    assert first.status_code == 200
    other = create_payment(api, merchant.secret_key, idempotency_key="k-reuse", amount=101)
    assert other.status_code == 400
    assert error_code(other) == "idempotency_key_reused"
    assert payment_count(sessions, merchant.id) == 1


def test_key_in_use__409_while_the_first_request_runs_then_taken_over_when_abandoned(
    api: httpx.Client, merchant: MerchantKeys, sessions, platform: LocalPlatform
) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        session.add(
            IdempotencyKey(
                merchant_id=merchant.id,
                livemode=False,
                operation="create_payment",
                key="busy",
                request_hash="0" * 64,
                state="in_progress",
                lock_time=now,
                create_time=now,
                expire_time=now + timedelta(days=1),
            )
        )
    response = create_payment(api, merchant.secret_key, idempotency_key="busy")
    assert response.status_code == 409
    assert error_code(response) == "idempotency_key_in_use"
    assert payment_count(sessions, merchant.id) == 0
    lock_timeout_s = platform.settings.idempotency_lock_timeout_s
    with transaction(sessions) as session:
        row = session.get(IdempotencyKey, (merchant.id, False, "create_payment", "busy"))
        assert row is not None
        row.lock_time = now - timedelta(seconds=lock_timeout_s + 1)
    taken_over = create_payment(api, merchant.secret_key, idempotency_key="busy")
    assert taken_over.status_code == 200, taken_over.text
    assert payment_count(sessions, merchant.id) == 1
    replay = create_payment(api, merchant.secret_key, idempotency_key="busy")
    assert replay.headers["idempotent-replayed"] == "true"


def test_fifty_concurrent_identical_requests__one_payment_one_charge(
    platform: LocalPlatform, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    body = {"amount": 4200, "currency": "USD", "payment_method": {"card": card()}}
    headers = {"X-API-Key": merchant.secret_key, "Idempotency-Key": "race-50"}

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=platform.base_url, timeout=60) as client:
            return client.post("/v1/payments", json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(send, range(50)))
    codes = {response.status_code for response in responses}
    assert codes <= {200, 409}, [r.text for r in responses if r.status_code not in (200, 409)]
    for response in responses:
        if response.status_code == 409:
            assert error_code(response) == "idempotency_key_in_use"
    ids = {response.json()["id"] for response in responses if response.status_code == 200}
    assert len(ids) == 1
    assert payment_count(sessions, merchant.id) == 1
    payment_id = ids.pop()
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        assert wait_for(client, merchant.secret_key, payment_id)["status"] == "succeeded"
        # Whoever got a 409 retries and gets the stored response.
        retry = client.post("/v1/payments", json=body, headers=headers)
    assert retry.status_code == 200 and retry.json()["id"] == payment_id
    assert charge_count(sessions, payment_id) == 1


def test_validation_failures_are_not_stored(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    bad = create_payment(api, merchant.secret_key, idempotency_key="fix-me", amount=0)
    assert bad.status_code == 400
    assert key_row(sessions, merchant.id, "fix-me") is None
    good = create_payment(api, merchant.secret_key, idempotency_key="fix-me", amount=10)
    assert good.status_code == 200, good.text
    assert "idempotent-replayed" not in good.headers


def test_state_failures_are_not_stored(api: httpx.Client, merchant: MerchantKeys, sessions) -> None:  # type: ignore[no-untyped-def]
    payment = paid(api, merchant.secret_key, amount=100)
    headers = {"X-API-Key": merchant.secret_key, "Idempotency-Key": "refund-too-much"}
    over = api.post(
        "/v1/refunds", json={"payment_id": payment["id"], "amount": 101}, headers=headers
    )
    assert over.status_code == 400 and error_code(over) == "amount_too_large"
    assert key_row(sessions, merchant.id, "refund-too-much") is None


def test_auth_failures_are_not_stored(api: httpx.Client, merchant: MerchantKeys, sessions) -> None:  # type: ignore[no-untyped-def]
    denied = create_payment(api, merchant.publishable_key, idempotency_key="auth-1")
    assert denied.status_code == 403
    assert key_row(sessions, merchant.id, "auth-1") is None
    allowed = create_payment(api, merchant.secret_key, idempotency_key="auth-1")
    assert allowed.status_code == 200
    assert "idempotent-replayed" not in allowed.headers


def test_keys_are_scoped_to_merchant_mode_and_operation(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    mine = create_payment(api, merchant.secret_key, idempotency_key="shared", amount=100)
    theirs = create_payment(api, other_merchant.secret_key, idempotency_key="shared", amount=999)
    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["id"] != theirs.json()["id"]
    assert "idempotent-replayed" not in theirs.headers
    with transaction(sessions) as session:
        live_key = merchants.create_api_key(
            session, merchant_id=merchant.id, mode="live", kind="secret"
        ).key
    live = create_payment(api, live_key, idempotency_key="shared", amount=555)
    assert live.status_code == 200 and live.json()["livemode"] is True
    payment = paid(api, merchant.secret_key, amount=300)
    refund = api.post(
        "/v1/refunds",
        json={"payment_id": payment["id"]},
        headers={"X-API-Key": merchant.secret_key, "Idempotency-Key": "shared"},
    )
    assert refund.status_code == 200, refund.text


def test_key_length_limit(api: httpx.Client, merchant: MerchantKeys, sessions) -> None:  # type: ignore[no-untyped-def]
    longest = create_payment(api, merchant.secret_key, idempotency_key="k" * 255)
    assert longest.status_code == 200
    too_long = create_payment(api, merchant.secret_key, idempotency_key="k" * 256)
    assert too_long.status_code == 400
    assert "Idempotency-Key" in violations(too_long)
    assert payment_count(sessions, merchant.id) == 1


def test_expired_keys_are_swept_and_free_again(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    first = create_payment(api, merchant.secret_key, idempotency_key="old", amount=100)
    row = key_row(sessions, merchant.id, "old")
    assert row is not None
    assert row.expire_time - row.create_time >= timedelta(hours=24)
    with transaction(sessions) as session:
        stored = session.get(IdempotencyKey, (merchant.id, False, "create_payment", "old"))
        assert stored is not None
        stored.expire_time = datetime.now(UTC) - timedelta(seconds=1)
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while key_row(sessions, merchant.id, "old") is not None:
        assert time.monotonic() < deadline, "the expired key was never swept"
        time.sleep(0.2)
    fresh = create_payment(api, merchant.secret_key, idempotency_key="old", amount=200)
    assert fresh.status_code == 200
    assert fresh.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in fresh.headers


def _runner_call(
    sessions,  # type: ignore[no-untyped-def]
    platform: LocalPlatform,
    merchant_id: str,
    work: Callable[[Session], payment_pb2.Payment],
) -> tuple[payment_pb2.Payment, bool]:
    settings = platform.settings
    return idempotency.Runner(
        sessions, settings, KEYS, secret=settings.require_secret("card_fingerprint_key")
    ).run(
        owner=merchant_id,
        livemode=False,
        operation="create_payment",
        key="held",
        request=payment_pb2.CreatePaymentRequest(amount=100, currency="USD"),
        work=work,
        parse=payment_pb2.Payment.FromString,
    )


def _while_the_first_runs(
    sessions,  # type: ignore[no-untyped-def]
    platform: LocalPlatform,
    merchant_id: str,
    first_outcome: Callable[[], payment_pb2.Payment],
) -> tuple[Future[tuple[payment_pb2.Payment, bool]], BaseException | None]:
    """Runs the key's first request until it holds the key, then a duplicate; then lets it end.

    Returns the first request's future and what the duplicate raised (None if it returned).
    """
    holding, finish = threading.Event(), threading.Event()

    def first_work(session: Session) -> payment_pb2.Payment:
        holding.set()
        assert finish.wait(RUNNER_TIMEOUT_S)
        return first_outcome()

    pool = ThreadPoolExecutor(max_workers=1)
    first = pool.submit(_runner_call, sessions, platform, merchant_id, first_work)
    try:
        assert holding.wait(RUNNER_TIMEOUT_S)
        try:
            _runner_call(
                sessions, platform, merchant_id, lambda _: payment_pb2.Payment(id="pay_second")
            )
            raised: BaseException | None = None
        except IdempotencyKeyInUse as error:
            raised = error
    finally:
        finish.set()
        pool.shutdown(wait=False)
    return first, raised


def test_runner__a_duplicate_while_the_first_runs_is_in_use_then_replays_it(
    merchant: MerchantKeys, sessions, platform: LocalPlatform
) -> None:  # type: ignore[no-untyped-def]
    first, raised = _while_the_first_runs(
        sessions, platform, merchant.id, lambda: payment_pb2.Payment(id="pay_first")
    )
    # Answered at once (the first still holds the key), not after waiting for it.
    assert isinstance(raised, IdempotencyKeyInUse)
    assert first.result(RUNNER_TIMEOUT_S) == (payment_pb2.Payment(id="pay_first"), False)
    again = _runner_call(
        sessions, platform, merchant.id, lambda _: payment_pb2.Payment(id="pay_third")
    )
    assert again == (payment_pb2.Payment(id="pay_first"), True)


def test_runner__a_retry_after_the_first_failed_runs_as_the_first(
    merchant: MerchantKeys, sessions, platform: LocalPlatform
) -> None:  # type: ignore[no-untyped-def]
    def fail() -> payment_pb2.Payment:
        raise ValueError("bad input found after the key was taken")

    first, raised = _while_the_first_runs(sessions, platform, merchant.id, fail)
    assert isinstance(raised, IdempotencyKeyInUse)
    assert isinstance(first.exception(RUNNER_TIMEOUT_S), ValueError)
    # The failure rolled back its key: the retry takes it and runs its own work.
    retry = _runner_call(
        sessions, platform, merchant.id, lambda _: payment_pb2.Payment(id="pay_retry")
    )
    assert retry == (payment_pb2.Payment(id="pay_retry"), False)
    row = key_row(sessions, merchant.id, "held")
    assert row is not None and row.state == "completed"
    assert row.response == payment_pb2.Payment(id="pay_retry").SerializeToString()


def test_create_with_card_and_key__is_one_transaction_without_reads(
    merchant: MerchantKeys, platform: LocalPlatform
) -> None:
    # Issues 8 and 13: the key, the card's vault entry, the payment, its outbox rows and the
    # stored response in one transaction on one event-loop connection, each row written once,
    # nothing read back.
    engine = make_engine(platform.settings.require_database_url(), pool_size=1)
    sessions = make_sessionmaker(engine)
    log = StatementLog()
    db = LoopPool(
        platform.settings.require_database_url(),
        max_size=1,
        application_name="paymesh-test",
        configure=log.configure,
    )
    servicer = PaymentServicer(
        sessions, db, platform.settings, SimulatedProcessor(sessions, latency_ms=0)
    )
    principal = Principal(
        merchant_id=merchant.id,
        mode="test",
        kind="secret",
        key_id="key_test",
        fee_bps=0,
        fee_fixed=0,
        merchant_name="Test Merchant",
    )
    request = payment_pb2.CreatePaymentRequest(
        amount=100,
        currency="USD",
        payment_method=payment_pb2.PaymentMethod(card=payment_pb2.Card(**card())),
    )
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    async def scenario() -> None:
        try:
            payment, replayed = await servicer._create(principal, "one-transaction", request)
            assert not replayed and payment.status == "processing"
            # The key claimed and completed, the token, the payment, and its job and its
            # event in one executemany; all inside one transaction block.
            assert sorted(log.verbs()) == ["INSERT"] * 4 + ["UPDATE"], log.statements
            assert all(in_block for _, in_block in log.statements)
            log.statements.clear()
            again, replayed = await servicer._create(principal, "one-transaction", request)
            assert replayed and again == payment
            # A replay: the insert that finds the key, and the read of the stored response.
            assert log.verbs() == ["INSERT", "SELECT"]
            # Nothing went through the thread-side engine.
            assert statements == []
        finally:
            await db.close()
            engine.dispose()

    asyncio.run(scenario())


def _post(
    api: httpx.Client, path: str, key: str, idempotency_key: str, **body: object
) -> httpx.Response:
    return api.post(path, json=body, headers={"X-API-Key": key, "Idempotency-Key": idempotency_key})


def test_capture_and_cancel_with_a_key__a_repeat_replays_the_first_answer(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    # Issue 14, point 4: without a key the repeat would be 400 PAYMENT_STATE_INVALID.
    key = merchant.secret_key
    held = paid(api, key, amount=900, capture_method="manual")
    first = _post(api, f"/v1/payments/{held['id']}/capture", key, "cap-1", amount_to_capture=600)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    again = _post(api, f"/v1/payments/{held['id']}/capture", key, "cap-1", amount_to_capture=600)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = _post(api, f"/v1/payments/{held['id']}/capture", key, "cap-1", amount_to_capture=500)
    assert other.status_code == 400 and error_code(other) == "idempotency_key_reused"
    assert wait_for(api, key, held["id"])["amount_received"] == 600
    assert charge_count(sessions, held["id"]) == 1

    open_ = create_payment(api, key, amount=300).json()
    canceled = _post(api, f"/v1/payments/{open_['id']}/cancel", key, "cancel-1")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    repeat = _post(api, f"/v1/payments/{open_['id']}/cancel", key, "cancel-1")
    assert repeat.status_code == 200 and repeat.headers["idempotent-replayed"] == "true"
    assert repeat.json() == canceled.json()
    # The same key on another operation is another key (scoped by operation).
    fresh = create_payment(api, key, amount=301).json()
    assert _post(api, f"/v1/payments/{fresh['id']}/cancel", key, "cap-1").status_code == 200


def test_confirm_with_a_key__a_repeat_replays_it_and_starts_nothing_twice(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    key = merchant.secret_key
    payment = create_payment(api, key, amount=700).json()
    path = f"/v1/payments/{payment['id']}/confirm"
    first = _post(api, path, key, "confirm-1", payment_method={"card": card()})
    assert first.status_code == 200, first.text
    again = _post(api, path, key, "confirm-1", payment_method={"card": card()})
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert wait_for(api, key, payment["id"])["status"] == "succeeded"
    assert charge_count(sessions, payment["id"]) == 1


def test_a_failed_capture_with_a_key_is_not_stored(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    open_ = create_payment(api, key, amount=300).json()
    refused = _post(api, f"/v1/payments/{open_['id']}/capture", key, "cap-early")
    assert refused.status_code == 400 and error_code(refused) == "payment_state_invalid"
    again = _post(api, f"/v1/payments/{open_['id']}/capture", key, "cap-early")
    assert again.status_code == 400 and "idempotent-replayed" not in again.headers
