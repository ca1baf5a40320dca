"""Payouts and the pending/available balance through Envoy, and what they post to the ledger."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from sqlalchemy import select

from services.common.db import transaction
from services.payment.models import OutboxMessage, Payout
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import paid
from tests.integration.test_payments_refunds import refund, wait_refund
from tests.rest_errors import error_code

WAIT_S = 60.0
PAYS = "000123456789"
NO_ACCOUNT = "000111111116"
ACCOUNT_CLOSED = "000111111113"


def _headers(key: str, idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"X-API-Key": key}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def set_payout_settings(api: httpx.Client, key: str, **body: Any) -> dict[str, Any]:
    """POST /v1/account/payout_settings, which must succeed."""
    response = api.post("/v1/account/payout_settings", json=body, headers=_headers(key))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def balance(api: httpx.Client, key: str) -> dict[str, tuple[int, int]]:
    """(available, pending) per currency from GET /v1/balance."""
    response = api.get("/v1/balance", headers=_headers(key))
    assert response.status_code == 200, response.text
    return {
        amount["currency"]: (amount["available"], amount["pending"])
        for amount in response.json().get("available", [])
    }


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Polls `check` until it answers something true; returns that."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_available(api: httpx.Client, key: str, currency: str, amount: int) -> None:
    """Waits until `amount` of `currency` is available (and nothing pending)."""
    wait_until(
        lambda: balance(api, key).get(currency) == (amount, 0),
        f"{amount} {currency} available",
    )


def create_payout(
    api: httpx.Client, key: str, *, idempotency_key: str | None = None, **body: Any
) -> httpx.Response:
    """POST /v1/payouts."""
    return api.post("/v1/payouts", json=body, headers=_headers(key, idempotency_key))


def wait_payout(api: httpx.Client, key: str, payout_id: str, statuses: set[str]) -> dict[str, Any]:
    """Polls a payout until it reaches one of `statuses`."""

    def check() -> dict[str, Any] | None:
        response = api.get(f"/v1/payouts/{payout_id}", headers=_headers(key))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["status"] in statuses else None

    result: dict[str, Any] = wait_until(check, f"{payout_id} in {statuses}")
    return result


def funded(
    api: httpx.Client, merchant: MerchantKeys, *, account: str = PAYS, amount: int = 10_000
) -> int:
    """A merchant with a bank account, no settlement delay and one paid payment's funds
    available; returns the available amount (USD)."""
    set_payout_settings(api, merchant.secret_key, bank_account_number=account, settlement_delay_s=0)
    payment = paid(api, merchant.secret_key, amount=amount, currency="USD")
    assert payment["status"] == "succeeded"
    net = payment["amount_received"] - payment["fee"]
    wait_available(api, merchant.secret_key, "USD", net)
    return int(net)


def payout_events(sessions: Any, payout_id: str) -> list[str]:
    """The event types the payment service wrote for a payout, in order."""
    with transaction(sessions) as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.kind == "event")
            .where(OutboxMessage.payload["object"]["id"].astext == payout_id)
            .order_by(OutboxMessage.id)
        ).all()
        return [row.topic for row in rows]


def ledger_stub(platform: LocalPlatform) -> ledger_internal_pb2_grpc.LedgerInternalServiceStub:
    """The ledger's internal service."""
    channel = grpc.insecure_channel(platform.settings.target("ledger"))
    return ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)


def ledger_legs(platform: LocalPlatform, source_id: str) -> dict[str, list[tuple[str, str, int]]]:
    """A payout's ledger transactions: (account kind, direction, amount) per transaction id."""
    stub = ledger_stub(platform)
    reply = stub.ListEntries(
        ledger_internal_pb2.ListEntriesRequest(source_id=source_id, page_size=100), timeout=10
    )
    kinds: dict[str, str] = {}
    legs: dict[str, list[tuple[str, str, int]]] = {}
    for entry in reply.entries:
        if entry.account_id not in kinds:
            account = stub.GetAccount(
                ledger_internal_pb2.GetAccountRequest(id=entry.account_id), timeout=10
            )
            kinds[entry.account_id] = account.kind
        legs.setdefault(entry.transaction_id, []).append(
            (kinds[entry.account_id], entry.direction, entry.amount)
        )
    return {transaction_id: sorted(legs[transaction_id]) for transaction_id in legs}


def ledger_complete(sessions: Any, payout_id: str) -> bool:
    """Whether the payment service recorded every ledger transaction the payout's status needs."""
    with transaction(sessions) as session:
        return bool(session.scalar(select(Payout.ledger_complete).where(Payout.id == payout_id)))


