"""Payments through Envoy: lifecycle, test cards, capture, cancel, checkout, listing, tenancy."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, cast

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from paymesh.payment.v1 import payment_pb2
from paymesh.webhook.v1 import webhook_internal_pb2, webhook_internal_pb2_grpc
from sqlalchemy import func, select, text

from services.admin import merchants
from services.common.auth import Principal, principal_var
from services.common.db import LoopPool, make_engine, make_sessionmaker, transaction
from services.common.rest_json import message_to_json
from services.payment.errors import PaymentNotFound
from services.payment.models import OutboxMessage, Payment, ProcessorAttempt, ProcessorCharge
from services.payment.processor import SimulatedProcessor
from services.payment.server import PaymentServicer
from services.runtime.platform import LocalPlatform
from tests.conftest import StatementLog
from tests.integration.conftest import MerchantKeys
from tests.rest_errors import api_error, error_code

SETTLE_TIMEOUT_S = 60.0
FINAL_STATUSES = {"succeeded", "failed", "canceled", "requires_capture"}


def card(number: str = "4242424242424242", **overrides: Any) -> dict[str, Any]:
    """A card body that expires in a few years."""
    body: dict[str, Any] = {
        "number": number,
        "exp_month": 12,
        "exp_year": datetime.now(UTC).year + 3,
        "cvc": "123",
    }
    body.update(overrides)
    return body


def create_payment(
    api: httpx.Client,
    key: str,
    *,
    idempotency_key: str | None = None,
    **body: Any,
) -> httpx.Response:
    """POST /v1/payments with a key and an optional Idempotency-Key."""
    headers = {"X-API-Key": key}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    payload: dict[str, Any] = {"amount": 1000, "currency": "USD", **body}
    return api.post("/v1/payments", json=payload, headers=headers)


def created(api: httpx.Client, key: str, **body: Any) -> dict[str, Any]:
    """A payment created successfully."""
    response = create_payment(api, key, **body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_for(
    api: httpx.Client,
    key: str,
    payment_id: str,
    statuses: set[str] | None = None,
    *,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> dict[str, Any]:
    """Polls a payment until it reaches one of `statuses` (default: any resting status)."""
    wanted = statuses or FINAL_STATUSES
    deadline = time.monotonic() + timeout_s
    while True:
        response = api.get(f"/v1/payments/{payment_id}", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in wanted:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{payment_id} still {body['status']} after {timeout_s}s")
        time.sleep(0.1)


def fetch(api: httpx.Client, key: str, payment_id: str) -> dict[str, Any]:
    """GET /v1/payments/{id}, which must succeed."""
    response = api.get(f"/v1/payments/{payment_id}", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def paid(api: httpx.Client, key: str, **body: Any) -> dict[str, Any]:
    """A payment with a card, waited for until it rests."""
    payment = created(api, key, payment_method={"card": card()}, **body)
    return wait_for(api, key, payment["id"])


def violations(response: httpx.Response) -> dict[str, str]:
    """The parameter an error response names (`param`), with its message; {} when none."""
    error = api_error(
        response,
        response.status_code,
        response.json()["error"]["code"],
        param=response.json()["error"].get("param"),
    )
    return {error["param"]: error["message"]} if "param" in error else {}


def event_types(sessions, payment_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The event types the payment service wrote to its outbox for a payment, in order."""
    with transaction(sessions) as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.kind == "event")
            .where(OutboxMessage.payload["object"]["id"].astext == payment_id)
            .order_by(OutboxMessage.id)
        ).all()
        return [row.topic for row in rows]


def charge_count(sessions, payment_id: str) -> int:  # type: ignore[no-untyped-def]
    """How many charges the processor simulator holds for a payment."""
    with transaction(sessions) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(ProcessorCharge)
                .where(ProcessorCharge.payment_id == payment_id)
            )
            or 0
        )


def payment_count(sessions, merchant_id: str) -> int:  # type: ignore[no-untyped-def]
    """How many payments a merchant has."""
    with transaction(sessions) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Payment).where(Payment.merchant_id == merchant_id)
            )
            or 0
        )


