"""The merchant dashboard (/merchant/) in a real browser: an invited user's day, and the roles.

The session lives in the page's memory only, so once signed in a test moves by clicking the
app's own links, as a person does; a `page.goto` would sign it out.
"""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import httpx
from playwright.sync_api import BrowserContext, Page, Route, expect
from standardwebhooks.webhooks import Webhook

from tests.browser.support import (
    DISPUTED,
    INQUIRY,
    VISA_OK,
    accept_invite,
    create_payment,
    follow_nav,
    invite_user,
    sign_in,
    wait_dispute,
    wait_final,
)
from tests.conftest import MerchantKeys, OperatorLogin
from tests.integration.webhook_receiver import Receiver, wait_until


def _sign_in(page: Page, email: str, password: str) -> None:
    """Signs in on the merchant dashboard's own page and waits for home."""
    page.goto("/merchant/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/merchant/home$"))


def _session(api: httpx.Client, email: str, password: str) -> dict[str, str]:
    """A merchant user's session headers for checking server state through the edge."""
    response = api.post("/v1/account/sessions", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['session_token']}"}


def _money(page: Page, minor: int, currency: str) -> str:
    """How the browser's Intl formats an amount of a 2-decimal currency, as the app must show it."""
    formatted: str = page.evaluate(
        "([value, currency]) => new Intl.NumberFormat(undefined,"
        " {style: 'currency', currency}).format(value)",
        [f"{minor / 100:.2f}", currency],
    )
    return formatted


def _refunded(api: httpx.Client, merchant: MerchantKeys, payment_id: str, amount: int) -> int:
    def probe() -> int | None:
        response = api.get(f"/v1/payments/{payment_id}", headers={"X-API-Key": merchant.secret_key})
        refunded = int(response.json()["amount_refunded"])
        return refunded if refunded >= amount else None

    return wait_until(probe, timeout_s=30)


