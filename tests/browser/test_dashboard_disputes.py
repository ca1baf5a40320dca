"""The operators' disputes page in a browser: every merchant's disputes, filtered by payment."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.support import (
    DISPUTED,
    INQUIRY,
    VISA_OK,
    create_payment,
    money_text,
    sign_in,
    time_text,
    wait_dispute,
    wait_final,
    wait_until_refunded,
)
from tests.conftest import MerchantKeys, OperatorLogin


def test_disputes__a_disputed_payment_is_listed_and_links_both_ways(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    # KWD has 3 decimals: the amount must not be shown as if it had 2.
    paid = create_payment(api, merchant, amount=12_345, currency="KWD", card=DISPUTED)
    assert wait_final(api, merchant, paid["id"])["status"] == "succeeded"
    dispute = wait_dispute(api, merchant, paid["id"])
    assert dispute["status"] == "needs_response" and int(dispute["amount"]) == 12_345

    sign_in(page, operator_login.email, operator_login.password)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Disputes").click()
    expect(page).to_have_url(re.compile(r"/dashboard/disputes$"))
    row = page.get_by_test_id(f"dispute-row-{dispute['id']}")
    expect(row.get_by_test_id("dispute-amount")).to_have_text(money_text(page, 12_345, "KWD", 3))
    expect(row.get_by_test_id("dispute-status")).to_have_text("needs_response")
    expect(row.get_by_test_id("dispute-status")).to_have_class(re.compile(r"\bneeds_response\b"))
    expect(row.get_by_test_id("dispute-reason")).to_have_text("fraudulent")
    expect(row).to_contain_text(merchant.id)
    due = dispute["evidence_details"]["due_by"]
    expect(row.get_by_test_id("dispute-due")).to_have_text(time_text(page, due))

    # The payment link opens the payment, which links back to its dispute.
    row.get_by_role("link", name=paid["id"]).click()
    expect(page).to_have_url(re.compile(rf"/dashboard/payments/{paid['id']}$"))
    expect(page.get_by_test_id("detail-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("detail-dispute")).to_have_text(dispute["id"])
    expect(page.get_by_test_id("detail-dispute-status")).to_have_text("needs_response")
    # The server refuses to refund a payment under a chargeback, so the page offers no refund.
    expect(page.get_by_test_id("refund-panel")).to_have_count(0)
    page.get_by_test_id("detail-dispute").click()
    expect(page).to_have_url(re.compile(rf"/dashboard/disputes\?payment={paid['id']}$"))
    expect(page.get_by_test_id("filter-payment-id")).to_have_value(paid["id"])
    expect(page.get_by_test_id("disputes-table").locator("tr.mat-mdc-row")).to_have_count(1)
    expect(page.get_by_test_id(f"dispute-row-{dispute['id']}")).to_be_visible()


def test_disputes__an_inquirys_payment_is_listed_and_can_still_be_refunded(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    paid = create_payment(api, merchant, amount=2_500, currency="EUR", card=INQUIRY)
    assert wait_final(api, merchant, paid["id"])["status"] == "succeeded"
    dispute = wait_dispute(api, merchant, paid["id"])
    assert dispute["status"] == "warning_needs_response" and dispute["is_charge_refundable"]

    sign_in(
        page,
        operator_login.email,
        operator_login.password,
        f"/dashboard/disputes?payment={paid['id']}",
    )
    row = page.get_by_test_id(f"dispute-row-{dispute['id']}")
    expect(row.get_by_test_id("dispute-status")).to_have_text("warning_needs_response")
    expect(row.get_by_test_id("dispute-amount")).to_have_text(money_text(page, 2_500, "EUR", 2))
    row.get_by_role("link", name=paid["id"]).click()
    expect(page.get_by_test_id("detail-dispute-status")).to_have_text("warning_needs_response")
    # An inquiry moves no money: the payment may still be refunded, and the refund goes through.
    page.get_by_test_id("refund-amount").fill("10.00")
    page.get_by_test_id("refund").click()
    expect(page.get_by_test_id("refunds").locator("tr.mat-mdc-row")).to_have_count(1)
    assert wait_until_refunded(api, merchant, paid["id"], 1_000) == 1_000


def test_disputes__the_payment_filter_shows_none_for_an_undisputed_payment(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    paid = create_payment(api, merchant, amount=700, currency="EUR", card=VISA_OK)
    assert wait_final(api, merchant, paid["id"])["status"] == "succeeded"
    sign_in(page, operator_login.email, operator_login.password, "/dashboard/disputes")
    expect(page.get_by_test_id("disputes-table")).to_be_visible()

    page.get_by_test_id("filter-payment-id").fill(paid["id"])
    page.get_by_test_id("search").click()
    expect(page.get_by_test_id("disputes-empty")).to_have_text("No disputes match.")
    expect(page.get_by_test_id("disputes-table").locator("tr.mat-mdc-row")).to_have_count(0)
    # The detail of an undisputed payment names no dispute.
    sign_in(
        page, operator_login.email, operator_login.password, f"/dashboard/payments/{paid['id']}"
    )
    expect(page.get_by_test_id("detail-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("refund-panel")).to_be_visible()
    expect(page.get_by_test_id("detail-dispute")).to_have_count(0)


def test_disputes__an_unknown_payment_id_is_an_error_not_an_empty_list(
    page: Page, operator_login: OperatorLogin
) -> None:
    sign_in(page, operator_login.email, operator_login.password, "/dashboard/disputes")
    page.get_by_test_id("filter-payment-id").fill("pay_doesnotexist")
    page.get_by_test_id("search").click()
    expect(page.get_by_test_id("disputes-error")).to_contain_text("pay_doesnotexist")
    expect(page.get_by_test_id("disputes-empty")).to_have_count(0)