def reconcile_mismatches(platform: LocalPlatform, ids: set[str]) -> list[Any]:
    """Mismatches of a reconciliation of the last ten minutes that name any of `ids`."""
    start, end = Timestamp(), Timestamp()
    now = datetime.now(UTC)
    start.FromDatetime(now - timedelta(minutes=10))
    end.FromDatetime(now + timedelta(seconds=1))
    report = ledger_stub(platform).Reconcile(
        ledger_internal_pb2.ReconcileRequest(start_time=start, end_time=end), timeout=60
    )
    return [m for m in report.mismatches if ids & set(m.ids) or not m.ids]


def test_balance__captured_funds_are_pending_until_the_settlement_delay_passes(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any
) -> None:
    set_payout_settings(api, merchant.secret_key, settlement_delay_s=3600)
    payment = paid(api, merchant.secret_key, amount=5000, currency="EUR")
    net = payment["amount_received"] - payment["fee"]
    assert balance(api, merchant.secret_key) == {"EUR": (0, net)}
    time.sleep(1.5)  # three sweeps: still pending
    assert balance(api, merchant.secret_key) == {"EUR": (0, net)}
    set_payout_settings(api, merchant.secret_key, settlement_delay_s=0)
    wait_available(api, merchant.secret_key, "EUR", net)

    def available_events() -> list[Any]:
        with transaction(sessions) as session:
            return list(
                session.scalars(
                    select(OutboxMessage).where(
                        OutboxMessage.topic == "balance.available",
                        OutboxMessage.payload["merchant_id"].astext == merchant.id,
                    )
                ).all()
            )

    # The sweeper posts the release to the ledger (the balance shows it), then records it
    # with its event in one transaction: wait for that.
    events = wait_until(available_events, "the balance.available event")
    time.sleep(1.5)  # three sweeps more: still one event
    events = available_events()
    assert [e.payload["object"]["available"] for e in events] == [
        [{"currency": "EUR", "available": net, "pending": 0}]
    ]


