"""The operators' views end to end: figures against payments made here, the live stream,
dead-letter replay to a test receiver, reconciliation, operator refunds, their audit entries.

Every figure is filtered on this test's own merchant, so other tests' payments never count.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys, OperatorLogin

SUCCESS_CARD = "4242424242424242"
DECLINE_CARD = "4000000000000002"
DEADLINE_S = 60.0
# Dead after the short test retry schedule (conftest), then replayed.
DELIVERY_DEADLINE_S = 150.0


def _wait_for(what: str, check: Callable[[], Any], deadline_s: float = DEADLINE_S) -> Any:
    """Polls `check` until it returns something truthy, failing after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pay(api: httpx.Client, key: str, *, amount: int, currency: str, card: str) -> dict[str, Any]:
    """Creates and confirms a payment, and waits until it has succeeded or failed."""
    headers = {"X-API-Key": key}
    created = api.post(
        "/v1/payments",
        json={"amount": amount, "currency": currency},
        headers={**headers, "Idempotency-Key": secrets.token_hex(8)},
    )
    assert created.status_code == 200, created.text
    payment_id = created.json()["id"]
    confirmed = api.post(
        f"/v1/payments/{payment_id}/confirm",
        json={
            "payment_method": {
                "card": {"number": card, "exp_month": 12, "exp_year": 2035, "cvc": "123"}
            }
        },
        headers={**headers, "Idempotency-Key": secrets.token_hex(8)},
    )
    assert confirmed.status_code == 200, confirmed.text

    def final() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/v1/payments/{payment_id}", headers=headers).json()
        return body if body["status"] in ("succeeded", "failed") else None

    result: dict[str, Any] = _wait_for(f"payment {payment_id} to finish", final)
    return result


def _refund(api: httpx.Client, key: str, *, payment_id: str, amount: int) -> dict[str, Any]:
    """A merchant's refund, waited on until it succeeded."""
    headers = {"X-API-Key": key}
    created = api.post(
        "/v1/refunds",
        json={"payment_id": payment_id, "amount": amount},
        headers={**headers, "Idempotency-Key": secrets.token_hex(8)},
    )
    assert created.status_code == 200, created.text
    refund_id = created.json()["id"]
    return _wait_until_refunded(api, headers, refund_id)