def test_invited_admin__accepts_refunds_adds_an_endpoint_sends_a_test_event_and_rolls_a_key(
    page: Page,
    context: BrowserContext,
    api: httpx.Client,
    merchant: MerchantKeys,
    operator_login: OperatorLogin,
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    description = f"Blue mug {secrets.token_hex(3)}"
    paid = create_payment(
        api, merchant, amount=1250, currency="EUR", card=VISA_OK, description=description
    )
    assert wait_final(api, merchant, paid["id"])["status"] == "succeeded"
    # Its funds become available after the test-mode settlement delay (seconds): wait, so the
    # balance the home page shows below cannot move between the page and the API's answer.
    deadline = time.monotonic() + 60
    while any(
        b["pending"]
        for b in api.get("/v1/balance", headers={"X-API-Key": merchant.secret_key}).json()[
            "available"
        ]
    ):
        assert time.monotonic() < deadline, "the funds never became available"
        time.sleep(0.2)

    # The operator invites from the operators' dashboard; the link is shown once.
    sign_in(
        page, operator_login.email, operator_login.password, f"/dashboard/merchants/{merchant.id}"
    )
    email = f"owner-{secrets.token_hex(4)}@merchant.test"
    page.get_by_test_id("invite-email").fill(email)
    page.get_by_test_id("invite-user").click()
    link = page.get_by_test_id("invite-link").inner_text().strip()
    expect(page.get_by_test_id(f"invite-{email}")).to_contain_text("admin")

    # The person accepts in the browser and is signed in, in test mode.
    password = secrets.token_urlsafe(12)
    accept_invite(page, link, password)
    expect(page.get_by_test_id("role")).to_have_text("admin")
    expect(page.get_by_test_id("user")).to_contain_text(email)
    expect(page.get_by_test_id("test-banner")).to_be_visible()
    assert page.evaluate("() => [sessionStorage.length, localStorage.length, document.cookie]") == [
        0,
        0,
        "",
    ]
    # Home: the balance the ledger holds, and today's volume of the one payment.
    balance = api.get("/v1/balance", headers={"X-API-Key": merchant.secret_key}).json()
    [eur] = [b for b in balance["available"] if b["currency"] == "EUR"]
    expect(page.get_by_test_id("balance-EUR")).to_contain_text(
        _money(page, int(eur["available"]), "EUR")
    )
    expect(page.get_by_test_id("today-EUR")).to_contain_text(_money(page, 1250, "EUR"))
    expect(page.get_by_test_id("today-EUR")).to_contain_text("1 succeeded of 1 payments")
    # The Balance page: available and pending (none left: the funds were released above).
    follow_nav(page, "Balance")
    expect(page.get_by_test_id("balance-summary")).to_contain_text(
        f"{_money(page, int(eur['available']), 'EUR')} available · {_money(page, 0, 'EUR')} pending"
    )
    users = api.get(f"/admin/merchants/{merchant.id}/users", headers=operator_login.headers)
    assert [u["role"] for u in users.json()["users"] if u["email"] == email] == ["admin"]
    assert all(i["email"] != email for i in users.json().get("invites", []))

    # A second use of the link is refused: it worked once.
    token = parse_qs(urlsplit(link).query)["token"][0]
    reused = api.post(
        "/v1/account/invites/accept", json={"token": token, "password": "another-password"}
    )
    assert reused.status_code in (400, 404), reused.text

    # Finds the payment by searching, and refunds part of it. The first answer is lost on the
    # way back (the server made the refund); the retry sends the same Idempotency-Key.
    follow_nav(page, "Payments")
    page.get_by_test_id("search-query").fill(description)
    page.get_by_test_id("search").click()
    row = page.get_by_test_id(f"payment-row-{paid['id']}")
    expect(row).to_be_visible()
    row.get_by_role("link", name=paid["id"]).click()
    expect(page.get_by_test_id("detail-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("timeline")).to_contain_text("payment.succeeded")
    expect(page.get_by_test_id("timeline").locator('[data-kind="ledger"]')).not_to_have_count(0)

    keys: list[str] = []

    def lose_first_answer(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key", ""))
        response = route.fetch()
        if len(keys) == 1:
            assert response.status == 200, response.text()
            route.abort("connectionreset")
        else:
            route.fulfill(response=response)

    page.route("**/v1/refunds", lose_first_answer)
    page.get_by_test_id("refund-amount").fill("5.00")
    page.get_by_test_id("refund").click()
    expect(page.get_by_role("alert")).to_be_visible()
    page.get_by_test_id("refund").click()
    expect(page.get_by_test_id("refund-notice")).to_contain_text("Refund re_")
    page.unroute("**/v1/refunds")
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys
    refunds = api.get(
        "/v1/refunds",
        params={"payment_id": paid["id"]},
        headers={"X-API-Key": merchant.secret_key},
    ).json()["refunds"]
    assert [int(r["amount"]) for r in refunds] == [500]
    assert _refunded(api, merchant, paid["id"], 500) == 500
    expect(page.get_by_test_id("refunds").locator("tr.mat-mdc-row")).to_have_count(1)

    receiver = Receiver()
    with receiver.running():
        # Adds an endpoint for two event types picked from the catalog; its secret is shown once.
        follow_nav(page, "Webhooks")
        page.get_by_test_id("endpoint-url").fill(receiver.url("/hook"))
        page.get_by_test_id("endpoint-events").click()
        page.get_by_role("option", name="payment.succeeded").click()
        page.get_by_role("option", name="refund.succeeded").click()
        page.keyboard.press("Escape")
        page.get_by_test_id("add-endpoint").click()
        secret = page.get_by_test_id("secret-value").inner_text().strip()
        assert secret.startswith("whsec_"), secret
        endpoints = api.get(
            "/v1/webhook_endpoints", headers={"X-API-Key": merchant.secret_key}
        ).json()["webhook_endpoints"]
        assert [(e["url"], sorted(e["enabled_events"])) for e in endpoints] == [
            (receiver.url("/hook"), ["payment.succeeded", "refund.succeeded"])
        ]
        endpoint_id = endpoints[0]["id"]
        page.get_by_test_id("open-new-endpoint").click()
        expect(page.get_by_test_id("endpoint-status")).to_have_text("enabled")

        # Sends a test event of a type it did not subscribe to: signed with the secret shown,
        # and its delivery appears in the log by itself, with the attempt's outcome.
        page.get_by_test_id("test-event-type").click()
        page.get_by_role("option", name="payment.failed").click()
        page.get_by_test_id("send-test-event").click()
        expect(page.get_by_test_id("notice")).to_contain_text("Test payment.failed event evt_")
        [tested] = receiver.wait_for("/hook", 1, timeout_s=60)
        payload = Webhook(secret).verify(tested.body, tested.headers)
        assert payload["type"] == "payment.failed" and payload["livemode"] is False
        test_row = page.get_by_test_id("delivery-log").locator(
            'tr[data-event-type="payment.failed"]'
        )
        page.get_by_test_id("refresh-deliveries").click()  # in case it outlasted the follow
        expect(test_row.get_by_test_id("delivery-status")).to_have_text("delivered")
        expect(page.get_by_test_id("attempt").get_by_test_id("attempt-status")).to_have_text("200")
        logged = api.get(
            f"/v1/webhook_endpoints/{endpoint_id}/deliveries",
            headers={"X-API-Key": merchant.secret_key},
        ).json()["deliveries"]
        assert [(d["event_type"], d["status"]) for d in logged] == [("payment.failed", "delivered")]

        # A new refund's event reaches the endpoint and shows in its delivery log, with the
        # attempt's status, latency and the receiver's body.
        page.get_by_role("link", name="← Webhooks").click()
        follow_nav(page, "Payments")
        page.get_by_test_id(f"payment-row-{paid['id']}").get_by_role("link").first.click()
        page.get_by_test_id("refund-amount").fill("1.00")
        page.get_by_test_id("refund").click()
        expect(page.get_by_test_id("refund-notice")).to_contain_text("Refund re_")
        delivered = receiver.wait_for("/hook", 2, timeout_s=60)[1]
        assert Webhook(secret).verify(delivered.body, delivered.headers)["type"] == (
            "refund.succeeded"
        )
        follow_nav(page, "Webhooks")
        page.get_by_test_id(f"endpoint-{endpoint_id}").get_by_role("link").click()
        log = page.get_by_test_id("delivery-log")
        row = log.locator('tr[data-event-type="refund.succeeded"]')
        page.get_by_test_id("refresh-deliveries").click()
        expect(row.get_by_test_id("delivery-status")).to_have_text("delivered")
        row.get_by_test_id("attempts").click()
        attempt = page.get_by_test_id("attempt")
        expect(attempt.get_by_test_id("attempt-status")).to_have_text("200")
        expect(attempt.get_by_test_id("attempt-latency")).to_have_text(re.compile(r"^\d+ ms$"))
        expect(attempt.get_by_test_id("attempt-body")).to_have_text("ok")

        # Replays it: the same event (webhook-id) reaches the receiver again.
        row.get_by_test_id("replay").click()
        expect(page.get_by_test_id("notice")).to_contain_text("replayed")
        replayed = receiver.wait_for("/hook", 3, timeout_s=60)[2]
        assert replayed.headers.get("webhook-id") == delivered.headers.get("webhook-id")
        expect(attempt).to_have_count(2)

        # The event's own page shows its JSON, as the API answers it.
        row.get_by_role("link", name=re.compile(r"^evt_")).click()
        expect(page.get_by_test_id("event-json")).to_contain_text(paid["id"])
        expect(page.get_by_test_id("event-json")).to_contain_text('"type": "refund.succeeded"')
        follow_nav(page, "Events")  # the same page without ?id=: the list of them all
        expect(page.get_by_test_id("event-json")).to_have_count(0)
        expect(page.get_by_test_id("events-table").locator("tbody tr")).not_to_have_count(1)

    # Rolls the test secret key, the old one working for a day more; the new one shown once.
    follow_nav(page, "API keys")
    old_prefix = merchant.secret_key[:12]
    old_row = page.locator(f'tr[data-prefix^="{old_prefix}"]')
    old_row.get_by_test_id("roll").click()
    page.get_by_test_id("roll-window").click()
    page.get_by_role("option", name="24 hours").click()
    page.get_by_test_id("roll-confirm").click()
    new_key = page.get_by_test_id("secret-value").inner_text().strip()
    assert new_key.startswith("sk_test_") and new_key != merchant.secret_key
    page.get_by_test_id("copy-secret").click()
    expect(page.get_by_test_id("copy-secret")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == new_key
    expect(old_row.get_by_test_id("key-status")).to_contain_text("expires")
    assert api.get("/v1/payments", headers={"X-API-Key": new_key}).status_code == 200
    assert api.get("/v1/payments", headers={"X-API-Key": merchant.secret_key}).status_code == 200
    listed = api.get("/v1/account/api_keys", headers=_session(api, email, password)).json()[
        "api_keys"
    ]
    rolled = [k for k in listed if merchant.secret_key.startswith(k["prefix"])]
    assert len(rolled) == 1 and rolled[0].get("expire_time"), listed
    page.get_by_test_id("secret-done").click()
    expect(page.get_by_test_id("secret-panel")).to_have_count(0)
    follow_nav(page, "Home")
    follow_nav(page, "API keys")
    expect(page.get_by_test_id("keys-table")).to_contain_text(new_key[:12])
    assert new_key not in page.content()


def test_viewer__sees_no_write_controls_and_the_server_refuses_them(
    page: Page,
    api: httpx.Client,
    merchant: MerchantKeys,
    operator_login: OperatorLogin,
) -> None:
    paid = create_payment(api, merchant, amount=700, currency="EUR", card=VISA_OK)
    assert wait_final(api, merchant, paid["id"])["status"] == "succeeded"
    endpoint = api.post(
        "/v1/webhook_endpoints",
        headers={"X-API-Key": merchant.secret_key, "Idempotency-Key": secrets.token_hex(8)},
        json={"url": "https://example.com/hook", "enabled_events": ["*"]},
    ).json()
    invite = invite_user(api, operator_login, merchant.id, "viewer")
    password = secrets.token_urlsafe(12)
    accept_invite(page, invite["accept_url"], password)
    expect(page.get_by_test_id("role")).to_have_text("viewer")

    checks: list[tuple[str, str | None, str, list[str]]] = [
        ("Payments", paid["id"], "detail-status", ["refund-panel", "refund"]),
        ("Webhooks", None, "endpoints-table", ["add-endpoint", "endpoint-url"]),
        (
            "Webhooks",
            endpoint["url"],
            "delivery-log",
            [
                "edit-endpoint",
                "disable-endpoint",
                "rotate-secret",
                "send-test-event",
                "replay-since",
                "replay",
            ],
        ),
        ("API keys", None, "keys-table", ["create-key", "roll", "revoke"]),
        ("Team", None, "users-table", ["invite", "invite-email", "remove-user"]),
    ]
    for section, link, loaded, hidden in checks:
        follow_nav(page, section)
        if link:
            page.get_by_role("link", name=link, exact=True).click()
        expect(page.get_by_test_id(loaded)).to_be_visible()
        for test_id in hidden:
            expect(page.get_by_test_id(test_id)).to_have_count(0)
    # The team page shows roles as text to a viewer, not as a control.
    expect(page.locator("mat-select")).to_have_count(0)

    # The server refuses a viewer's writes anyway.
    headers = {**_session(api, invite["email"], password), "Idempotency-Key": secrets.token_hex(8)}
    refund = api.post("/v1/refunds", headers=headers, json={"payment_id": paid["id"]})
    assert refund.status_code == 403, refund.text
    key = api.post("/v1/account/api_keys", headers=headers, json={"mode": "test", "kind": "secret"})
    assert key.status_code == 403, key.text


def test_payment_detail__a_chargeback_hides_the_refund_and_an_inquiry_keeps_it(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    chargeback = create_payment(api, merchant, amount=3_000, currency="EUR", card=DISPUTED)
    inquiry = create_payment(api, merchant, amount=2_500, currency="EUR", card=INQUIRY)
    for paid in (chargeback, inquiry):
        assert wait_final(api, merchant, paid["id"])["status"] == "succeeded"
    charged = wait_dispute(api, merchant, chargeback["id"])
    asked = wait_dispute(api, merchant, inquiry["id"])
    assert charged["status"] == "needs_response" and not charged["is_charge_refundable"]
    assert asked["status"] == "warning_needs_response" and asked["is_charge_refundable"]
    invite = invite_user(api, operator_login, merchant.id, "admin")
    accept_invite(page, invite["accept_url"], secrets.token_urlsafe(12))

    # A chargeback: the server would answer charge_disputed, so the page offers no refund.
    follow_nav(page, "Payments")
    # Amounts line up on the right (the shared styles' `.num`).
    expect(page.get_by_test_id("payments-table").locator("td.num").first).to_have_css(
        "text-align", "right"
    )
    page.get_by_role("link", name=chargeback["id"]).click()
    expect(page.get_by_test_id("detail-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("detail-dispute")).to_have_text(charged["id"])
    expect(page.get_by_test_id("detail-dispute-status")).to_have_text("needs_response")
    expect(page.get_by_test_id("refund-panel")).to_have_count(0)
    refused = api.post(
        "/v1/refunds",
        headers={"X-API-Key": merchant.secret_key, "Idempotency-Key": secrets.token_hex(8)},
        json={"payment_id": chargeback["id"]},
    )
    assert refused.status_code == 400 and "charge_disputed" in refused.text, refused.text

    # An inquiry moves no money: its payment keeps the refund form, and the refund goes through.
    follow_nav(page, "Payments")
    page.get_by_role("link", name=inquiry["id"]).click()
    expect(page.get_by_test_id("detail-dispute")).to_have_text(asked["id"])
    expect(page.get_by_test_id("detail-dispute-status")).to_have_text("warning_needs_response")
    page.get_by_test_id("refund-amount").fill("10.00")
    page.get_by_test_id("refund").click()
    expect(page.get_by_test_id("refund-notice")).to_contain_text("Refund re_")
    expect(page.get_by_test_id("refunds").locator("tr.mat-mdc-row")).to_have_count(1)
    assert _refunded(api, merchant, inquiry["id"], 1_000) == 1_000


def test_developer__manages_keys_and_webhooks_but_neither_refunds_nor_the_team(
    page: Page,
    api: httpx.Client,
    merchant: MerchantKeys,
    operator_login: OperatorLogin,
) -> None:
    paid = create_payment(api, merchant, amount=900, currency="EUR", card=VISA_OK)
    assert wait_final(api, merchant, paid["id"])["status"] == "succeeded"
    invite = invite_user(api, operator_login, merchant.id, "developer")
    password = secrets.token_urlsafe(12)
    accept_invite(page, invite["accept_url"], password)
    expect(page.get_by_test_id("role")).to_have_text("developer")

    endpoint = api.post(
        "/v1/webhook_endpoints",
        headers={"X-API-Key": merchant.secret_key, "Idempotency-Key": secrets.token_hex(8)},
        json={"url": "https://example.com/dev-hook", "enabled_events": ["*"]},
    ).json()
    headers = {"X-API-Key": merchant.secret_key}

    # Edits the endpoint's event types, disables it and rotates its secret (shown once).
    follow_nav(page, "Webhooks")
    expect(page.get_by_test_id("add-endpoint")).to_be_visible()
    page.get_by_role("link", name=endpoint["url"], exact=True).click()
    expect(page.get_by_test_id("send-test-event")).to_be_visible()
    page.get_by_test_id("edit-endpoint").click()
    page.get_by_test_id("edit-events").click()
    page.get_by_role("option", name="All events (*)").click()  # off
    page.get_by_role("option", name="payment.failed").click()
    page.keyboard.press("Escape")
    page.get_by_test_id("save-endpoint").click()
    expect(page.get_by_test_id("endpoint-events-list")).to_have_text("payment.failed")
    stored = api.get(f"/v1/webhook_endpoints/{endpoint['id']}", headers=headers).json()
    assert stored["enabled_events"] == ["payment.failed"]
    page.get_by_test_id("disable-endpoint").click()
    page.get_by_role("alertdialog").get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("endpoint-status")).to_have_text("disabled")
    expect(page.get_by_test_id("send-test-event")).to_have_count(0)
    stored = api.get(f"/v1/webhook_endpoints/{endpoint['id']}", headers=headers).json()
    assert stored["status"] == "disabled"
    page.get_by_test_id("rotate-secret").click()
    page.get_by_role("alertdialog").get_by_test_id("confirm-ok").click()
    secret = page.get_by_test_id("secret-value").inner_text().strip()
    assert secret.startswith("whsec_") and secret != endpoint["secret"]

    follow_nav(page, "API keys")
    expect(page.get_by_test_id("create-key")).to_be_visible()
    follow_nav(page, "Payments")
    page.get_by_role("link", name=paid["id"]).click()
    expect(page.get_by_test_id("detail-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("refund-panel")).to_have_count(0)
    follow_nav(page, "Team")
    expect(page.get_by_test_id("users-table")).to_contain_text(invite["email"])
    expect(page.get_by_test_id("invite")).to_have_count(0)


def test_sign_in__wrong_password_is_refused_and_a_reload_asks_again(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    invite = invite_user(api, operator_login, merchant.id, "admin")
    password = secrets.token_urlsafe(12)
    accepted = api.post(
        "/v1/account/invites/accept", json={"token": invite["token"], "password": password}
    )
    assert accepted.status_code == 200, accepted.text

    page.goto("/merchant/")
    expect(page).to_have_url(re.compile(r"/merchant/login"))
    page.get_by_label("Email").fill(invite["email"])
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong email or password.")

    tokens: list[str] = []
    page.on(
        "request",
        lambda request: (
            tokens.append(request.headers["authorization"])
            if "authorization" in request.headers
            else None
        ),
    )
    _sign_in(page, invite["email"], password)
    follow_nav(page, "Events")
    expect(page).to_have_url(re.compile(r"/merchant/events$"))
    page.reload()
    expect(page).to_have_url(re.compile(r"/merchant/login\?next=%2Fevents"))

    # Signing out ends the session on the server too.
    _sign_in(page, invite["email"], password)
    token = tokens[-1]
    assert api.get("/v1/account", headers={"Authorization": token}).status_code == 200
    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(re.compile(r"/merchant/login$"))
    assert api.get("/v1/account", headers={"Authorization": token}).status_code == 401


def test_mode_switch__live_mode_shows_live_objects_only(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    paid = create_payment(api, merchant, amount=400, currency="EUR", card=VISA_OK)
    wait_final(api, merchant, paid["id"])
    invite = invite_user(api, operator_login, merchant.id, "admin")
    accept_invite(page, invite["accept_url"], secrets.token_urlsafe(12))
    modes: list[str] = []
    page.on(
        "request",
        lambda request: (
            modes.append(request.headers.get("paymesh-mode", ""))
            if "/v1/payments" in request.url
            else None
        ),
    )
    follow_nav(page, "Payments")
    page.get_by_role("link", name=paid["id"]).click()
    expect(page.get_by_test_id("detail-status")).to_have_text("succeeded")
    # A test payment has no live twin: the switch goes back to the (live) list.
    page.get_by_test_id("mode-live").click()
    expect(page).to_have_url(re.compile(r"/merchant/payments$"))
    expect(page.get_by_test_id("test-banner")).to_have_count(0)
    expect(page.get_by_text("No payments match.")).to_be_visible()
    expect(page.get_by_test_id(f"payment-row-{paid['id']}")).to_have_count(0)
    assert modes[0] == "test" and modes[-1] == "live", modes
