"""The merchant dashboard's payouts in a browser: balance, settings, paying out, the outcomes.

Once signed in the tests move by clicking the app's own links: the session lives in the page's
memory only, and a `page.goto` would sign it out.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from tests.browser.support import (
    VISA_OK,
    accept_invite,
    create_payment,
    follow_nav,
    invite_user,
    money_text,
    wait_final,
)
from tests.conftest import MerchantKeys, OperatorLogin
from tests.integration.test_payouts import (
    NO_ACCOUNT,
    PAYS,
    balance,
    set_payout_settings,
    wait_available,
    wait_payout,
)


def _payouts(api: httpx.Client, merchant: MerchantKeys) -> list[dict[str, Any]]:
    response = api.get("/v1/payouts", headers={"X-API-Key": merchant.secret_key})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json().get("payouts", [])
    return found


def _pay_out(page: Page, amount: str) -> None:
    page.get_by_test_id("payout-amount").fill(amount)
    page.get_by_test_id("pay-out").click()


def _row(page: Page, payout_id: str) -> Locator:
    return page.get_by_test_id(f"payout-row-{payout_id}")


def test_payouts__bank_account_set_on_the_page_is_paid_and_a_failing_one_fails(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    # Funds available at once (no settlement delay), and no bank account yet.
    set_payout_settings(api, merchant.secret_key, settlement_delay_s=0)
    paid = create_payment(api, merchant, amount=10_000, currency="USD", card=VISA_OK)
    paid = wait_final(api, merchant, paid["id"])
    assert paid["status"] == "succeeded"
    net = int(paid["amount_received"]) - int(paid["fee"])
    wait_available(api, merchant.secret_key, "USD", net)
    invite = invite_user(api, operator_login, merchant.id, "admin")
    accept_invite(page, invite["accept_url"], secrets.token_urlsafe(12))

    follow_nav(page, "Payouts")
    expect(page).to_have_url(re.compile(r"/merchant/payouts$"))
    usd = page.get_by_test_id("balance-USD")
    expect(usd.get_by_test_id("available")).to_have_text(money_text(page, net, "USD", 2))
    expect(usd.get_by_test_id("pending")).to_have_text(money_text(page, 0, "USD", 2))
    # Amounts line up on the right (the shared styles' `.num`).
    expect(usd.get_by_test_id("available")).to_have_css("text-align", "right")
    expect(page.get_by_test_id("settings-bank")).to_have_text("None yet")
    expect(page.get_by_test_id("settings-schedule")).to_have_text("manual")
    expect(page.get_by_test_id("payouts-empty")).to_be_visible()

    # Without a bank account the API refuses, and the page says why.
    _pay_out(page, "10.00")
    expect(page.get_by_test_id("payout-error")).to_contain_text("no_bank_account")
    assert _payouts(api, merchant) == []

    # The bank account, typed in full, is shown back as its last four digits only.
    page.get_by_test_id("settings-account").fill(PAYS)
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-notice")).to_have_text("Payout settings saved.")
    expect(page.get_by_test_id("settings-bank")).to_have_text("•••• 6789")
    assert PAYS not in page.content()
    settings = api.get(
        "/v1/account/payout_settings", headers={"X-API-Key": merchant.secret_key}
    ).json()
    assert settings["bank_account_last4"] == "6789"

    # More than is available is refused.
    _pay_out(page, f"{(net + 1) / 100:.2f}")
    expect(page.get_by_test_id("payout-error")).to_contain_text("insufficient_available_balance")
    assert _payouts(api, merchant) == []

    # 40.00 goes to the bank and is paid; the balance shows what is left.
    _pay_out(page, "40.00")
    expect(page.get_by_test_id("payout-notice")).to_contain_text(money_text(page, 4_000, "USD", 2))
    [first] = _payouts(api, merchant)
    row = _row(page, first["id"])
    expect(row.get_by_test_id("payout-row-amount")).to_have_text(money_text(page, 4_000, "USD", 2))
    expect(row.get_by_test_id("payout-row-amount")).to_have_css("text-align", "right")
    expect(row.get_by_test_id("payout-bank")).to_have_text("•••• 6789")
    expect(row.get_by_test_id("payout-status")).to_have_text("paid", timeout=60_000)
    expect(row.get_by_test_id("payout-status")).to_have_class(re.compile(r"\bpaid\b"))
    expect(row.get_by_test_id("payout-failure")).to_have_count(0)
    assert wait_payout(api, merchant.secret_key, first["id"], {"paid"})["status"] == "paid"
    expect(usd.get_by_test_id("available")).to_have_text(money_text(page, net - 4_000, "USD", 2))

    # The test bank refuses account 000111111116: the payout fails with no_account and the
    # amount comes back to the available balance.
    page.get_by_test_id("settings-account").fill(NO_ACCOUNT)
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-bank")).to_have_text("•••• 1116")
    _pay_out(page, "25.00")
    expect(page.get_by_test_id("payout-notice")).to_contain_text(money_text(page, 2_500, "USD", 2))
    second = next(p for p in _payouts(api, merchant) if p["id"] != first["id"])
    row = _row(page, second["id"])
    expect(row.get_by_test_id("payout-status")).to_have_text("failed", timeout=60_000)
    expect(row.get_by_test_id("payout-failure")).to_have_text("no_account")
    expect(row.get_by_test_id("payout-bank")).to_have_text("•••• 1116")
    failed = wait_payout(api, merchant.secret_key, second["id"], {"failed"})
    assert failed["failure_code"] == "no_account"
    expect(usd.get_by_test_id("available")).to_have_text(money_text(page, net - 4_000, "USD", 2))
    assert balance(api, merchant.secret_key)["USD"] == (net - 4_000, 0)


def test_payouts__the_schedule_is_saved_and_a_viewer_sees_no_forms(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    admin = invite_user(api, operator_login, merchant.id, "admin")
    accept_invite(page, admin["accept_url"], secrets.token_urlsafe(12))
    follow_nav(page, "Payouts")
    expect(page.get_by_test_id("no-balance")).to_be_visible()
    page.get_by_test_id("settings-schedule-select").click()
    page.get_by_role("option", name="automatic", exact=True).click()
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-schedule")).to_have_text("automatic")
    settings = api.get(
        "/v1/account/payout_settings", headers={"X-API-Key": merchant.secret_key}
    ).json()
    assert settings["schedule"] == "automatic"

    page.get_by_test_id("sign-out").click()
    viewer = invite_user(api, operator_login, merchant.id, "viewer")
    accept_invite(page, viewer["accept_url"], secrets.token_urlsafe(12))
    follow_nav(page, "Payouts")
    expect(page.get_by_test_id("settings-schedule")).to_have_text("automatic")
    for hidden in ("payout-panel", "pay-out", "settings-account", "save-settings"):
        expect(page.get_by_test_id(hidden)).to_have_count(0)