def _wait_until_refunded(
    api: httpx.Client, headers: dict[str, str], refund_id: str
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/v1/refunds/{refund_id}", headers=headers).json()
        return body if body["status"] == "succeeded" else None

    result: dict[str, Any] = _wait_for(f"refund {refund_id}", done)
    return result


def _overview(
    api: httpx.Client, login: OperatorLogin, merchant_id: str, **params: str
) -> dict[str, Any]:
    response = api.get(
        "/admin/overview", params={"merchant_id": merchant_id, **params}, headers=login.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _by_currency(overview: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {line["currency"]: line for line in overview["currencies"]}


def _audit(
    api: httpx.Client, login: OperatorLogin, action: str, target_id: str
) -> list[dict[str, Any]]:
    response = api.get(
        "/admin/audit_log",
        params={"operator_id": login.id, "action": action, "target_id": target_id},
        headers=login.headers,
    )
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


# Analytics, payment search and detail, operator refunds.


def test_overview_timeline_and_search_match_the_payments_made(
    api: httpx.Client, operator_login: OperatorLogin, merchant: MerchantKeys
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    key = merchant.secret_key
    usd_ok = [
        _pay(api, key, amount=1000, currency="USD", card=SUCCESS_CARD),
        _pay(api, key, amount=2500, currency="USD", card=SUCCESS_CARD),
    ]
    usd_declined = _pay(api, key, amount=4000, currency="USD", card=DECLINE_CARD)
    jpy_ok = _pay(api, key, amount=700, currency="JPY", card=SUCCESS_CARD)
    waiting = api.post(
        "/v1/payments",
        json={"amount": 999, "currency": "JPY"},
        headers={"X-API-Key": key, "Idempotency-Key": secrets.token_hex(8)},
    ).json()
    assert [p["status"] for p in usd_ok] == ["succeeded", "succeeded"]
    assert usd_declined["status"] == "failed"
    assert jpy_ok["status"] == "succeeded"
    merchant_refund = _refund(api, key, payment_id=jpy_ok["id"], amount=200)

    # An operator refund goes through the payment service; the same key gives the same refund.
    refund_path = f"/admin/payments/{usd_ok[0]['id']}/refund"
    operator_refund = api.post(
        refund_path,
        json={"amount": 100, "reason": "requested_by_customer"},
        headers={**operator_login.headers, "Idempotency-Key": "op-refund-1"},
    )
    assert operator_refund.status_code == 200, operator_refund.text
    repeated = api.post(
        refund_path,
        json={"amount": 100, "reason": "requested_by_customer", "idempotency_key": "op-refund-1"},
        headers=operator_login.headers,
    )
    assert repeated.status_code == 200, repeated.text
    assert repeated.json()["id"] == operator_refund.json()["id"]
    _wait_until_refunded(api, {"X-API-Key": key}, operator_refund.json()["id"])

    usd_fees = sum(int(p["fee"]) for p in usd_ok)
    jpy_fee = int(jpy_ok["fee"])
    assert usd_fees > 0 and jpy_fee > 0

    lines = _by_currency(_overview(api, operator_login, merchant.id))
    assert set(lines) == {"USD", "JPY"}, "currencies are never summed together"
    usd, jpy = lines["USD"], lines["JPY"]
    assert (usd["succeeded_count"], usd["failed_count"]) == (2, 1)
    assert usd["success_rate"] == pytest.approx(2 / 3)
    assert int(usd["gross_volume"]) == 3500
    assert int(usd["fees"]) == usd_fees
    assert int(usd["refunded"]) == 100
    assert int(usd["net_volume"]) == 3500 - usd_fees - 100
    assert (jpy["succeeded_count"], jpy["failed_count"]) == (1, 0)
    assert jpy["requires_payment_method_count"] == 1
    assert jpy["success_rate"] == 1.0
    assert (int(jpy["gross_volume"]), int(jpy["fees"]), int(jpy["refunded"])) == (
        700,
        jpy_fee,
        200,
    )
    assert int(jpy["net_volume"]) == 700 - jpy_fee - 200

    # A window that ends before the payments holds none of them.
    earlier = _overview(
        api,
        operator_login,
        merchant.id,
        start_time=_iso(start - timedelta(hours=2)),
        end_time=_iso(start - timedelta(hours=1)),
    )
    assert earlier["currencies"] == []

    timeline = api.get(
        "/admin/revenue/timeline",
        params={
            "granularity": "HOUR",
            "currency": "usd",
            "merchant_id": merchant.id,
            "start_time": _iso(start - timedelta(hours=1)),
            "end_time": _iso(start + timedelta(hours=2)),
        },
        headers=operator_login.headers,
    )
    assert timeline.status_code == 200, timeline.text
    buckets = timeline.json()["buckets"]
    assert timeline.json()["currency"] == "USD"
    assert len(buckets) >= 3
    assert sum(int(b["gross"]) for b in buckets) == 3500
    assert sum(int(b["fees"]) for b in buckets) == usd_fees
    assert sum(int(b["refunds"]) for b in buckets) == 100
    assert sum(int(b["succeeded_count"]) for b in buckets) == 2
    assert sum(int(b["failed_count"]) for b in buckets) == 1

    succeeded = api.get(
        "/admin/payments",
        params={"merchant_id": merchant.id, "status": "succeeded", "page_size": 2},
        headers=operator_login.headers,
    ).json()
    assert [p["id"] for p in succeeded["payments"]] == [jpy_ok["id"], usd_ok[1]["id"]]
    rest = api.get(
        "/admin/payments",
        params={
            "merchant_id": merchant.id,
            "status": "succeeded",
            "page_size": 2,
            "page_token": succeeded["next_page_token"],
        },
        headers=operator_login.headers,
    ).json()
    assert [p["id"] for p in rest["payments"]] == [usd_ok[0]["id"]]
    every = api.get(
        "/admin/payments", params={"merchant_id": merchant.id}, headers=operator_login.headers
    ).json()["payments"]
    assert {p["id"] for p in every} == {
        *(p["id"] for p in usd_ok),
        usd_declined["id"],
        jpy_ok["id"],
        waiting["id"],
    }

    detail = api.get(f"/admin/payments/{jpy_ok['id']}", headers=operator_login.headers)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["payment"]["id"] == jpy_ok["id"]
    assert [r["id"] for r in body["refunds"]] == [merchant_refund["id"]]
    assert "payment.succeeded" in {e["type"] for e in body["events"]}
    entries = body["ledger_entries"]
    assert {e["source_id"] for e in entries} == {jpy_ok["id"], merchant_refund["id"]}
    debits = sum(int(e["amount"]) for e in entries if e["direction"] == "debit")
    credits = sum(int(e["amount"]) for e in entries if e["direction"] == "credit")
    assert debits == credits > 0

    # The refund is recorded once: the repeat was answered from its key and changed nothing.
    audited = _audit(api, operator_login, "payment.refund", usd_ok[0]["id"])
    assert len(audited) == 1
    for entry in audited:
        assert entry["details"]["refund_id"] == operator_refund.json()["id"]
        assert entry["details"]["amount"] == "100"
        assert entry["client_ip"] == "127.0.0.1"

    balance = api.get("/admin/ledger/trial_balance", headers=operator_login.headers).json()
    assert balance["balanced"] is True
    accounts = api.get(
        "/admin/ledger/accounts", params={"owner": merchant.id}, headers=operator_login.headers
    ).json()["accounts"]
    assert {(a["currency"], a["kind"]) for a in accounts} >= {
        ("USD", "merchant_balance"),
        ("JPY", "merchant_balance"),
    }


def test_views__bad_input_is_400(api: httpx.Client, viewer_login: OperatorLogin) -> None:
    now = datetime.now(UTC)
    window = {"start_time": _iso(now - timedelta(hours=1)), "end_time": _iso(now)}
    cases: list[tuple[str, dict[str, str]]] = [
        ("/admin/revenue/timeline", {"granularity": "WEEK", "currency": "USD", **window}),
        ("/admin/revenue/timeline", {"granularity": "HOUR", "currency": "XYZ1", **window}),
        ("/admin/revenue/timeline", {"granularity": "HOUR", "currency": "USD"}),
        (
            "/admin/revenue/timeline",
            {
                "granularity": "HOUR",
                "currency": "USD",
                "start_time": _iso(now - timedelta(days=400)),
                "end_time": _iso(now),
            },
        ),
        (
            "/admin/revenue/timeline",
            {
                "granularity": "DAY",
                "currency": "USD",
                "start_time": window["end_time"],
                "end_time": window["start_time"],
            },
        ),
        ("/admin/overview", {"start_time": window["end_time"], "end_time": window["start_time"]}),
        ("/admin/overview", {"start_time": "yesterday"}),
        ("/admin/payments", {"page_size": "101"}),
        ("/admin/payments", {"page_size": "many"}),
        ("/admin/webhooks/failed", {"page_size": "-1"}),
    ]
    for path, params in cases:
        response = api.get(path, params=params, headers=viewer_login.headers)
        assert response.status_code == 400, (path, params, response.text)


def test_operator_refund__the_longest_key_the_header_takes_refunds_once(
    api: httpx.Client, operator_login: OperatorLogin, merchant: MerchantKeys
) -> None:
    paid = _pay(api, merchant.secret_key, amount=500, currency="EUR", card=SUCCESS_CARD)
    path = f"/admin/payments/{paid['id']}/refund"
    headers = {**operator_login.headers, "Idempotency-Key": "k" * 255}
    first = api.post(path, json={"amount": 100}, headers=headers)
    assert first.status_code == 200, first.text
    again = api.post(path, json={"amount": 100}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    refunds = api.get(
        "/v1/refunds",
        params={"payment_id": paid["id"]},
        headers={"X-API-Key": merchant.secret_key},
    ).json()["refunds"]
    assert [r["amount"] for r in refunds] == [100]


def test_operator_refund__bad_input_is_4xx_and_refunds_nothing(
    api: httpx.Client, operator_login: OperatorLogin, merchant: MerchantKeys
) -> None:
    paid = _pay(api, merchant.secret_key, amount=500, currency="EUR", card=SUCCESS_CARD)
    path = f"/admin/payments/{paid['id']}/refund"
    for body, status in (
        ({"amount": 10}, 400),  # no idempotency key
        ({"amount": -1, "idempotency_key": "a"}, 400),
        ({"amount": 10, "reason": "bored", "idempotency_key": "b"}, 400),
        ({"amount": 10, "idempotency_key": "x" * 300}, 400),
        ({"amount": "lots", "idempotency_key": "c"}, 400),
        ({"amount": 501, "idempotency_key": "d"}, 400),
        # 0 is not "everything" (it refunded the whole payment before amounts had presence).
        ({"amount": 0, "idempotency_key": "f"}, 400),
        ({"amount": "0", "idempotency_key": "g"}, 400),
    ):
        response = api.post(path, json=body, headers=operator_login.headers)
        assert response.status_code == status, (body, response.text)
    unknown = api.post(
        "/admin/payments/pay_unknown/refund",
        json={"idempotency_key": "e"},
        headers=operator_login.headers,
    )
    assert unknown.status_code == 404, unknown.text
    refunds = api.get(
        "/v1/refunds",
        params={"payment_id": paid["id"]},
        headers={"X-API-Key": merchant.secret_key},
    ).json()
    assert refunds.get("refunds", []) == []
    assert _audit(api, operator_login, "payment.refund", paid["id"]) == []
    # Leaving the amount out (unlike 0 above) refunds what is left: the admin service passes
    # no amount on, rather than a 0 that the payment service would refuse.
    rest = api.post(path, json={"idempotency_key": "h"}, headers=operator_login.headers)
    assert rest.status_code == 200, rest.text
    assert int(rest.json()["amount"]) == 500


# The live overview stream.


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON messages of a Server-Sent Events response."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line.removeprefix("data:").strip())


def _stream_token(api: httpx.Client, login: OperatorLogin) -> str:
    response = api.post("/admin/stream_tokens", json={}, headers=login.headers)
    assert response.status_code == 200, response.text
    token: str = response.json()["stream_token"]
    assert token.startswith("pmst_")
    return token


def test_watch_overview__pushes_an_update_after_a_new_payment(
    api: httpx.Client,
    platform: LocalPlatform,
    viewer_login: OperatorLogin,
    merchant: MerchantKeys,
) -> None:
    token = _stream_token(api, viewer_login)
    with (
        httpx.Client(base_url=platform.base_url, timeout=httpx.Timeout(10, read=45)) as stream,
        stream.stream(
            "GET",
            "/admin/overview:watch",
            params={"merchant_id": merchant.id},
            headers={"Accept": "text/event-stream", "Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
        first = next(events)
        assert first["currencies"] == []
        paid = _pay(api, merchant.secret_key, amount=1234, currency="GBP", card=SUCCESS_CARD)
        deadline = time.monotonic() + DEADLINE_S
        for event in events:
            lines = _by_currency(event)
            if "GBP" in lines and lines["GBP"]["succeeded_count"] == 1:
                assert int(lines["GBP"]["gross_volume"]) == 1234
                assert int(lines["GBP"]["fees"]) == int(paid["fee"])
                break
            assert time.monotonic() < deadline, "no update after the payment"


def test_watch_overview__auth(
    api: httpx.Client,
    platform: LocalPlatform,
    operator_login: OperatorLogin,
    merchant: MerchantKeys,
) -> None:
    def open_status(params: dict[str, str], headers: dict[str, str] | None = None) -> int:
        with (
            httpx.Client(base_url=platform.base_url, timeout=10) as client,
            client.stream(
                "GET", "/admin/overview:watch", params=params, headers=headers or {}
            ) as response,
        ):
            return response.status_code

    assert open_status({}) == 401
    assert open_status({}, {"X-API-Key": merchant.secret_key}) == 403
    token = _stream_token(api, operator_login)
    stream_as_bearer = {"Authorization": f"Bearer {token}"}
    assert open_status({}, stream_as_bearer) == 200
    # A token in the URL (where logs and browser history keep it) opens nothing: the field is
    # gone, so the edge refuses it as an unknown parameter.
    assert open_status({"stream_token": token}) == 400
    # The stream token opens nothing else.
    assert api.get("/admin/merchants", headers=stream_as_bearer).status_code == 401
    # Logging out ends the session's stream tokens too.
    assert api.post("/admin/logout", json={}, headers=operator_login.headers).status_code == 200
    assert open_status({}, stream_as_bearer) == 401


# Dead-letter replay.


class _Receiver:
    """A local webhook endpoint whose answer the test sets; it records each delivery."""

    def __init__(self) -> None:
        self.status = 500
        self.received: list[tuple[int, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                status = receiver.status
                receiver.received.append((status, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def delivered(self, event_id: str) -> bool:
        """Whether the event was answered 200 at least once."""
        return any(status == 200 and body.get("id") == event_id for status, body in self.received)


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    """A webhook receiver that answers 500 until told otherwise."""
    running = _Receiver()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


def test_replay__moves_dead_deliveries_to_delivered_and_is_audited(
    api: httpx.Client,
    operator_login: OperatorLogin,
    merchant: MerchantKeys,
    receiver: _Receiver,
) -> None:
    endpoint = api.post(
        "/v1/webhook_endpoints",
        json={"url": receiver.url, "enabled_events": ["payment.succeeded"]},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert endpoint.status_code == 200, endpoint.text
    for amount in (300, 400):
        _pay(api, merchant.secret_key, amount=amount, currency="USD", card=SUCCESS_CARD)

    def dead() -> list[dict[str, Any]]:
        listed = api.get(
            "/admin/webhooks/failed",
            params={"merchant_id": merchant.id},
            headers=operator_login.headers,
        ).json()["deliveries"]
        return listed if len(listed) == 2 else []

    deliveries = _wait_for("two dead deliveries", dead, DELIVERY_DEADLINE_S)
    for delivery in deliveries:
        assert delivery["status"] == "dead"
        assert delivery["job_id"]
        assert delivery["event_type"] == "payment.succeeded"
        assert delivery["endpoint_url"] == receiver.url
        assert delivery["merchant_id"] == merchant.id
        assert delivery["last_status_code"] == 500
        assert delivery["attempt_count"] >= 2
    webhooks = _overview(api, operator_login, merchant.id)["webhooks"]
    assert webhooks["dead"] == 2

    receiver.status = 200
    one, other = deliveries
    replayed = api.post(
        f"/admin/webhooks/replay/{one['job_id']}", json={}, headers=operator_login.headers
    )
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["event_id"] == one["event_id"]
    _wait_for(
        "the replayed event at the receiver",
        lambda: receiver.delivered(one["event_id"]),
        DELIVERY_DEADLINE_S,
    )

    bulk = api.post(
        "/admin/webhooks/replay", json={"merchant_id": merchant.id}, headers=operator_login.headers
    )
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["delivery_ids"] == [other["id"]]
    _wait_for(
        "the bulk-replayed event",
        lambda: receiver.delivered(other["event_id"]),
        DELIVERY_DEADLINE_S,
    )

    def all_delivered() -> bool:
        counts = _overview(api, operator_login, merchant.id)["webhooks"]
        return bool(counts["delivered"] == 2 and counts["dead"] == 0)

    _wait_for("both deliveries delivered", all_delivered, DELIVERY_DEADLINE_S)
    assert dead() == []
    attempts = api.get(
        f"/admin/webhooks/deliveries/{one['id']}/attempts", headers=operator_login.headers
    ).json()["attempts"]
    assert attempts[-1]["status_code"] == 200
    # Before the replay every attempt failed: 500s, or no answer at all on a loaded machine.
    assert 500 in {a["status_code"] for a in attempts[:-1]}
    assert {a["status_code"] for a in attempts[:-1]} <= {0, 500}, attempts

    [audited] = _audit(api, operator_login, "webhook.replay", one["id"])
    assert audited["details"]["job_id"] == one["job_id"]
    assert audited["details"]["event_id"] == one["event_id"]
    [bulk_audit] = _audit(api, operator_login, "webhook.replay_bulk", merchant.id)
    assert bulk_audit["details"]["count"] == "1"
    assert bulk_audit["details"]["delivery_ids"] == other["id"]

    unknown = api.post(
        "/admin/webhooks/replay/job_unknown", json={}, headers=operator_login.headers
    )
    assert unknown.status_code == 404, unknown.text


# Reconciliation.


def test_reconciliation__runs_are_kept_listed_and_audited(
    api: httpx.Client, operator_login: OperatorLogin, viewer_login: OperatorLogin
) -> None:
    now = datetime.now(UTC)
    body = {"start_time": _iso(now - timedelta(hours=1)), "end_time": _iso(now)}
    ran = api.post("/admin/reconciliation", json=body, headers=operator_login.headers)
    assert ran.status_code == 200, ran.text
    run = ran.json()
    assert run["id"].startswith("rec_")
    assert run["operator_id"] == operator_login.id
    assert run["report"]["start_time"] == body["start_time"]
    assert run["mismatch_count"] == len(run["report"].get("mismatches", []))

    fetched = api.get(f"/admin/reconciliation/{run['id']}", headers=viewer_login.headers)
    assert fetched.status_code == 200
    assert fetched.json() == run
    listed = api.get(
        "/admin/reconciliation", params={"page_size": 5}, headers=viewer_login.headers
    ).json()["runs"]
    assert run["id"] in {r["id"] for r in listed}

    [audited] = _audit(api, operator_login, "reconciliation.run", run["id"])
    assert audited["details"]["mismatch_count"] == str(run["mismatch_count"])

    for bad in (
        {},
        {"start_time": body["start_time"]},
        {"start_time": body["end_time"], "end_time": body["start_time"]},
        {"start_time": _iso(now - timedelta(days=400)), "end_time": body["end_time"]},
        {"start_time": "soon", "end_time": body["end_time"]},
    ):
        response = api.post("/admin/reconciliation", json=bad, headers=operator_login.headers)
        assert response.status_code == 400, (bad, response.text)
