"""axe-core scans every page of the web apps in chromium: no serious or critical violation.

axe-core comes from the frontend's own lockfile (frontend/node_modules/axe-core), injected into
each page once it has rendered; the context bypasses the apps' Content-Security-Policy only so
that this test's script can run.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.browser.conftest import DESKTOP, open_context
from tests.browser.support import (
    DECLINED,
    DISPUTED,
    VISA_OK,
    checkout_path,
    create_payment,
    fill_card,
    returning_customer,
    sign_in,
    wait_dispute,
    wait_final,
)
from tests.conftest import MerchantKeys, OperatorLogin
from tests.integration.test_payouts import create_payout, funded
from tests.integration.webhook_receiver import create_endpoint

AXE = Path(__file__).resolve().parents[2] / "frontend" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = {"serious", "critical"}


@pytest.fixture
def scan_context(browser: Browser, web: str) -> Iterator[BrowserContext]:
    """A desktop-sized profile in which the test may inject axe-core."""
    created = open_context(browser, web, viewport=DESKTOP, bypass_csp=True)
    yield created
    created.close()


def _violations(page: Page) -> list[str]:
    """The serious and critical axe-core violations of the page as it is now, one line each."""
    if not page.evaluate("() => 'axe' in window"):
        if not AXE.exists():
            pytest.fail(
                f"{AXE} is missing: `make frontend` installs the frontend's dev dependencies"
            )
        page.add_script_tag(path=str(AXE))
    # Finite animations first (a fading-in error is briefly low-contrast); spinners never end.
    page.evaluate(
        "() => Promise.all(document.getAnimations()"
        ".filter((a) => a.effect?.getComputedTiming().iterations !== Infinity)"
        ".map((a) => a.finished.catch(() => undefined)))"
    )
    results: dict[str, Any] = page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        f"{page.url}: {violation['id']} ({violation['impact']}): {violation['help']} at "
        + ", ".join(str(node["target"]) for node in violation["nodes"][:5])
        for violation in results["violations"]
        if violation["impact"] in BLOCKING
    ]


def _scan(page: Page, ready: Locator, found: list[str]) -> None:
    expect(ready).to_be_visible()
    found.extend(_violations(page))


def test_axe__the_scan_fails_on_a_serious_violation(browser: Browser) -> None:
    # The scan's own check: a nameless button (critical) is reported, content outside any
    # landmark (moderate) is not, so an empty list from the scans below means something.
    page = browser.new_page()
    try:
        page.set_content(
            '<!doctype html><html lang="en"><head><title>Probe</title></head>'
            "<body><p>Outside any landmark.</p><main><button></button></main></body></html>"
        )
        found = _violations(page)
    finally:
        page.close()
    assert [line.split(": ", 1)[1].split(" ", 1)[0] for line in found] == ["button-name"], found


def test_axe__every_dashboard_page_and_the_confirmation_dialog(
    scan_context: BrowserContext,
    api: httpx.Client,
    merchant: MerchantKeys,
    operator_login: OperatorLogin,
) -> None:
    paid = create_payment(api, merchant, amount=990, currency="EUR", card=VISA_OK)
    wait_final(api, merchant, paid["id"])
    disputed = create_payment(api, merchant, amount=990, currency="EUR", card=DISPUTED)
    dispute = wait_dispute(api, merchant, disputed["id"])
    net = funded(api, merchant)
    payout = create_payout(api, merchant.secret_key, amount=net // 2, currency="USD")
    assert payout.status_code == 200, payout.text
    page = scan_context.new_page()
    found: list[str] = []

    page.goto("/dashboard/login")
    _scan(page, page.get_by_test_id("sign-in"), found)
    page.get_by_test_id("sign-in").click()  # the empty form's errors
    _scan(page, page.get_by_text("Enter your email."), found)

    pages = {
        "/dashboard/overview": "figures",
        "/dashboard/payments": "payments-table",
        f"/dashboard/payments/{paid['id']}": "refund-panel",
        "/dashboard/disputes": f"dispute-row-{dispute['id']}",
        "/dashboard/payouts": f"payout-row-{payout.json()['id']}",
        f"/dashboard/payments/{disputed['id']}": "detail-dispute",
        "/dashboard/webhooks": "failed-deliveries",
        "/dashboard/merchants": "merchants-table",
        f"/dashboard/merchants/{merchant.id}": "keys-table",
        "/dashboard/reconciliation": "recon-start",
        "/dashboard/audit": "audit-table",
    }
    for path, ready in pages.items():
        sign_in(page, operator_login.email, operator_login.password, path)
        _scan(page, page.get_by_test_id(ready), found)

    # The one confirmation dialog, open over the page that asked (a full refund, cancelled).
    sign_in(
        page, operator_login.email, operator_login.password, f"/dashboard/payments/{paid['id']}"
    )
    page.get_by_test_id("refund").click()
    _scan(page, page.get_by_role("alertdialog"), found)
    page.keyboard.press("Escape")

    assert found == [], "\n".join(found)


def test_axe__the_checkout_form_its_errors_and_a_decline(
    scan_context: BrowserContext, api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = create_payment(api, merchant, amount=2500, currency="EUR")
    page = scan_context.new_page()
    found: list[str] = []

    page.goto(checkout_path(payment))
    _scan(page, page.get_by_test_id("pay"), found)
    fill_card(page, "4242424242424241", expiry="01 / 20", cvc="1")
    page.get_by_test_id("pay").click()  # inline errors
    _scan(page, page.get_by_test_id("card-number"), found)
    fill_card(page, DECLINED)
    page.get_by_test_id("pay").click()
    _scan(page, page.get_by_test_id("decline"), found)

    page.goto("/checkout/")
    _scan(page, page.get_by_role("heading", name="This checkout link is incomplete"), found)

    assert found == [], "\n".join(found)


def test_axe__the_checkout_with_a_returning_customers_saved_cards(
    scan_context: BrowserContext, api: httpx.Client, merchant: MerchantKeys
) -> None:
    customer, _ = returning_customer(api, merchant, cards=[VISA_OK, "5555555555554444"])
    payment = create_payment(
        api,
        merchant,
        amount=2500,
        currency="EUR",
        customer=customer,
        setup_future_usage="off_session",
    )
    page = scan_context.new_page()
    found: list[str] = []

    page.goto(checkout_path(payment))
    _scan(page, page.get_by_role("group", name="Your saved cards"), found)
    page.get_by_role("radio", name="Use a new card").check()
    _scan(page, page.get_by_test_id("save-note"), found)

    assert found == [], "\n".join(found)


def test_axe__every_merchant_dashboard_page_and_its_dialogs(
    scan_context: BrowserContext,
    api: httpx.Client,
    merchant: MerchantKeys,
    operator_login: OperatorLogin,
) -> None:
    paid = create_payment(api, merchant, amount=990, currency="EUR", card=VISA_OK)
    wait_final(api, merchant, paid["id"])
    disputed = create_payment(api, merchant, amount=990, currency="EUR", card=DISPUTED)
    dispute = wait_dispute(api, merchant, disputed["id"])
    endpoint = create_endpoint(api, merchant.secret_key, "https://example.com/hook")
    invite = api.post(
        f"/admin/merchants/{merchant.id}/invites",
        headers={**operator_login.headers, "Idempotency-Key": secrets.token_hex(8)},
        json={"email": f"axe-{secrets.token_hex(4)}@merchant.test", "role": "admin"},
    )
    assert invite.status_code == 200, invite.text
    accept = urlsplit(invite.json()["accept_url"])
    page = scan_context.new_page()
    found: list[str] = []

    page.goto("/merchant/login")
    _scan(page, page.get_by_test_id("sign-in"), found)
    page.get_by_test_id("sign-in").click()  # the empty form's errors
    _scan(page, page.get_by_text("Enter your email."), found)
    page.goto("/merchant/accept")
    _scan(page, page.get_by_role("heading", name="This invitation link is incomplete"), found)

    page.goto(f"{accept.path}?{accept.query}")
    _scan(page, page.get_by_test_id("accept"), found)
    password = secrets.token_urlsafe(12)
    page.get_by_label("New password").fill(password)
    page.get_by_label("Repeat the password").fill(password)
    page.get_by_test_id("accept").click()
    _scan(page, page.get_by_test_id("balances"), found)

    def go(section: str) -> None:
        page.get_by_role("navigation", name="Sections").get_by_role("link", name=section).click()

    go("Payments")
    _scan(page, page.get_by_test_id(f"payment-row-{paid['id']}"), found)
    page.get_by_role("link", name=paid["id"]).click()
    _scan(page, page.get_by_test_id("refund-panel"), found)
    page.get_by_test_id("refund").click()  # a full refund asks first; cancelled
    _scan(page, page.get_by_role("alertdialog"), found)
    page.keyboard.press("Escape")
    go("Disputes")
    _scan(page, page.get_by_test_id(f"dispute-row-{dispute['id']}"), found)
    page.get_by_role("link", name=dispute["id"]).click()
    _scan(page, page.get_by_test_id("submit-evidence"), found)
    page.get_by_test_id("accept-dispute").click()  # asks first; cancelled
    _scan(page, page.get_by_role("alertdialog"), found)
    page.keyboard.press("Escape")
    go("Balance")
    _scan(page, page.get_by_test_id("balance-entries"), found)
    go("Payouts")
    _scan(page, page.get_by_test_id("payout-settings"), found)
    page.get_by_test_id("payout-amount").fill("1.00")
    page.get_by_test_id("pay-out").click()  # no bank account yet: the API's error
    _scan(page, page.get_by_test_id("payout-error"), found)
    go("Events")
    page.get_by_test_id("show-json").first.click()
    _scan(page, page.get_by_test_id("event-json"), found)
    go("Webhooks")
    _scan(page, page.get_by_test_id("add-endpoint"), found)
    page.get_by_role("link", name=str(endpoint["url"]), exact=True).click()
    _scan(page, page.get_by_test_id("delivery-log"), found)
    page.get_by_test_id("rotate-secret").click()
    _scan(page, page.get_by_role("alertdialog"), found)
    page.get_by_role("alertdialog").get_by_test_id("confirm-ok").click()
    _scan(page, page.get_by_test_id("secret-panel"), found)
    go("API keys")
    page.get_by_test_id("roll").first.click()
    _scan(page, page.get_by_test_id("roll-confirm"), found)
    go("Team")
    _scan(page, page.get_by_test_id("invite"), found)
    page.get_by_test_id("mode-live").click()
    _scan(page, page.get_by_test_id("users-table"), found)

    assert found == [], "\n".join(found)
