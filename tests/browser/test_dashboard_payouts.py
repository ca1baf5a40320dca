"""The operators' payouts page in a browser: every merchant's payouts, by merchant and status."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from tests.browser.support import money_text, sign_in, time_text
from tests.conftest import MerchantKeys, OperatorLogin
from tests.integration.test_payouts import (
    NO_ACCOUNT,
    create_payout,
    funded,
    set_payout_settings,
    wait_payout,
)


def _payout(api: httpx.Client, merchant: MerchantKeys, amount: int, final: str) -> dict[str, Any]:
    """A manual USD payout of `amount`, waited for until it is `final`."""
    response = create_payout(api, merchant.secret_key, amount=amount, currency="USD")
    assert response.status_code == 200, response.text
    return wait_payout(api, merchant.secret_key, response.json()["id"], {final})


def _rows(page: Page) -> Locator:
    return page.get_by_test_id("payouts-table").locator("tr.mat-mdc-row")


def _filter(page: Page, *, merchant_id: str, status: str) -> None:
    page.get_by_test_id("filter-merchant").fill(merchant_id)
    page.get_by_test_id("filter-status").click()
    page.get_by_role("option", name=status, exact=True).click()
    page.get_by_test_id("search").click()


def test_payouts__paid_and_failed_are_listed_and_filtered_by_merchant_and_status(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    net = funded(api, merchant)  # bank account 000123456789, which pays
    paid = _payout(api, merchant, 4_000, "paid")
    # The next payout goes to an account the test bank refuses: it fails, the funds come back.
    set_payout_settings(api, merchant.secret_key, bank_account_number=NO_ACCOUNT)
    failed = _payout(api, merchant, net - 4_000, "failed")
    assert failed["failure_code"] == "no_account"

    sign_in(page, operator_login.email, operator_login.password)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Payouts").click()
    expect(page).to_have_url(re.compile(r"/dashboard/payouts$"))
    # Every merchant's, newest first: both of this merchant's are on the first page.
    row = page.get_by_test_id(f"payout-row-{paid['id']}")
    expect(row.get_by_test_id("payout-amount")).to_have_text(money_text(page, 4_000, "USD", 2))
    expect(row.get_by_test_id("payout-status")).to_have_text("paid")
    expect(row.get_by_test_id("payout-status")).to_have_class(re.compile(r"\bpaid\b"))
    expect(row.get_by_test_id("payout-failure")).to_have_count(0)
    expect(row.get_by_test_id("payout-method")).to_have_text("manual")
    expect(row.get_by_test_id("payout-bank")).to_have_text("•••• 6789")
    expect(row).to_contain_text(time_text(page, paid["finish_time"]))
    row = page.get_by_test_id(f"payout-row-{failed['id']}")
    expect(row.get_by_test_id("payout-amount")).to_have_text(
        money_text(page, net - 4_000, "USD", 2)
    )
    expect(row.get_by_test_id("payout-status")).to_have_text("failed")
    expect(row.get_by_test_id("payout-failure")).to_have_text("no_account")
    expect(row.get_by_test_id("payout-bank")).to_have_text("•••• 1116")

    _filter(page, merchant_id=merchant.id, status="failed")
    expect(_rows(page)).to_have_count(1)
    expect(page.get_by_test_id(f"payout-row-{failed['id']}")).to_be_visible()
    _filter(page, merchant_id=merchant.id, status="paid")
    expect(_rows(page)).to_have_count(1)
    expect(page.get_by_test_id(f"payout-row-{paid['id']}")).to_be_visible()
    _filter(page, merchant_id=merchant.id, status="canceled")
    expect(page.get_by_test_id("payouts-empty")).to_have_text("No payouts match.")
    expect(_rows(page)).to_have_count(0)

    # A merchant's page links to its payouts: the list opens filtered by that merchant.
    _filter(page, merchant_id=merchant.id, status="Any")
    expect(_rows(page)).to_have_count(2)
    page.get_by_test_id(f"payout-row-{paid['id']}").get_by_role("link", name=merchant.id).click()
    expect(page).to_have_url(re.compile(rf"/dashboard/merchants/{merchant.id}$"))
    page.get_by_test_id("merchant-payouts").click()
    expect(page).to_have_url(re.compile(rf"/dashboard/payouts\?merchant={merchant.id}$"))
    expect(page.get_by_test_id("filter-merchant")).to_have_value(merchant.id)
    expect(_rows(page)).to_have_count(2)