# --- creation and the automatic flow ---------------------------------------------------


def test_create_without_card__waits_with_client_secret_and_checkout_url(
    api: httpx.Client, merchant: MerchantKeys, platform
) -> None:  # type: ignore[no-untyped-def]
    body = created(api, merchant.secret_key, amount=100, currency="INR")
    assert body["status"] == "requires_payment_method"
    assert body["client_secret"].startswith(f"{body['id']}_secret_")
    assert body["checkout_url"] == (
        f"{platform.settings.public_url()}/checkout/{body['id']}"
        f"?client_secret={body['client_secret']}"
    )
    assert body["capture_method"] == "automatic"
    assert body["amount_capturable"] == 0
    assert body["merchant_id"] == merchant.id


def test_card_payment__goes_processing_then_succeeded_with_fee(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    body = created(
        api,
        merchant.secret_key,
        amount=10_000,
        currency="USD",
        payment_method={"card": card()},
        description="two books",
        metadata={"order": "42"},
    )
    assert body["status"] == "processing"
    assert body["card"]["brand"] == "visa"
    assert body["card"]["last4"] == "4242"
    assert len(body["card"]["fingerprint"]) == 64
    final = wait_for(api, merchant.secret_key, body["id"])
    assert final["status"] == "succeeded"
    assert final["amount_received"] == 10000
    # Default schedule 2.9% + 30: 290 + 30.
    assert final["fee"] == 320
    assert final["metadata"] == {"order": "42"}
    assert event_types(sessions, body["id"]) == ["payment.processing", "payment.succeeded"]
    assert charge_count(sessions, body["id"]) == 1


def test_card_number_and_cvc_are_never_stored(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    number = "5555555555554444"
    body = created(api, merchant.secret_key, payment_method={"card": card(number, cvc="9876")})
    wait_for(api, merchant.secret_key, body["id"])
    with transaction(sessions) as session:
        dumps = [
            session.execute(
                text(f"SELECT coalesce(json_agg(t)::text, '') FROM {table} t {where}"),  # noqa: S608
                {"id": body["id"]},
            ).scalar_one()
            for table, where in [
                ("payment.payments", "WHERE id = :id"),
                ("payment.outbox", "WHERE payload::text LIKE '%' || :id || '%'"),
                (
                    "processor.tokens",
                    "WHERE token = (SELECT processor_token FROM payment.payments WHERE id = :id)",
                ),
            ]
        ]
    stored = "".join(dumps)
    assert body["id"] in stored
    # The cvc is four digits that could occur by chance in a hash; no field may hold it.
    assert number not in stored and '"cvc"' not in stored
    assert body["card"]["brand"] == "mastercard" and body["card"]["last4"] == "4444"


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
    ],
)
def test_declined_cards_fail_with_their_code(
    api: httpx.Client, merchant: MerchantKeys, sessions, number: str, code: str
) -> None:  # type: ignore[no-untyped-def]
    body = created(api, merchant.secret_key, payment_method={"card": card(number)})
    final = wait_for(api, merchant.secret_key, body["id"])
    assert final["status"] == "failed"
    assert final["failure_code"] == code
    assert final["failure_message"]
    assert final["amount_received"] == 0 and final["fee"] == 0
    assert event_types(sessions, body["id"]) == ["payment.processing", "payment.failed"]
    assert charge_count(sessions, body["id"]) == 0


