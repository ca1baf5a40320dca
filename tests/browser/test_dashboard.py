"""The operators' dashboard in a real browser: login, live overview, replay, keys, viewer role."""

from __future__ import annotations

import re
import time
from typing import Any

import grpc
import httpx
from paymesh.webhook.v1 import webhook_internal_pb2_grpc
from playwright.sync_api import BrowserContext, Page, Route, expect

from services.runtime.platform import LocalPlatform
from tests.browser.support import (
    DECLINED,
    DISPUTED,
    VISA_OK,
    create_payment,
    money_text,
    sign_in,
    wait_dispute,
    wait_final,
    wait_until_refunded,
)
from tests.conftest import MerchantKeys, OperatorLogin
from tests.integration.test_payouts import NO_ACCOUNT, create_payout, funded, wait_payout
from tests.integration.webhook_receiver import Receiver, Reply, create_endpoint, publish


def _figure(page: Page, name: str) -> Any:
    return page.get_by_test_id(f"figure-{name}").get_by_test_id("value")


def test_login__operator_signs_in_and_wrong_password_is_refused(
    page: Page, operator_login: OperatorLogin
) -> None:
    page.goto("/dashboard/")
    expect(page).to_have_url(re.compile(r"/dashboard/login"))
    page.get_by_label("Email").fill(operator_login.email)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong email or password.")

    sign_in(page, operator_login.email, operator_login.password)
    expect(page.get_by_test_id("role")).to_have_text("operator")
    expect(page.get_by_test_id("operator")).to_contain_text(operator_login.email)
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "live")


def test_login__the_session_token_is_kept_in_memory_only(
    page: Page, operator_login: OperatorLogin
) -> None:
    sign_in(page, operator_login.email, operator_login.password, "/dashboard/payments")
    expect(page.get_by_test_id("role")).to_have_text("operator")
    # Nothing a later script on this origin (which also serves the checkout) could read.
    stored = page.evaluate("() => [sessionStorage.length, localStorage.length, document.cookie]")
    assert stored == [0, 0, ""]

    # A reload forgets the session: sign in again, and land back on the same page.
    page.reload()
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next=%2Fpayments"))
    sign_in(page, operator_login.email, operator_login.password, "/dashboard/payments")


