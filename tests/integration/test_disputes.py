"""Disputes through Envoy: each lifecycle, its postings and events, bad input, tenancy."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from sqlalchemy import select, update

from services.common.db import transaction
from services.payment.models import Dispute, OutboxMessage, ProcessorDispute
from services.runtime.platform import LocalPlatform
from tests.conftest import OperatorLogin
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import card, created, wait_for
from tests.integration.test_payments_refunds import ledger_entries, refund, wait_refund
from tests.rest_errors import error_code

FRAUDULENT_CARD = "4000000000000259"
INQUIRY_CARD = "4000000000001976"
SETTLE_TIMEOUT_S = 60.0
USD_DISPUTE_FEE = 1500


def headers(key: str, idempotency_key: str | None = None) -> dict[str, str]:
    """The API key header, and an Idempotency-Key when given."""
    found = {"X-API-Key": key}
    if idempotency_key is not None:
        found["Idempotency-Key"] = idempotency_key
    return found


def until(check: Any, what: str, timeout_s: float = SETTLE_TIMEOUT_S) -> Any:
    """Polls `check()` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def disputed_payment(
    api: httpx.Client, key: str, number: str, amount: int = 10_000
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A payment with a dispute card, and its dispute once the network filed it."""
    payment = created(
        api, key, amount=amount, currency="USD", payment_method={"card": card(number)}
    )
    payment = wait_for(api, key, payment["id"])
    assert payment["status"] == "succeeded"

    def dispute() -> dict[str, Any] | None:
        response = api.get(
            "/v1/disputes", params={"payment_id": payment["id"]}, headers=headers(key)
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json().get("disputes", [])
        return items[0] if items else None

    found: dict[str, Any] = until(dispute, f"a dispute of {payment['id']}")
    return payment, found


def get_dispute(api: httpx.Client, key: str, dispute_id: str) -> dict[str, Any]:
    """GET /v1/disputes/{id}, which must answer 200."""
    response = api.get(f"/v1/disputes/{dispute_id}", headers=headers(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_dispute(api: httpx.Client, key: str, dispute_id: str, **wanted: Any) -> dict[str, Any]:
    """Polls a dispute until each of `wanted`'s fields has its value."""

    def check() -> dict[str, Any] | None:
        body = get_dispute(api, key, dispute_id)
        return body if all(body.get(k, False) == v for k, v in wanted.items()) else None

    found: dict[str, Any] = until(check, f"{dispute_id} with {wanted}")
    return found


def submit(
    api: httpx.Client, key: str, dispute_id: str, text: str, idempotency_key: str | None = None
) -> httpx.Response:
    """POST /v1/disputes/{id} with `text` as uncategorized evidence, submitted."""
    return api.post(
        f"/v1/disputes/{dispute_id}",
        json={"evidence": {"uncategorized_text": text}, "submit": True},
        headers=headers(key, idempotency_key),
    )


def dispute_events(sessions, dispute_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The event types written for a dispute, in order."""
    with transaction(sessions) as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.kind == "event")
            .where(OutboxMessage.payload["object"]["id"].astext == dispute_id)
            .order_by(OutboxMessage.id)
        ).all()
        return [row.topic for row in rows]


def balance(api: httpx.Client, key: str, currency: str = "USD") -> int:
    """The merchant's whole balance in `currency`: available plus pending.

    A capture's net lands in pending and moves to available after the settlement delay, while a
    dispute takes from available at once; their sum does not depend on when the release ran.
    """
    response = api.get("/v1/balance", headers=headers(key))
    assert response.status_code == 200, response.text
    for item in response.json().get("available", []):
        if item["currency"] == currency:
            return int(item["available"]) + int(item.get("pending", 0))
    return 0


def legs(platform: LocalPlatform, source_id: str) -> list[tuple[str, int]]:
    """The (direction, amount) of each ledger entry caused by `source_id`, sorted."""
    return sorted((entry.direction, entry.amount) for entry in ledger_entries(platform, source_id))


def test_fraudulent_dispute_won__amount_reinstated_fee_kept(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform, sessions: Any
) -> None:
    key = merchant.secret_key
    payment, dispute = disputed_payment(api, key, FRAUDULENT_CARD)
    assert dispute["status"] == "needs_response"
    assert dispute["reason"] == "fraudulent"
    assert dispute["amount"] == 10_000 and dispute["fee"] == USD_DISPUTE_FEE
    shown = api.get(f"/v1/payments/{payment['id']}", headers=headers(key)).json()
    assert shown["disputed"] is True and shown["dispute"] == dispute["id"]
    dispute = wait_dispute(api, key, dispute["id"], funds_withdrawn=True)
    assert balance(api, key) == 10_000 - payment["fee"] - 10_000 - USD_DISPUTE_FEE
    # The merchant's balance pays amount and fee; the receivable and the fees take them.
    assert legs(platform, dispute["id"]) == sorted(
        [("debit", 10_000 + USD_DISPUTE_FEE), ("credit", 10_000), ("credit", USD_DISPUTE_FEE)]
    )

    response = submit(api, key, dispute["id"], "winning_evidence")
    assert response.status_code == 200, response.text
    assert response.json()["status"] in {"under_review", "won"}
    dispute = wait_dispute(api, key, dispute["id"], status="won", funds_reinstated=True)
    assert dispute["evidence"]["uncategorized_text"] == "winning_evidence"
    assert balance(api, key) == 10_000 - payment["fee"] - USD_DISPUTE_FEE
    assert len(legs(platform, dispute["id"])) == 5
    assert dispute_events(sessions, dispute["id"]) == [
        "dispute.created",
        "dispute.funds_withdrawn",
        "dispute.updated",
        "dispute.closed",
        "dispute.funds_reinstated",
    ]
    with transaction(sessions) as session:
        record = session.scalars(
            select(ProcessorDispute).where(ProcessorDispute.payment_id == payment["id"])
        ).one()
        assert (record.kind, record.outcome) == ("chargeback", "won")


def test_fraudulent_dispute_lost__nothing_more_moves(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform, sessions: Any
) -> None:
    key = merchant.secret_key
    payment, dispute = disputed_payment(api, key, FRAUDULENT_CARD, amount=2_000)
    assert submit(api, key, dispute["id"], "losing_evidence").status_code == 200
    dispute = wait_dispute(api, key, dispute["id"], status="lost", funds_withdrawn=True)
    assert not dispute.get("funds_reinstated")
    assert balance(api, key) == 2_000 - payment["fee"] - 2_000 - USD_DISPUTE_FEE
    assert len(legs(platform, dispute["id"])) == 3
    # The event of the decision may come before or after the withdrawal's (both are the job's).
    assert sorted(dispute_events(sessions, dispute["id"])) == sorted(
        ["dispute.created", "dispute.funds_withdrawn", "dispute.updated", "dispute.closed"]
    )


def test_close__accepts_the_dispute_as_lost_and_takes_no_more_evidence(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any
) -> None:
    key = merchant.secret_key
    _, dispute = disputed_payment(api, key, FRAUDULENT_CARD)
    closed = api.post(f"/v1/disputes/{dispute['id']}/close", json={}, headers=headers(key))
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "lost"
    again = api.post(f"/v1/disputes/{dispute['id']}/close", json={}, headers=headers(key))
    assert again.status_code == 400 and error_code(again) == "dispute_state_invalid"
    late = submit(api, key, dispute["id"], "winning_evidence")
    assert late.status_code == 400 and error_code(late) == "dispute_state_invalid"
    wait_dispute(api, key, dispute["id"], status="lost", funds_withdrawn=True)
    assert "dispute.closed" in dispute_events(sessions, dispute["id"])


def test_unanswered_by_due_by__the_sweeper_closes_it_lost(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any
) -> None:
    key = merchant.secret_key
    _, dispute = disputed_payment(api, key, FRAUDULENT_CARD)
    saved = api.post(
        f"/v1/disputes/{dispute['id']}",
        json={"evidence": {"customer_name": "Jenny Rosen"}},
        headers=headers(key),
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["status"] == "needs_response"
    assert saved.json()["evidence"]["customer_name"] == "Jenny Rosen"
    with transaction(sessions) as session:  # the clock moves past the deadline
        session.execute(
            update(Dispute).where(Dispute.id == dispute["id"]).values(due_by=Dispute.create_time)
        )
    lost = wait_dispute(api, key, dispute["id"], status="lost")
    assert lost["evidence_details"]["past_due"] is True
    late = submit(api, key, dispute["id"], "winning_evidence")
    assert late.status_code == 400 and error_code(late) == "dispute_state_invalid"


def test_inquiry_evidence_after_due_by__refused(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any
) -> None:
    key = merchant.secret_key
    _, dispute = disputed_payment(api, key, INQUIRY_CARD)
    with transaction(sessions) as session:
        # Past due: refused whether or not the sweeper closed it meanwhile.
        session.execute(
            update(Dispute).where(Dispute.id == dispute["id"]).values(due_by=Dispute.create_time)
        )
    late = submit(api, key, dispute["id"], "winning_evidence")
    assert late.status_code == 400 and error_code(late) == "dispute_state_invalid"


def test_inquiry__reviewed_and_closed_without_moving_money(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform, sessions: Any
) -> None:
    key = merchant.secret_key
    payment, dispute = disputed_payment(api, key, INQUIRY_CARD, amount=3_000)
    assert dispute["status"] == "warning_needs_response" and dispute["fee"] == 0
    response = submit(api, key, dispute["id"], "losing_evidence")
    assert response.status_code == 200, response.text
    closed = wait_dispute(api, key, dispute["id"], status="warning_closed")
    assert not closed.get("funds_withdrawn") and not closed.get("funds_reinstated")
    assert legs(platform, dispute["id"]) == []
    assert balance(api, key) == 3_000 - payment["fee"]
    assert dispute_events(sessions, dispute["id"]) == [
        "dispute.created",
        "dispute.updated",
        "dispute.closed",
    ]


def test_refund_of_a_disputed_payment__refused(api: httpx.Client, merchant: MerchantKeys) -> None:
    key = merchant.secret_key
    payment, dispute = disputed_payment(api, key, FRAUDULENT_CARD)
    assert dispute.get("is_charge_refundable", False) is False
    response = refund(api, key, payment_id=payment["id"])
    assert response.status_code == 400, response.text
    assert error_code(response) == "charge_disputed"


def test_refund_under_an_inquiry__allowed_and_the_inquiry_moves_nothing(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform
) -> None:
    key = merchant.secret_key
    payment, dispute = disputed_payment(api, key, INQUIRY_CARD, amount=2_500)
    assert dispute["is_charge_refundable"] is True
    response = refund(api, key, payment_id=payment["id"], amount=1_000)
    assert response.status_code == 200, response.text
    assert wait_refund(api, key, response.json()["id"])["status"] == "succeeded"
    assert legs(platform, dispute["id"]) == []
    assert balance(api, key) == 2_500 - payment["fee"] - 1_000


def test_other_merchants_and_unknown_disputes__not_found(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    _, dispute = disputed_payment(api, merchant.secret_key, INQUIRY_CARD)
    other = other_merchant.secret_key
    for response in (
        api.get(f"/v1/disputes/{dispute['id']}", headers=headers(other)),
        submit(api, other, dispute["id"], "winning_evidence"),
        api.post(f"/v1/disputes/{dispute['id']}/close", json={}, headers=headers(other)),
        api.get("/v1/disputes/dp_doesnotexist", headers=headers(merchant.secret_key)),
        api.get("/v1/disputes/pay_notadispute", headers=headers(merchant.secret_key)),
    ):
        assert response.status_code == 404, response.text
        assert error_code(response) == "dispute_not_found"
    listed = api.get("/v1/disputes", headers=headers(other))
    assert listed.status_code == 200 and listed.json().get("disputes", []) == []
    assert get_dispute(api, merchant.secret_key, dispute["id"])["status"] == (
        "warning_needs_response"
    )


def test_update__wrong_types_and_unknown_fields_refused(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    _, dispute = disputed_payment(api, key, INQUIRY_CARD)
    path = f"/v1/disputes/{dispute['id']}"
    for body in (
        {"evidence": "winning_evidence"},
        {"evidence": {"uncategorized_text": 5}},
        {"submit": "yes"},
        {"evidence": {"receipt": "x"}},
        {"amount": 1},
        {"evidence": {"uncategorized_text": "x" * 20_001}},
    ):
        response = api.post(path, json=body, headers=headers(key))
        assert response.status_code == 400, (body, response.text)
    assert get_dispute(api, key, dispute["id"])["status"] == "warning_needs_response"


def test_update__idempotent_with_a_key(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any
) -> None:
    key = merchant.secret_key
    _, dispute = disputed_payment(api, key, INQUIRY_CARD)
    first = submit(api, key, dispute["id"], "winning_evidence", idempotency_key="dp-submit-1")
    again = submit(api, key, dispute["id"], "winning_evidence", idempotency_key="dp-submit-1")
    assert first.status_code == again.status_code == 200, again.text
    assert first.json() == again.json()
    wait_dispute(api, key, dispute["id"], status="warning_closed")
    assert dispute_events(sessions, dispute["id"]).count("dispute.updated") == 1


def test_list__pages_and_filters_by_payment(api: httpx.Client, merchant: MerchantKeys) -> None:
    key = merchant.secret_key
    first_payment, first = disputed_payment(api, key, INQUIRY_CARD)
    _, second = disputed_payment(api, key, INQUIRY_CARD)
    page = api.get("/v1/disputes", params={"page_size": 1}, headers=headers(key)).json()
    assert [d["id"] for d in page["disputes"]] == [second["id"]] and page["has_more"] is True
    rest = api.get(
        "/v1/disputes",
        params={"page_size": 1, "page_token": page["next_page_token"]},
        headers=headers(key),
    ).json()
    assert [d["id"] for d in rest["disputes"]] == [first["id"]]
    only = api.get(
        "/v1/disputes", params={"payment_id": first_payment["id"]}, headers=headers(key)
    ).json()
    assert [d["id"] for d in only["disputes"]] == [first["id"]]


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_won_and_lost_disputes_reconcile_with_the_ledger_and_the_processor(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform
) -> None:
    key = merchant.secret_key
    start = datetime.now(UTC) - timedelta(seconds=1)
    won_payment, won = disputed_payment(api, key, FRAUDULENT_CARD, amount=4_000)
    lost_payment, lost = disputed_payment(api, key, FRAUDULENT_CARD, amount=6_000)
    assert submit(api, key, won["id"], "winning_evidence").status_code == 200
    assert submit(api, key, lost["id"], "losing_evidence").status_code == 200
    wait_dispute(api, key, won["id"], status="won", funds_reinstated=True)
    wait_dispute(api, key, lost["id"], status="lost", funds_withdrawn=True)
    end = datetime.now(UTC) + timedelta(seconds=1)
    with grpc.insecure_channel(platform.settings.target("ledger")) as channel:
        stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
        report = stub.Reconcile(
            ledger_internal_pb2.ReconcileRequest(start_time=_stamp(start), end_time=_stamp(end)),
            timeout=60,
        )
    # Other tests share this platform's ledger; only this merchant's figures are asserted.
    ours = {won["id"], lost["id"], won_payment["id"], lost_payment["id"], merchant.id}
    assert [m for m in report.mismatches if ours & set(m.ids)] == []
    assert not [m for m in report.mismatches if m.kind == "TRIAL_BALANCE_UNBALANCED"]
    # Two captures, two withdrawals, one reinstatement, and the processor's record of each.
    assert report.checked_count >= 10
    assert balance(api, key) == (
        4_000
        - won_payment["fee"]
        - USD_DISPUTE_FEE
        + 6_000
        - lost_payment["fee"]
        - 6_000
        - USD_DISPUTE_FEE
    )


def test_operators_list_disputes_and_the_overview_counts_open_ones(
    api: httpx.Client, merchant: MerchantKeys, viewer_login: OperatorLogin
) -> None:
    key = merchant.secret_key
    payment, dispute = disputed_payment(api, key, FRAUDULENT_CARD)

    def overview() -> dict[str, Any]:
        response = api.get(
            "/admin/overview", params={"merchant_id": merchant.id}, headers=viewer_login.headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    assert overview()["open_disputes"] == 1
    listed = api.get(
        "/admin/disputes", params={"payment_id": payment["id"]}, headers=viewer_login.headers
    )
    assert listed.status_code == 200, listed.text
    assert [d["id"] for d in listed.json()["disputes"]] == [dispute["id"]]
    page = api.get("/admin/disputes", params={"page_size": 1}, headers=viewer_login.headers)
    assert page.status_code == 200 and len(page.json()["disputes"]) == 1
    # A merchant's key never opens the operators' API.
    assert api.get("/admin/disputes", headers=headers(key)).status_code in {401, 403}
    closed = api.post(f"/v1/disputes/{dispute['id']}/close", json={}, headers=headers(key))
    assert closed.status_code == 200, closed.text
    assert overview().get("open_disputes", 0) == 0