def test_processor_unavailable_once__succeeds_on_retry(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    body = created(api, merchant.secret_key, payment_method={"card": card("4000000000000119")})
    final = wait_for(api, merchant.secret_key, body["id"])
    assert final["status"] == "succeeded"
    with transaction(sessions) as session:
        attempt = session.get(ProcessorAttempt, body["id"])
        assert attempt is not None and attempt.count >= 2
    assert charge_count(sessions, body["id"]) == 1


def test_lost_answer__retry_finds_the_one_charge(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    body = created(api, merchant.secret_key, payment_method={"card": card("4000000000001000")})
    final = wait_for(api, merchant.secret_key, body["id"])
    assert final["status"] == "succeeded"
    with transaction(sessions) as session:
        attempt = session.get(ProcessorAttempt, body["id"])
        assert attempt is not None and attempt.count >= 2
    assert charge_count(sessions, body["id"]) == 1


@pytest.mark.parametrize(("currency", "amount"), [("JPY", 500), ("KWD", 1234), ("EUR", 1)])
def test_currencies_keep_their_minor_units(
    api: httpx.Client, merchant: MerchantKeys, currency: str, amount: int
) -> None:
    final = paid(api, merchant.secret_key, amount=amount, currency=currency.lower())
    assert final["currency"] == currency
    assert final["status"] == "succeeded"
    assert final["amount_received"] == amount
    assert 0 <= int(final["fee"]) <= amount


# --- manual capture and cancel ------------------------------------------------------------


def test_manual_capture__stops_at_requires_capture_then_partial_capture_succeeds(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    body = created(
        api,
        merchant.secret_key,
        amount=5000,
        capture_method="manual",
        payment_method={"card": card()},
    )
    authorized = wait_for(api, merchant.secret_key, body["id"])
    assert authorized["status"] == "requires_capture"
    assert authorized["amount_capturable"] == 5000
    assert authorized["amount_received"] == 0
    response = api.post(
        f"/v1/payments/{body['id']}/capture",
        json={"amount_to_capture": 3000},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "processing"
    final = wait_for(api, merchant.secret_key, body["id"], {"succeeded", "failed"})
    assert final["status"] == "succeeded"
    assert final["amount_received"] == 3000
    assert final["amount_capturable"] == 0
    assert final["fee"] == 87 + 30  # 2.9% of 3000 = 87
    assert event_types(sessions, body["id"]) == [
        "payment.processing",
        "payment.requires_capture",
        "payment.processing",
        "payment.succeeded",
    ]
    with transaction(sessions) as session:
        charge = session.scalars(
            select(ProcessorCharge).where(ProcessorCharge.payment_id == body["id"])
        ).one()
        assert (charge.amount_authorized, charge.amount_captured) == (5000, 3000)


def test_capture__more_than_authorized_is_rejected(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = paid(api, merchant.secret_key, amount=500, capture_method="manual")
    response = api.post(
        f"/v1/payments/{body['id']}/capture",
        json={"amount_to_capture": 501},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert response.status_code == 400
    assert error_code(response) == "amount_too_large"
    assert "amount_to_capture" in violations(response)
    assert wait_for(api, merchant.secret_key, body["id"])["status"] == "requires_capture"


def test_capture__full_by_default(api: httpx.Client, merchant: MerchantKeys) -> None:
    body = paid(api, merchant.secret_key, amount=700, capture_method="manual")
    response = api.post(
        f"/v1/payments/{body['id']}/capture", json={}, headers={"X-API-Key": merchant.secret_key}
    )
    assert response.status_code == 200, response.text
    final = wait_for(api, merchant.secret_key, body["id"], {"succeeded"})
    assert final["amount_received"] == 700


def test_capture__zero_is_400_and_captures_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    """0 is not "everything": it answers 400 naming `amount_to_capture` and the payment waits."""
    body = paid(api, merchant.secret_key, amount=700, capture_method="manual")
    for amount in (0, "0"):
        response = api.post(
            f"/v1/payments/{body['id']}/capture",
            json={"amount_to_capture": amount},
            headers={"X-API-Key": merchant.secret_key},
        )
        assert response.status_code == 400, response.text
        assert "amount_to_capture" in violations(response)
    after = wait_for(api, merchant.secret_key, body["id"])
    assert (after["status"], after["amount_capturable"], after["amount_received"]) == (
        "requires_capture",
        700,
        0,
    )


@pytest.mark.parametrize("kind", ["failed", "succeeded", "requires_payment_method"])
def test_capture__illegal_states_are_failed_precondition(
    api: httpx.Client, merchant: MerchantKeys, kind: str
) -> None:
    if kind == "failed":
        body = created(api, merchant.secret_key, payment_method={"card": card("4000000000000002")})
        wait_for(api, merchant.secret_key, body["id"])
    elif kind == "succeeded":
        body = paid(api, merchant.secret_key)
    else:
        body = created(api, merchant.secret_key)
    response = api.post(
        f"/v1/payments/{body['id']}/capture", json={}, headers={"X-API-Key": merchant.secret_key}
    )
    assert response.status_code == 400
    assert error_code(response) == "payment_state_invalid"


def test_cancel__requires_capture_is_voided(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    body = paid(api, merchant.secret_key, capture_method="manual")
    response = api.post(
        f"/v1/payments/{body['id']}/cancel",
        json={"cancellation_reason": "requested_by_customer"},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    assert response.json()["cancellation_reason"] == "requested_by_customer"
    assert response.json()["amount_capturable"] == 0
    assert event_types(sessions, body["id"])[-1] == "payment.canceled"
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        with transaction(sessions) as session:
            charge = session.scalars(
                select(ProcessorCharge).where(ProcessorCharge.payment_id == body["id"])
            ).one()
            if charge.status == "voided":
                break
        assert time.monotonic() < deadline, "the authorization was never voided"
        time.sleep(0.1)


def test_cancel__waiting_payment_then_confirm_is_rejected(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = created(api, merchant.secret_key)
    response = api.post(
        f"/v1/payments/{body['id']}/cancel", json={}, headers={"X-API-Key": merchant.secret_key}
    )
    assert response.json()["status"] == "canceled"
    again = api.post(
        f"/v1/payments/{body['id']}/cancel", json={}, headers={"X-API-Key": merchant.secret_key}
    )
    assert again.status_code == 400 and error_code(again) == "payment_state_invalid"
    confirm = api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={"payment_method": {"card": card()}},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert confirm.status_code == 400 and error_code(confirm) == "payment_state_invalid"


def test_cancel__succeeded_payment_is_rejected_and_bad_reason_is_400(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = paid(api, merchant.secret_key)
    response = api.post(
        f"/v1/payments/{body['id']}/cancel", json={}, headers={"X-API-Key": merchant.secret_key}
    )
    assert response.status_code == 400 and error_code(response) == "payment_state_invalid"
    waiting = created(api, merchant.secret_key)
    bad = api.post(
        f"/v1/payments/{waiting['id']}/cancel",
        json={"cancellation_reason": "bored"},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert bad.status_code == 400 and "cancellation_reason" in violations(bad)


def test_uncaptured_payment_is_canceled_after_the_capture_window(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    body = paid(api, merchant.secret_key, capture_method="manual")
    with transaction(sessions) as session:
        payment = session.get(Payment, body["id"])
        assert payment is not None and payment.authorize_time is not None
        payment.authorize_time = datetime(2020, 1, 1, tzinfo=UTC)
    final = wait_for(api, merchant.secret_key, body["id"], {"canceled"})
    assert final["cancellation_reason"] == "abandoned"


# --- confirm and the hosted checkout ---------------------------------------------------------


def test_confirm__publishable_key_with_client_secret(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = created(api, merchant.secret_key, amount=250)
    response = api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={"payment_method": {"card": card()}, "client_secret": body["client_secret"]},
        headers={"X-API-Key": merchant.publishable_key},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "processing"
    assert wait_for(api, merchant.secret_key, body["id"])["status"] == "succeeded"


def test_confirm__publishable_key_without_or_with_wrong_secret_is_404(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = created(api, merchant.secret_key)
    for secret in ["", body["client_secret"] + "x", f"{body['id']}_secret_guess"]:
        response = api.post(
            f"/v1/payments/{body['id']}/confirm",
            json={"payment_method": {"card": card()}, "client_secret": secret},
            headers={"X-API-Key": merchant.publishable_key},
        )
        assert response.status_code == 404, secret
        assert error_code(response) == "payment_not_found"
    assert fetch(api, merchant.secret_key, body["id"])["status"] == "requires_payment_method"


def test_confirm__client_secret_alone_from_the_checkout_page(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = created(api, merchant.secret_key, capture_method="manual")
    response = api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={"payment_method": {"card": card()}, "client_secret": body["client_secret"]},
    )
    assert response.status_code == 200, response.text
    assert wait_for(api, merchant.secret_key, body["id"])["status"] == "requires_capture"


def test_confirm__no_key_and_no_secret_is_404_and_bad_key_is_401(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = created(api, merchant.secret_key)
    anonymous = api.post(
        f"/v1/payments/{body['id']}/confirm", json={"payment_method": {"card": card()}}
    )
    assert anonymous.status_code == 404
    bad_key = api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={"payment_method": {"card": card()}, "client_secret": body["client_secret"]},
        headers={"X-API-Key": "pk_test_garbage"},
    )
    assert bad_key.status_code == 401


def test_confirm__secret_key_needs_no_client_secret(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = created(api, merchant.secret_key)
    response = api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={"payment_method": {"card": card("4000000000000002")}},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert response.status_code == 200, response.text
    assert wait_for(api, merchant.secret_key, body["id"])["failure_code"] == "card_declined"


def test_confirm__another_merchants_keys_find_nothing(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    body = created(api, merchant.secret_key)
    for key in [other_merchant.secret_key, other_merchant.publishable_key]:
        response = api.post(
            f"/v1/payments/{body['id']}/confirm",
            json={"payment_method": {"card": card()}, "client_secret": body["client_secret"]},
            headers={"X-API-Key": key},
        )
        assert response.status_code == 404


def test_confirm__bad_card_is_400_and_changes_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = created(api, merchant.secret_key)
    response = api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={
            "payment_method": {"card": card("4242424242424241")},
            "client_secret": body["client_secret"],
        },
    )
    assert response.status_code == 400
    assert "payment_method.card.number" in violations(response)
    missing = api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={"client_secret": body["client_secret"]},
    )
    assert missing.status_code == 400
    assert "payment_method.card" in violations(missing)
    assert fetch(api, merchant.secret_key, body["id"])["status"] == "requires_payment_method"


def test_checkout__client_secret_shows_the_page_without_a_key(api: httpx.Client, sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        shop = merchants.create_merchant(session, name="Corner Bakery")
        key = merchants.create_api_key(session, merchant_id=shop.id, mode="test", kind="secret").key
    body = created(
        api,
        key,
        amount=1999,
        currency="EUR",
        description="croissants",
        return_url="https://bakery.example/thanks",
    )
    response = api.get(
        f"/v1/checkout/{body['id']}", params={"client_secret": body["client_secret"]}
    )
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["payment_id"] == body["id"]
    assert view["merchant_name"] == "Corner Bakery"
    assert view["amount"] == 1999 and view["currency"] == "EUR"
    assert view["description"] == "croissants"
    assert view["return_url"] == "https://bakery.example/thanks"
    assert view["status"] == "requires_payment_method"
    assert "client_secret" not in view
    wrong = api.get(f"/v1/checkout/{body['id']}", params={"client_secret": "nope"})
    assert wrong.status_code == 404
    unknown = api.get("/v1/checkout/pay_doesnotexist", params={"client_secret": "x"})
    assert unknown.status_code == 404


def test_checkout__shows_the_failure_of_the_last_attempt(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = created(api, merchant.secret_key)
    api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={
            "payment_method": {"card": card("4000000000009995")},
            "client_secret": body["client_secret"],
        },
    )
    wait_for(api, merchant.secret_key, body["id"])
    view = api.get(
        f"/v1/checkout/{body['id']}", params={"client_secret": body["client_secret"]}
    ).json()
    assert view["status"] == "failed"
    assert view["failure_code"] == "insufficient_funds"
    assert view["card"]["last4"] == "9995"


# --- reading, listing, tenancy ---------------------------------------------------------------


def test_list__newest_first_with_opaque_pages_and_status_filter(
    api: httpx.Client, sessions
) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        shop = merchants.create_merchant(session, name="Lister")
        key = merchants.create_api_key(session, merchant_id=shop.id, mode="test", kind="secret").key
    ids = [created(api, key, amount=100 + i)["id"] for i in range(5)]
    canceled = ids[1]
    api.post(f"/v1/payments/{canceled}/cancel", json={}, headers={"X-API-Key": key})
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = api.get(
            "/v1/payments", params={"page_size": 2, "page_token": token}, headers={"X-API-Key": key}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["payments"]) <= 2
        seen += [p["id"] for p in page["payments"]]
        token = page["next_page_token"]
        assert page["has_more"] is bool(token)
        pages += 1
        if not token:
            break
    assert seen == list(reversed(ids))
    assert pages == 3
    only = api.get("/v1/payments", params={"status": "canceled"}, headers={"X-API-Key": key})
    assert [p["id"] for p in only.json()["payments"]] == [canceled]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page_size": 101}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"status": "paid"}, "status"),
        ({"page_token": "not-a-token"}, "page_token"),
    ],
)
def test_list__bad_parameters_are_400(
    api: httpx.Client, merchant: MerchantKeys, params: dict[str, Any], field: str
) -> None:
    response = api.get("/v1/payments", params=params, headers={"X-API-Key": merchant.secret_key})
    assert response.status_code == 400
    assert field in violations(response)


def test_tenant_isolation__other_merchants_payment_is_404_everywhere(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    body = paid(api, merchant.secret_key, capture_method="manual")
    headers = {"X-API-Key": other_merchant.secret_key}
    assert api.get(f"/v1/payments/{body['id']}", headers=headers).status_code == 404
    for action in ["capture", "cancel"]:
        response = api.post(f"/v1/payments/{body['id']}/{action}", json={}, headers=headers)
        assert response.status_code == 404, action
        assert error_code(response) == "payment_not_found"
    listed = api.get("/v1/payments", headers=headers).json()["payments"]
    assert body["id"] not in [p["id"] for p in listed]
    refund = api.post("/v1/refunds", json={"payment_id": body["id"]}, headers=headers)
    assert refund.status_code == 404
    assert wait_for(api, merchant.secret_key, body["id"])["status"] == "requires_capture"


def test_live_and_test_modes_are_separate(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        live_key = merchants.create_api_key(
            session, merchant_id=merchant.id, mode="live", kind="secret"
        ).key
    live = created(api, live_key, payment_method={"card": card()})
    assert live["livemode"] is True
    assert wait_for(api, live_key, live["id"])["status"] == "succeeded"
    test = created(api, merchant.secret_key)
    assert test["livemode"] is False
    assert (
        api.get(
            f"/v1/payments/{live['id']}", headers={"X-API-Key": merchant.secret_key}
        ).status_code
        == 404
    )
    assert api.get(f"/v1/payments/{test['id']}", headers={"X-API-Key": live_key}).status_code == 404
    live_ids = [
        p["id"] for p in api.get("/v1/payments", headers={"X-API-Key": live_key}).json()["payments"]
    ]
    assert live_ids == [live["id"]]


def test_unknown_and_malformed_ids_are_404(api: httpx.Client, merchant: MerchantKeys) -> None:
    for payment_id in ["pay_doesnotexist", "nothing", "re_abc"]:
        response = api.get(f"/v1/payments/{payment_id}", headers={"X-API-Key": merchant.secret_key})
        assert response.status_code == 404, payment_id


def test_publishable_key_cannot_read_payments(api: httpx.Client, merchant: MerchantKeys) -> None:
    body = created(api, merchant.secret_key)
    response = api.get(
        f"/v1/payments/{body['id']}", headers={"X-API-Key": merchant.publishable_key}
    )
    assert response.status_code == 403


# --- events and the sweeper ------------------------------------------------------------------


def webhook_events(platform: LocalPlatform, object_id: str) -> list[dict[str, Any]]:
    """The events the webhook service holds about an object, oldest first, as JSON."""
    with grpc.insecure_channel(platform.settings.target("webhook")) as channel:
        stub = webhook_internal_pb2_grpc.WebhookInternalServiceStub(channel)
        reply = stub.ListObjectEvents(
            webhook_internal_pb2.ListObjectEventsRequest(object_id=object_id), timeout=10
        )
        return [MessageToDict(event, preserving_proto_field_name=True) for event in reply.events]


def test_events_reach_the_webhook_service_with_the_api_object(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform
) -> None:
    payment = paid(api, merchant.secret_key, amount=1234, metadata={"order": "7"})
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while len(events := webhook_events(platform, payment["id"])) < 2:
        assert time.monotonic() < deadline, f"events never published: {events}"
        time.sleep(0.2)
    assert [event["type"] for event in events] == ["payment.processing", "payment.succeeded"]
    assert all(event["id"].startswith("evt_") for event in events)
    succeeded = events[1]["data"]["object"]
    assert succeeded["id"] == payment["id"]
    assert succeeded["status"] == "succeeded"
    assert succeeded["amount"] == 1234 and succeeded["amount_received"] == 1234
    assert succeeded["metadata"] == {"order": "7"}
    assert succeeded["card"]["last4"] == "4242"
    assert not succeeded.get("client_secret")
    assert events[0]["data"]["object"]["status"] == "processing"


def test_sweeper_redrives_a_payment_whose_job_was_lost(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    body = paid(api, merchant.secret_key, amount=800, capture_method="manual")
    # As if CapturePayment had committed but its job vanished with Redis.
    with transaction(sessions) as session:
        payment = session.get(Payment, body["id"], with_for_update=True)
        assert payment is not None
        payment.status = "processing"
        payment.amount_to_capture = 600
        payment.drive_time = datetime(2020, 1, 1, tzinfo=UTC)
    final = wait_for(api, merchant.secret_key, body["id"], {"succeeded", "failed"})
    assert final["status"] == "succeeded"
    assert final["amount_received"] == 600
    assert charge_count(sessions, body["id"]) == 1


def test_confirm__a_declined_payment_can_be_paid_with_another_card(  # type: ignore[no-untyped-def]
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:
    body = created(api, merchant.secret_key, payment_method={"card": card("4000000000000002")})
    declined = wait_for(api, merchant.secret_key, body["id"])
    assert declined["status"] == "failed"
    assert declined["failure_code"] == "card_declined"
    assert charge_count(sessions, body["id"]) == 0

    retry = api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={"payment_method": {"card": card("5555555555554444")}},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "processing"
    assert retry.json()["failure_code"] == ""
    settled = wait_for(api, merchant.secret_key, body["id"])
    assert settled["status"] == "succeeded"
    assert settled["card"]["brand"] == "mastercard"
    assert settled["amount_received"] == settled["amount"]
    assert charge_count(sessions, body["id"]) == 1
    assert event_types(sessions, body["id"]) == [
        "payment.processing",
        "payment.failed",
        "payment.processing",
        "payment.succeeded",
    ]
    again = api.post(
        f"/v1/payments/{body['id']}/confirm",
        json={"payment_method": {"card": card()}},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert again.status_code == 400 and error_code(again) == "payment_state_invalid"


def test_get__one_statement_without_a_transaction_and_the_same_view(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys, platform
) -> None:  # type: ignore[no-untyped-def]
    # Issue 13: the GET is one SELECT in autocommit (no BEGIN or COMMIT round trip) on the
    # event loop's connection, with the owner and mode checked, and shows what the REST create
    # showed.
    body = created(api, merchant.secret_key, amount=1234, metadata={"order": "42"})
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

    def principal(merchant_id: str, mode: str) -> Principal:
        return Principal(merchant_id, mode, "secret", "key_test", 0, 0, "Test Merchant")

    async def get(as_principal: Principal) -> payment_pb2.Payment:
        principal_var.set(as_principal)
        return await servicer.GetPayment(
            payment_pb2.GetPaymentRequest(id=body["id"]), cast(Any, None)
        )

    async def scenario() -> None:
        try:
            payment = await get(principal(merchant.id, "test"))
            assert log.statements == [("SELECT", False)]
            assert message_to_json(payment) == body
            for stranger in (principal(other_merchant.id, "test"), principal(merchant.id, "live")):
                with pytest.raises(PaymentNotFound):
                    await get(stranger)
        finally:
            await db.close()
            engine.dispose()

    asyncio.run(scenario())
