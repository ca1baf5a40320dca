"""The merchant dashboard's disputes in a browser: the list, the evidence form, accepting.

Once signed in the tests move by clicking the app's own links: the session lives in the page's
memory only, and a `page.goto` would sign it out.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.browser.support import (
    DISPUTED,
    INQUIRY,
    accept_invite,
    create_payment,
    follow_nav,
    invite_user,
    money_text,
    time_text,
    wait_dispute,
    wait_final,
)
from tests.conftest import MerchantKeys, OperatorLogin


def _disputed(
    api: httpx.Client, merchant: MerchantKeys, card: str, amount: int, currency: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A payment by a dispute card, and its dispute once the network filed it."""
    paid = create_payment(api, merchant, amount=amount, currency=currency, card=card)
    assert wait_final(api, merchant, paid["id"])["status"] == "succeeded"
    return paid, wait_dispute(api, merchant, paid["id"])


def _get(api: httpx.Client, merchant: MerchantKeys, dispute_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/disputes/{dispute_id}", headers={"X-API-Key": merchant.secret_key})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_disputes__evidence_saved_then_submitted_wins_the_chargeback(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    # KWD has 3 decimals: the amount must not be shown as if it had 2.
    paid, dispute = _disputed(api, merchant, DISPUTED, 12_345, "KWD")
    assert dispute["status"] == "needs_response"
    invite = invite_user(api, operator_login, merchant.id, "admin")
    accept_invite(page, invite["accept_url"], secrets.token_urlsafe(12))

    follow_nav(page, "Disputes")
    expect(page).to_have_url(re.compile(r"/merchant/disputes$"))
    row = page.get_by_test_id(f"dispute-row-{dispute['id']}")
    expect(row.get_by_test_id("dispute-amount")).to_have_text(money_text(page, 12_345, "KWD", 3))
    expect(row.get_by_test_id("dispute-reason")).to_have_text("fraudulent")
    expect(row.get_by_test_id("dispute-status")).to_have_text("needs_response")
    due = dispute["evidence_details"]["due_by"]
    expect(row.get_by_test_id("dispute-due")).to_have_text(time_text(page, due))

    # Saved evidence stays on the dispute, which still waits for an answer.
    row.get_by_role("link", name=dispute["id"]).click()
    expect(page).to_have_url(re.compile(rf"/merchant/disputes/{dispute['id']}$"))
    expect(page.get_by_test_id("dispute-payment")).to_have_text(paid["id"])
    page.get_by_label("Customer name").fill("Ada Lovelace")
    page.get_by_label("Customer email address").fill("ada@example.com")
    page.get_by_label("Product description").fill("One blue mug")
    page.get_by_test_id("save-evidence").click()
    expect(page.get_by_test_id("dispute-notice")).to_have_text("Evidence saved.")
    expect(page.get_by_test_id("dispute-evidence-state")).to_have_text("saved, not submitted")
    saved = _get(api, merchant, dispute["id"])
    assert saved["status"] == "needs_response"
    assert saved["evidence"]["customer_name"] == "Ada Lovelace"
    assert saved["evidence"]["product_description"] == "One blue mug"

    # Submitted, the network decides (winning_evidence wins in test mode); the page follows it.
    page.get_by_label("Other evidence").fill("winning_evidence")
    page.get_by_test_id("submit-evidence").click()
    expect(page.get_by_test_id("dispute-notice")).to_have_text(
        "Evidence submitted to the card network."
    )
    expect(page.get_by_test_id("dispute-status")).to_have_text("won", timeout=60_000)
    expect(page.get_by_test_id("dispute-status")).to_have_class(re.compile(r"\bwon\b"))
    expect(page.get_by_test_id("evidence-text-given")).to_have_text("winning_evidence")
    expect(page.get_by_test_id("submit-evidence")).to_have_count(0)
    won = _get(api, merchant, dispute["id"])
    assert won["status"] == "won"
    assert won["evidence"]["uncategorized_text"] == "winning_evidence"
    assert won["evidence"]["customer_email_address"] == "ada@example.com"

    # The payment links back to its dispute, whose status it shows.
    page.get_by_test_id("dispute-payment").click()
    expect(page.get_by_test_id("detail-dispute-status")).to_have_text("won")
    page.get_by_test_id("detail-dispute").click()
    expect(page).to_have_url(re.compile(rf"/merchant/disputes/{dispute['id']}$"))


def test_disputes__accepting_asks_first_and_closes_it(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    _, chargeback = _disputed(api, merchant, DISPUTED, 4_000, "EUR")
    _, inquiry = _disputed(api, merchant, INQUIRY, 2_500, "EUR")
    invite = invite_user(api, operator_login, merchant.id, "admin")
    accept_invite(page, invite["accept_url"], secrets.token_urlsafe(12))
    follow_nav(page, "Disputes")

    # Cancel changes nothing; confirmed, a chargeback is lost.
    page.get_by_role("link", name=chargeback["id"]).click()
    page.get_by_test_id("accept-dispute").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog.get_by_test_id("confirm-message")).to_contain_text(
        money_text(page, 4_000, "EUR", 2)
    )
    dialog.get_by_test_id("confirm-cancel").click()
    expect(page.get_by_role("alertdialog")).to_have_count(0)
    assert _get(api, merchant, chargeback["id"])["status"] == "needs_response"
    page.get_by_test_id("accept-dispute").click()
    page.get_by_role("alertdialog").get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("dispute-status")).to_have_text("lost")
    expect(page.get_by_test_id("accept-dispute")).to_have_count(0)
    assert _get(api, merchant, chargeback["id"])["status"] == "lost"

    # An inquiry accepted is closed as a warning.
    follow_nav(page, "Disputes")
    expect(
        page.get_by_test_id(f"dispute-row-{chargeback['id']}").get_by_test_id("dispute-status")
    ).to_have_text("lost")
    page.get_by_role("link", name=inquiry["id"]).click()
    expect(page.get_by_test_id("dispute-status")).to_have_text("warning_needs_response")
    page.get_by_test_id("accept-dispute").click()
    page.get_by_role("alertdialog").get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("dispute-status")).to_have_text("warning_closed")
    assert _get(api, merchant, inquiry["id"])["status"] == "warning_closed"


def test_disputes__a_viewer_sees_them_but_no_form(
    page: Page, api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    _, dispute = _disputed(api, merchant, DISPUTED, 1_500, "EUR")
    invite = invite_user(api, operator_login, merchant.id, "viewer")
    accept_invite(page, invite["accept_url"], secrets.token_urlsafe(12))
    follow_nav(page, "Disputes")
    page.get_by_role("link", name=dispute["id"]).click()
    expect(page.get_by_test_id("dispute-status")).to_have_text("needs_response")
    expect(page.get_by_test_id("evidence-given")).to_be_visible()
    for hidden in ("save-evidence", "submit-evidence", "accept-dispute"):
        expect(page.get_by_test_id(hidden)).to_have_count(0)