def test_payout__paid_moves_available_through_in_transit_to_the_bank(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any, platform: LocalPlatform
) -> None:
    net = funded(api, merchant)
    response = create_payout(
        api,
        merchant.secret_key,
        amount=net - 100,
        currency="usd",
        description="weekly",
        metadata={"batch": "1"},
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["status"] == "pending"
    assert (created["amount"], created["currency"], created["method"]) == (
        net - 100,
        "USD",
        "manual",
    )
    assert created["bank_account_last4"] == "6789"
    assert created["metadata"] == {"batch": "1"}
    done = wait_payout(api, merchant.secret_key, created["id"], {"paid", "failed"})
    assert done["status"] == "paid"
    assert balance(api, merchant.secret_key) == {"USD": (100, 0)}
    wait_until(
        lambda: (
            payout_events(sessions, created["id"])
            == ["payout.created", "payout.updated", "payout.paid"]
        ),
        "the payout's events",
    )
    legs = sorted(ledger_legs(platform, created["id"]).values())
    assert legs == sorted(
        [
            [("merchant_balance", "debit", net - 100), ("payouts_in_transit", "credit", net - 100)],
            [("payouts_in_transit", "debit", net - 100), ("platform_cash", "credit", net - 100)],
        ]
    )
    listed = api.get(
        "/v1/payouts", params={"status": "paid"}, headers=_headers(merchant.secret_key)
    )
    assert [p["id"] for p in listed.json()["payouts"]] == [created["id"]]
    assert reconcile_mismatches(platform, {merchant.id, created["id"]}) == []


@pytest.mark.parametrize(
    ("account", "failure_code"), [(NO_ACCOUNT, "no_account"), (ACCOUNT_CLOSED, "account_closed")]
)
def test_payout__failing_bank_account_fails_and_returns_the_funds(  # noqa: PLR0917 - fixtures
    api: httpx.Client,
    merchant: MerchantKeys,
    sessions: Any,
    platform: LocalPlatform,
    account: str,
    failure_code: str,
) -> None:
    net = funded(api, merchant, account=account)
    created = create_payout(api, merchant.secret_key, amount=net, currency="USD").json()
    done = wait_payout(api, merchant.secret_key, created["id"], {"paid", "failed"})
    assert (done["status"], done["failure_code"]) == ("failed", failure_code)
    assert balance(api, merchant.secret_key) == {"USD": (net, 0)}
    wait_until(
        lambda: (
            payout_events(sessions, created["id"])
            == ["payout.created", "payout.updated", "payout.failed"]
        ),
        "the payout's events",
    )
    legs = sorted(ledger_legs(platform, created["id"]).values())
    assert legs == [
        [("merchant_balance", "credit", net), ("payouts_in_transit", "debit", net)],
        [("merchant_balance", "debit", net), ("payouts_in_transit", "credit", net)],
    ]
    assert reconcile_mismatches(platform, {merchant.id, created["id"]}) == []


def test_payout__cancel_while_pending_returns_the_funds_and_later_cancel_is_refused(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any, platform: LocalPlatform
) -> None:
    net = funded(api, merchant)
    # With the worker stopped the payout stays pending.
    platform.kill("payment-worker")
    try:
        created = create_payout(api, merchant.secret_key, amount=net, currency="USD").json()
        assert balance(api, merchant.secret_key) == {"USD": (net, 0)}
        second = create_payout(api, merchant.secret_key, amount=1, currency="USD")
        assert error_code(second) == "insufficient_available_balance"
        canceled = api.post(
            f"/v1/payouts/{created['id']}/cancel", json={}, headers=_headers(merchant.secret_key)
        )
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
    finally:
        platform.start_process("payment-worker")
    again = api.post(
        f"/v1/payouts/{created['id']}/cancel", json={}, headers=_headers(merchant.secret_key)
    )
    assert again.status_code == 400, again.text
    assert error_code(again) == "payout_state_invalid"
    # The worker posts both transactions, then records them on the payout (ledger_complete);
    # reconciliation reads that record, so it waits for it rather than for the ledger.
    wait_until(lambda: ledger_complete(sessions, created["id"]), "the cancel's ledger reversal")
    assert len(ledger_legs(platform, created["id"])) == 2
    assert balance(api, merchant.secret_key) == {"USD": (net, 0)}
    assert payout_events(sessions, created["id"]) == ["payout.created", "payout.canceled"]
    assert reconcile_mismatches(platform, {merchant.id, created["id"]}) == []


def test_payout__automatic_schedule_pays_out_the_available_balance(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    net = funded(api, merchant)
    set_payout_settings(api, merchant.secret_key, schedule="automatic")

    def automatic() -> list[dict[str, Any]]:
        response = api.get("/v1/payouts", headers=_headers(merchant.secret_key))
        return [p for p in response.json().get("payouts", []) if p["status"] == "paid"]

    payouts = wait_until(automatic, "an automatic payout")
    assert [(p["amount"], p["method"]) for p in payouts] == [(net, "automatic")]
    assert balance(api, merchant.secret_key) == {"USD": (0, 0)}


def test_payout__more_than_available_is_refused_and_changes_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    set_payout_settings(api, merchant.secret_key, bank_account_number=PAYS)
    nothing = create_payout(api, merchant.secret_key, amount=1, currency="USD")
    assert error_code(nothing) == "insufficient_available_balance"
    assert nothing.status_code == 400
    net = funded(api, merchant)
    too_much = create_payout(api, merchant.secret_key, amount=net + 1, currency="USD")
    assert error_code(too_much) == "insufficient_available_balance"
    assert too_much.json()["error"]["param"] == "amount"
    listed = api.get("/v1/payouts", headers=_headers(merchant.secret_key)).json()
    assert listed.get("payouts", []) == []


def test_payout__without_a_bank_account_is_refused(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    response = create_payout(api, merchant.secret_key, amount=100, currency="USD")
    assert error_code(response) == "no_bank_account"


def test_balance__a_refund_beyond_available_goes_negative_and_later_funds_recover_it(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    net = funded(api, merchant)
    assert create_payout(api, merchant.secret_key, amount=net, currency="USD").status_code == 200
    wait_until(lambda: balance(api, merchant.secret_key) == {"USD": (0, 0)}, "the payout")
    set_payout_settings(api, merchant.secret_key, settlement_delay_s=3600)
    first = api.get("/v1/payments", headers=_headers(merchant.secret_key)).json()["payments"][0]
    done = wait_refund(
        api,
        merchant.secret_key,
        refund(api, merchant.secret_key, payment_id=first["id"], amount=3000).json()["id"],
    )
    assert done["status"] == "succeeded"
    later = paid(api, merchant.secret_key, amount=10_000, currency="USD")
    later_net = later["amount_received"] - later["fee"]
    assert balance(api, merchant.secret_key) == {"USD": (-3000, later_net)}
    nothing = create_payout(api, merchant.secret_key, amount=1, currency="USD")
    assert error_code(nothing) == "insufficient_available_balance"
    set_payout_settings(api, merchant.secret_key, settlement_delay_s=0)
    wait_available(api, merchant.secret_key, "USD", later_net - 3000)


def test_payout__idempotency_key_returns_the_same_payout(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    net = funded(api, merchant)
    key = str(uuid.uuid4())
    first = create_payout(api, merchant.secret_key, idempotency_key=key, amount=net, currency="USD")
    again = create_payout(api, merchant.secret_key, idempotency_key=key, amount=net, currency="USD")
    assert first.status_code == again.status_code == 200, again.text
    assert first.json()["id"] == again.json()["id"]
    other = create_payout(api, merchant.secret_key, idempotency_key=key, amount=1, currency="USD")
    assert other.status_code in (400, 409, 422), other.text
    listed = api.get("/v1/payouts", headers=_headers(merchant.secret_key)).json()
    assert len(listed["payouts"]) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"currency": "USD"}, "amount"),
        ({"amount": 100}, "currency"),
        ({"amount": "ten", "currency": "USD"}, "amount"),
        ({"amount": 1.5, "currency": "USD"}, "amount"),
        ({"amount": 10**20, "currency": "USD"}, "amount"),
        ({"amount": -5, "currency": "USD"}, "amount"),
        ({"amount": 100, "currency": "XYZ"}, "currency"),
        ({"amount": 100, "currency": "USD", "description": "x" * 1001}, "description"),
        ({"amount": 100, "currency": "USD", "surprise": 1}, "surprise"),
    ],
)
def test_payout__bad_input_is_refused_naming_the_field(
    api: httpx.Client, merchant: MerchantKeys, body: dict[str, Any], param: str
) -> None:
    set_payout_settings(api, merchant.secret_key, bank_account_number=PAYS)
    response = create_payout(api, merchant.secret_key, **body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].get("param") == param, response.text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"bank_account_number": "12ab"}, "bank_account_number"),
        ({"bank_account_number": "1" * 35}, "bank_account_number"),
        ({"schedule": "weekly"}, "schedule"),
        ({"settlement_delay_s": -1}, "settlement_delay_s"),
    ],
)
def test_payout_settings__bad_input_is_refused(
    api: httpx.Client, merchant: MerchantKeys, body: dict[str, Any], param: str
) -> None:
    response = api.post(
        "/v1/account/payout_settings", json=body, headers=_headers(merchant.secret_key)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].get("param") == param, response.text