def test_overview__figures_match_the_payments_made(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    # Two currencies with other exponents than the usual 2: KWD has 3 decimals, JPY none.
    made = [
        create_payment(api, merchant, amount=1500, currency="KWD", card=VISA_OK),
        create_payment(api, merchant, amount=2250, currency="KWD", card=VISA_OK),
        create_payment(api, merchant, amount=990, currency="KWD", card=DECLINED),
        create_payment(api, merchant, amount=1200, currency="JPY", card=VISA_OK),
    ]
    final = [wait_final(api, merchant, p["id"]) for p in made]
    assert [p["status"] for p in final] == ["succeeded", "succeeded", "failed", "succeeded"]
    kwd = [p for p in final if p["currency"] == "KWD" and p["status"] == "succeeded"]
    gross = sum(int(p["amount_received"]) for p in kwd)
    fees = sum(int(p["fee"]) for p in kwd)

    sign_in(
        page,
        operator_login.email,
        operator_login.password,
        f"/dashboard/overview?merchant={merchant.id}",
    )
    page.get_by_test_id("currency-KWD").click()
    expect(_figure(page, "succeeded")).to_have_text("2")
    expect(_figure(page, "failed")).to_have_text("1")
    expect(_figure(page, "success-rate")).to_have_text("66.7%")
    expect(_figure(page, "gross")).to_have_text(money_text(page, gross, "KWD", 3))
    expect(_figure(page, "fees")).to_have_text(money_text(page, fees, "KWD", 3))
    expect(_figure(page, "net")).to_have_text(money_text(page, gross - fees, "KWD", 3))

    page.get_by_test_id("currency-JPY").click()
    expect(_figure(page, "succeeded")).to_have_text("1")
    expect(_figure(page, "gross")).to_have_text(money_text(page, 1200, "JPY", 0))


def test_overview__shows_the_workers_and_the_pipeline(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    # A payout the merchant's bank refused, and the merchant's open dispute.
    net = funded(api, merchant, account=NO_ACCOUNT)
    payout = create_payout(api, merchant.secret_key, amount=net, currency="USD")
    assert payout.status_code == 200, payout.text
    wait_payout(api, merchant.secret_key, payout.json()["id"], {"failed"})
    disputed = create_payment(api, merchant, amount=3000, currency="USD", card=DISPUTED)
    wait_dispute(api, merchant, disputed["id"])

    sign_in(
        page,
        operator_login.email,
        operator_login.password,
        f"/dashboard/overview?merchant={merchant.id}",
    )
    workers = page.get_by_test_id("worker-health")
    for kind in ("payment-worker", "webhook-worker"):
        expect(workers.get_by_test_id(f"worker-{kind}").first).to_contain_text("Healthy")
    pipeline = page.get_by_test_id("pipeline-health")
    for queue in ("paymesh.payments", "paymesh.maintenance", "paymesh.webhooks"):
        expect(pipeline.get_by_test_id(f"queue-{queue}")).to_be_visible()
    for kind in ("job", "event"):
        expect(pipeline.get_by_test_id(f"outbox-{kind}")).to_be_visible()
    # A healthy platform: nothing stuck, nothing late, so no warning.
    expect(pipeline.get_by_test_id("stuck-payments")).to_contain_text("0")
    expect(pipeline.get_by_test_id("stuck-refunds")).to_contain_text("0")
    expect(pipeline.get_by_test_id("pipeline-warnings")).to_have_count(0)

    # The merchant's open disputes, and every merchant's payouts on their way and failed, as
    # the API counts them (payouts of other tests may still move: read both until they agree).
    def api_figures() -> dict[str, str]:
        response = api.get(
            "/admin/overview", params={"merchant_id": merchant.id}, headers=operator_login.headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return {
            "open-disputes": str(body.get("open_disputes", "0")),
            "payouts-in-transit": str(body["pipeline"].get("payouts_in_transit", "0")),
            "payouts-failed": str(body["pipeline"].get("payouts_failed", "0")),
        }

    deadline = time.monotonic() + 15
    while True:
        wanted = api_figures()
        shown = {name: _figure(page, name).inner_text().strip() for name in wanted}
        if shown == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert shown == wanted
    assert wanted["open-disputes"] == "1"
    assert int(wanted["payouts-failed"]) >= 1

    page.get_by_test_id("figure-payouts-failed").click()
    expect(page).to_have_url(re.compile(r"/dashboard/payouts\?status=failed$"))
    expect(page.get_by_test_id("filter-status")).to_contain_text("failed")
    expect(page.get_by_test_id(f"payout-row-{payout.json()['id']}")).to_be_visible()
    expect(page.get_by_test_id("payout-status").first).to_have_text("failed")
    page.go_back()
    page.get_by_test_id("figure-payouts-in-transit").click()
    expect(page).to_have_url(re.compile(r"/dashboard/payouts$"))
    page.go_back()
    page.get_by_test_id("figure-open-disputes").click()
    expect(page).to_have_url(re.compile(r"/dashboard/disputes$"))
    expect(page.get_by_test_id("dispute-status").first).to_be_visible()


def test_overview__updates_live_after_a_new_payment(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    first = create_payment(api, merchant, amount=1000, currency="CHF", card=VISA_OK)
    wait_final(api, merchant, first["id"])
    sign_in(
        page,
        operator_login.email,
        operator_login.password,
        f"/dashboard/overview?merchant={merchant.id}",
    )
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "live")
    expect(_figure(page, "succeeded")).to_have_text("1")
    # A marker that a reload would wipe.
    page.evaluate("window.__notReloaded = true")

    second = create_payment(api, merchant, amount=2000, currency="CHF", card=VISA_OK)
    wait_final(api, merchant, second["id"])

    expect(_figure(page, "succeeded")).to_have_text("2", timeout=15_000)
    expect(_figure(page, "gross")).to_have_text(money_text(page, 3000, "CHF", 2))
    assert page.evaluate("window.__notReloaded") is True


def test_overview__shows_disconnected_and_reconnects_by_itself(
    page: Page, operator_login: OperatorLogin
) -> None:
    # The stream cannot connect at first (as when the network or the admin service is down)...
    watch = "**/admin/overview:watch*"
    page.route(watch, lambda route: route.abort("connectionreset"))
    sign_in(page, operator_login.email, operator_login.password)
    indicator = page.get_by_test_id("live-indicator")
    expect(indicator).to_have_attribute("data-state", "disconnected")
    expect(indicator).to_contain_text("Disconnected")
    page.evaluate("window.__notReloaded = true")

    # ...then it can again: the page reconnects on its own, without a reload.
    page.unroute(watch)
    expect(indicator).to_have_attribute("data-state", "live")
    assert page.evaluate("window.__notReloaded") is True


def test_overview__a_stream_the_server_ends_at_once_is_reopened_with_backoff(
    page: Page, operator_login: OperatorLogin
) -> None:
    opened: list[tuple[str, str]] = []

    def end_at_once(route: Route) -> None:
        opened.append((route.request.url, route.request.headers.get("authorization", "")))
        # A clean, empty end of stream, as a server or a proxy's timeout gives.
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body="")

    page.route("**/admin/overview:watch*", end_at_once)
    sign_in(page, operator_login.email, operator_login.password)
    page.wait_for_timeout(6000)  # not time.sleep: Playwright runs route handlers while it waits
    # Delays of about 1, 2 and 4 s: at most 4 opens in 6 s (the old client looped at once,
    # hundreds of stream-token POSTs and GETs).
    assert 2 <= len(opened) <= 4, len(opened)
    for url, authorization in opened:
        assert "stream_token" not in url and "pmst_" not in url
        assert authorization.startswith("Bearer pmst_")


def _dead_deliveries(api: httpx.Client, login: OperatorLogin, merchant_id: str) -> list[Any]:
    response = api.get(
        "/admin/webhooks/failed", params={"merchant_id": merchant_id}, headers=login.headers
    )
    assert response.status_code == 200, response.text
    return [d for d in response.json()["deliveries"] if d["status"] == "dead"]


def test_webhooks__replay_a_dead_delivery_from_its_button(
    page: Page,
    api: httpx.Client,
    platform: LocalPlatform,
    merchant: MerchantKeys,
    operator_login: OperatorLogin,
) -> None:
    receiver = Receiver()
    with receiver.running():
        receiver.script("/hook", then=Reply(status=500, body=b"down"))
        create_endpoint(api, merchant.secret_key, receiver.url("/hook"))
        with grpc.insecure_channel(platform.settings.target("webhook")) as channel:
            event = publish(
                webhook_internal_pb2_grpc.WebhookInternalServiceStub(channel), merchant.id
            )
        deadline = time.monotonic() + 60
        while not (dead := _dead_deliveries(api, operator_login, merchant.id)):
            assert time.monotonic() < deadline, "the delivery never died"
            time.sleep(0.5)
        delivery = dead[0]
        failed_attempts = len(receiver.received("/hook"))
        receiver.script("/hook", then=Reply(status=200))

        sign_in(page, operator_login.email, operator_login.password)
        page.get_by_role("link", name="Webhooks").click()
        row = page.get_by_test_id(f"delivery-{delivery['id']}")
        expect(row.get_by_test_id("delivery-status")).to_have_text("dead")

        # Bulk replay with no merchant filter asks first, saying how far it reaches.
        bulk: list[str] = []
        page.on(
            "request",
            lambda request: (
                bulk.append(request.url) if "/admin/webhooks/replay" in request.url else None
            ),
        )
        page.get_by_test_id("replay-all").click()
        dialog = page.get_by_role("alertdialog")
        expect(dialog.get_by_test_id("confirm-message")).to_contain_text("across ALL merchants")
        expect(dialog.get_by_test_id("confirm-message")).to_contain_text(
            re.compile(r"Send (\d+|up to 500) dead webhook deliveries")
        )
        dialog.get_by_test_id("confirm-cancel").click()
        expect(dialog).to_have_count(0)
        expect(row.get_by_test_id("delivery-status")).to_have_text("dead")
        assert bulk == []
        row.get_by_test_id("attempts").click()
        expect(page.get_by_test_id("attempt-log").locator("tbody tr")).to_have_count(
            failed_attempts
        )
        row.get_by_test_id("replay").click()

        replayed = receiver.wait_for("/hook", failed_attempts + 1)[-1]
        assert replayed.headers.get("webhook-id") == event.id
        expect(page.get_by_test_id("notice")).to_contain_text(delivery["id"])
        expect(page.get_by_test_id(f"delivery-{delivery['id']}")).to_have_count(0)


def test_merchant_keys__created_key_is_shown_once_and_revocation_locks_it_out(
    page: Page,
    context: BrowserContext,
    api: httpx.Client,
    merchant: MerchantKeys,
    operator_login: OperatorLogin,
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(
        page, operator_login.email, operator_login.password, f"/dashboard/merchants/{merchant.id}"
    )
    page.get_by_test_id("create-key").click()
    key = page.get_by_test_id("new-key-value").inner_text().strip()
    assert key.startswith("sk_test_")
    page.get_by_test_id("copy-key").click()
    expect(page.get_by_test_id("copy-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    assert api.get("/v1/payments", headers={"X-API-Key": key}).status_code == 200

    page.get_by_test_id("key-filter").fill(key[:12])
    row = page.get_by_test_id(re.compile(r"^key-sk_test_"))
    expect(row).to_have_count(1)
    row.get_by_test_id("revoke").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog.get_by_test_id("confirm-message")).to_contain_text(key[:12])
    dialog.get_by_test_id("confirm-ok").click()
    expect(row.get_by_test_id("key-status")).to_contain_text("revoked")

    deadline = time.monotonic() + 15
    while api.get("/v1/payments", headers={"X-API-Key": key}).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.3)
    sign_in(
        page, operator_login.email, operator_login.password, f"/dashboard/merchants/{merchant.id}"
    )
    expect(page.get_by_test_id("keys-table")).to_be_visible()
    assert key not in page.content()


def test_viewer__sees_no_mutating_buttons(
    page: Page,
    api: httpx.Client,
    merchant: MerchantKeys,
    viewer_login: OperatorLogin,
) -> None:
    paid = create_payment(api, merchant, amount=700, currency="EUR", card=VISA_OK)
    wait_final(api, merchant, paid["id"])
    sign_in(page, viewer_login.email, viewer_login.password)
    expect(page.get_by_test_id("role")).to_have_text("viewer")

    checks = {
        f"/dashboard/payments/{paid['id']}": ("detail-status", ["refund-panel", "refund"]),
        "/dashboard/webhooks": ("failed-deliveries", ["replay", "replay-all"]),
        "/dashboard/merchants": ("merchants-table", ["create-merchant"]),
        f"/dashboard/merchants/{merchant.id}": (
            "keys-table",
            ["create-key", "revoke", "save-fees", "invite-user", "invite-email"],
        ),
        "/dashboard/reconciliation": ("recon-start", ["reconcile"]),
    }
    for path, (loaded, hidden) in checks.items():
        sign_in(page, viewer_login.email, viewer_login.password, path)
        expect(page.get_by_test_id(loaded)).to_be_visible()
        for test_id in hidden:
            expect(page.get_by_test_id(test_id)).to_have_count(0)

    # The server refuses a viewer's mutations anyway.
    refused = api.post("/admin/merchants", json={"name": "Nope"}, headers=viewer_login.headers)
    assert refused.status_code == 403


def test_payment_detail__operator_refunds_part_of_a_payment(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    amount = 300
    paid = create_payment(api, merchant, amount=1000, currency="EUR", card=VISA_OK)
    wait_final(api, merchant, paid["id"])
    sign_in(
        page, operator_login.email, operator_login.password, f"/dashboard/payments/{paid['id']}"
    )
    expect(page.get_by_test_id("detail-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("timeline")).to_contain_text("payment.succeeded")
    expect(page.get_by_test_id("ledger-entries").locator("tr.mat-mdc-row")).not_to_have_count(0)

    page.get_by_test_id("refund-amount").fill(f"{amount / 100:.2f}")
    page.get_by_test_id("refund").click()
    expect(page.get_by_test_id("refunds").locator("tr.mat-mdc-row")).to_have_count(1)
    refunded = wait_until_refunded(api, merchant, paid["id"], amount)
    assert refunded == amount


def test_payment_detail__a_full_refund_asks_first_and_sends_no_amount(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    paid = create_payment(api, merchant, amount=1250, currency="KWD", card=VISA_OK)
    wait_final(api, merchant, paid["id"])
    bodies: list[Any] = []
    page.on(
        "request",
        lambda request: (
            bodies.append(request.post_data_json) if request.url.endswith("/refund") else None
        ),
    )
    sign_in(
        page, operator_login.email, operator_login.password, f"/dashboard/payments/{paid['id']}"
    )

    # An empty amount is everything that is left: one click only opens the question.
    page.get_by_test_id("refund").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog.get_by_test_id("confirm-message")).to_contain_text(
        money_text(page, 1250, "KWD", 3)
    )
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    assert bodies == []

    page.get_by_test_id("refund").click()
    page.get_by_role("alertdialog").get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("refunds").locator("tr.mat-mdc-row")).to_have_count(1)
    # No amount at all (the server's "the rest"), never 0.
    assert len(bodies) == 1 and "amount" not in bodies[0], bodies
    assert wait_until_refunded(api, merchant, paid["id"], 1250) == 1250


def test_merchant_fees__an_empty_field_refuses_to_save(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    before = api.get(f"/admin/merchants/{merchant.id}", headers=operator_login.headers).json()
    saves: list[str] = []
    page.on(
        "request",
        lambda request: saves.append(request.url) if request.url.endswith("/fees") else None,
    )
    sign_in(
        page, operator_login.email, operator_login.password, f"/dashboard/merchants/{merchant.id}"
    )
    page.get_by_test_id("fee-bps").fill("")
    page.get_by_test_id("save-fees").click()
    expect(page.get_by_role("alert")).to_contain_text("fee in basis points")
    page.get_by_test_id("fee-bps").fill("150")
    page.get_by_test_id("fee-fixed").fill("")
    page.get_by_test_id("save-fees").click()
    expect(page.get_by_role("alert")).to_contain_text("fixed fee")
    assert saves == []
    after = api.get(f"/admin/merchants/{merchant.id}", headers=operator_login.headers).json()
    assert after.get("fee_bps") == before.get("fee_bps")
    assert after.get("fee_fixed") == before.get("fee_fixed")

    # A real value still saves.
    page.get_by_test_id("fee-fixed").fill("30")
    page.get_by_test_id("save-fees").click()
    expect(page.get_by_test_id("fee-schedule")).to_contain_text("1.5% of each captured amount + 30")