def test_payout_settings__read_back_without_the_full_account_number(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    default = api.get("/v1/account/payout_settings", headers=_headers(merchant.secret_key))
    assert default.json()["schedule"] == "manual"
    assert default.json()["bank_account_last4"] == ""
    set_payout_settings(api, merchant.secret_key, bank_account_number=PAYS, schedule="manual")
    shown = api.get("/v1/account/payout_settings", headers=_headers(merchant.secret_key)).json()
    assert shown["bank_account_last4"] == "6789"
    assert PAYS not in str(shown)


def test_payout__unknown_and_other_merchants_ids_are_not_found(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    net = funded(api, merchant)
    created = create_payout(api, merchant.secret_key, amount=net, currency="USD").json()
    for key, payout_id in (
        (other_merchant.secret_key, created["id"]),
        (merchant.secret_key, "po_doesnotexist"),
        (merchant.secret_key, "pay_notapayout"),
    ):
        got = api.get(f"/v1/payouts/{payout_id}", headers=_headers(key))
        assert got.status_code == 404, got.text
        assert error_code(got) == "payout_not_found"
        cancel = api.post(f"/v1/payouts/{payout_id}/cancel", json={}, headers=_headers(key))
        assert cancel.status_code == 404, cancel.text
    assert (
        api.get("/v1/payouts", headers=_headers(other_merchant.secret_key))
        .json()
        .get("payouts", [])
        == []
    )
    bad_status = api.get(
        "/v1/payouts", params={"status": "lost"}, headers=_headers(merchant.secret_key)
    )
    assert bad_status.status_code == 400


def test_ledger__trial_balance_stays_zero_with_payouts(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform
) -> None:
    net = funded(api, merchant)
    created = create_payout(api, merchant.secret_key, amount=net, currency="USD").json()
    wait_payout(api, merchant.secret_key, created["id"], {"paid"})
    reply = ledger_stub(platform).GetTrialBalance(
        ledger_internal_pb2.GetTrialBalanceRequest(), timeout=10
    )
    assert reply.balanced


def test_admin__operators_list_payouts_and_the_overview_counts_failed_ones(
    api: httpx.Client, merchant: MerchantKeys, operator_login: Any
) -> None:
    net = funded(api, merchant, account=NO_ACCOUNT)
    created = create_payout(api, merchant.secret_key, amount=net, currency="USD").json()
    wait_payout(api, merchant.secret_key, created["id"], {"failed"})
    listed = api.get(
        "/admin/payouts",
        params={"merchant_id": merchant.id, "status": "failed"},
        headers=operator_login.headers,
    )
    assert listed.status_code == 200, listed.text
    assert [p["id"] for p in listed.json()["payouts"]] == [created["id"]]
    overview = api.get("/admin/overview", headers=operator_login.headers)
    assert overview.status_code == 200, overview.text
    assert overview.json()["pipeline"]["payouts_failed"] >= 1
    # Merchant keys never open operators' RPCs.
    refused = api.get("/admin/payouts", headers=_headers(merchant.secret_key))
    assert refused.status_code in (401, 403), refused.text
