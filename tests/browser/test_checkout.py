"""The hosted checkout in a real browser: pay, decline and retry, 3-D Secure, double click,
return, phone."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, Request, expect

from tests.browser.support import (
    DECLINED,
    MASTERCARD_OK,
    VISA_OK,
    checkout_path,
    create_payment,
    fill_card,
    get_payment,
    returning_customer,
    wait_final,
)
from tests.conftest import MerchantKeys


def test_checkout__4242_pays_and_returns_to_the_shop(
    page: Page, api: httpx.Client, merchant: MerchantKeys, web: str
) -> None:
    return_url = f"{web}/dashboard/login?shop=return"
    payment = create_payment(
        api, merchant, amount=2500, currency="EUR", return_url=return_url, description="T-shirt"
    )
    page.goto(checkout_path(payment))

    expect(page.get_by_test_id("merchant-name")).to_have_text("Test Merchant")
    expect(page.get_by_test_id("amount")).to_have_text("€25.00")
    expect(page.get_by_test_id("description")).to_have_text("T-shirt")
    fill_card(page, VISA_OK)
    expect(page.get_by_test_id("brand")).to_have_text("Visa")
    page.get_by_test_id("pay").click()

    expect(page.get_by_test_id("success")).to_contain_text("Payment successful")
    page.wait_for_url(re.compile(r"/dashboard/login\?shop=return&payment_id=pay_"))
    assert f"payment_id={payment['id']}" in page.url
    assert "redirect_status=succeeded" in page.url
    assert wait_final(api, merchant, payment["id"])["status"] == "succeeded"


def test_checkout__decline_then_another_card_succeeds(
    page: Page, api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = create_payment(api, merchant, amount=1999, currency="USD")
    page.goto(checkout_path(payment))

    fill_card(page, DECLINED)
    page.get_by_test_id("pay").click()
    decline = page.get_by_test_id("decline")
    expect(decline).to_contain_text("declined")
    expect(decline).to_be_focused()
    assert get_payment(api, merchant, payment["id"])["amount_received"] == 0

    page.get_by_test_id("try-another").click()
    expect(page.get_by_label("Card number")).to_be_focused()
    expect(page.get_by_label("Card number")).to_have_value("")
    fill_card(page, MASTERCARD_OK)
    expect(page.get_by_test_id("brand")).to_have_text("Mastercard")
    page.get_by_test_id("pay").click()

    expect(page.get_by_test_id("success")).to_be_visible()
    final = wait_final(api, merchant, payment["id"])
    assert final["status"] == "succeeded"
    assert final["amount_received"] == 1999
    assert final["card"]["last4"] == "4444"


def test_checkout__3d_secure_challenge_completed_pays(
    page: Page, api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = create_payment(api, merchant, amount=4200, currency="EUR")
    page.goto(checkout_path(payment))
    fill_card(page, "4000 0027 6000 3184")
    page.get_by_test_id("pay").click()

    # The card's bank asks for 3-D Secure: its challenge page, on the hosted checkout.
    expect(page.get_by_test_id("challenge")).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/checkout/{payment['id']}/authenticate\?client_secret="))
    expect(page.get_by_test_id("challenge-amount")).to_contain_text("€42.00")
    assert get_payment(api, merchant, payment["id"])["status"] == "requires_action"
    page.get_by_test_id("complete").click()

    expect(page.get_by_test_id("success")).to_contain_text("Payment successful")
    final = wait_final(api, merchant, payment["id"])
    assert (final["status"], final["amount_received"]) == ("succeeded", 4200)


def test_checkout__3d_secure_challenge_failed_then_another_card_pays(
    page: Page, api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = create_payment(api, merchant, amount=1500, currency="USD")
    page.goto(checkout_path(payment))
    fill_card(page, "4000 0027 6000 3184")
    page.get_by_test_id("pay").click()
    page.get_by_test_id("fail").click()

    # Back on the checkout page, the failure said, nothing charged, another card may follow.
    decline = page.get_by_test_id("decline")
    expect(decline).to_contain_text("could not confirm")
    failed = get_payment(api, merchant, payment["id"])
    assert (failed["status"], failed["failure_code"]) == ("failed", "authentication_failed")
    assert failed["amount_received"] == 0
    page.get_by_test_id("try-another").click()
    fill_card(page, VISA_OK)
    page.get_by_test_id("pay").click()
    expect(page.get_by_test_id("success")).to_be_visible()
    assert wait_final(api, merchant, payment["id"])["status"] == "succeeded"


def test_checkout__a_returning_customer_pays_with_a_saved_card(
    page: Page, api: httpx.Client, merchant: MerchantKeys
) -> None:
    customer, (visa, mastercard) = returning_customer(api, merchant, cards=[VISA_OK, MASTERCARD_OK])
    payment = create_payment(api, merchant, amount=3600, currency="EUR", customer=customer)
    confirms: list[Request] = []
    page.on(
        "request",
        lambda request: confirms.append(request) if request.url.endswith("/confirm") else None,
    )
    page.goto(checkout_path(payment))

    # The saved cards, newest first and chosen, and a new card as the last choice.
    saved = page.get_by_role("group", name="Your saved cards")
    expect(saved.get_by_role("radio")).to_have_count(3)
    newest = page.get_by_role("radio", name="Mastercard ending in 4444, expires 12/34", exact=True)
    expect(newest).to_be_checked()
    expect(
        page.get_by_role("radio", name="Visa ending in 4242, expires 12/34", exact=True)
    ).not_to_be_checked()
    expect(page.get_by_role("radio", name="Use a new card")).not_to_be_checked()
    expect(page.get_by_label("Card number")).to_have_count(0)
    # Choosing the older card and paying confirms with its payment method, no card typed.
    page.get_by_role("radio", name="Visa ending in 4242, expires 12/34", exact=True).check()
    page.get_by_test_id("pay").click()

    expect(page.get_by_test_id("success")).to_contain_text("Payment successful")
    final = wait_final(api, merchant, payment["id"])
    assert (final["status"], final["amount_received"]) == ("succeeded", 3600)
    assert final["payment_method"] == visa and final["card"]["last4"] == "4242"
    assert len(confirms) == 1
    sent = confirms[0].post_data_json
    assert sent is not None and sent["payment_method"] == {"id": visa}
    assert mastercard != visa


def test_checkout__a_returning_customer_may_use_a_new_card_which_is_saved(
    page: Page, api: httpx.Client, merchant: MerchantKeys
) -> None:
    customer, (visa,) = returning_customer(api, merchant, cards=[VISA_OK])
    payment = create_payment(
        api,
        merchant,
        amount=1200,
        currency="USD",
        customer=customer,
        setup_future_usage="on_session",
    )
    page.goto(checkout_path(payment))
    expect(
        page.get_by_role("radio", name="Visa ending in 4242, expires 12/34", exact=True)
    ).to_be_checked()
    page.get_by_role("radio", name="Use a new card").check()
    expect(page.get_by_test_id("save-note")).to_contain_text("will save this card")
    fill_card(page, MASTERCARD_OK)
    page.get_by_test_id("pay").click()

    expect(page.get_by_test_id("success")).to_be_visible()
    final = wait_final(api, merchant, payment["id"])
    assert final["status"] == "succeeded" and final["card"]["last4"] == "4444"
    assert final["payment_method"].startswith("pm_") and final["payment_method"] != visa
    listed = api.get(
        "/v1/payment_methods",
        params={"customer": customer},
        headers={"X-API-Key": merchant.secret_key},
    ).json()["payment_methods"]
    assert [item["id"] for item in listed] == [final["payment_method"], visa]


def test_checkout__double_click_pays_once(
    page: Page, api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = create_payment(api, merchant, amount=4200, currency="GBP")
    confirms: list[Request] = []
    page.on(
        "request",
        lambda request: confirms.append(request) if request.url.endswith("/confirm") else None,
    )
    page.goto(checkout_path(payment))
    fill_card(page, VISA_OK)

    page.get_by_test_id("pay").dblclick()

    expect(page.get_by_test_id("success")).to_be_visible()
    final = wait_final(api, merchant, payment["id"])
    assert final["status"] == "succeeded"
    assert final["amount_received"] == 4200
    assert len(confirms) == 1
    keys = {request.headers.get("idempotency-key") for request in confirms}
    assert None not in keys


def test_checkout__validates_the_card_inline_on_a_phone(
    phone: Page, api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = create_payment(api, merchant, amount=150000, currency="JPY")
    phone.goto(checkout_path(payment))
    expect(phone.get_by_test_id("amount")).to_have_text("¥150,000")

    phone.get_by_test_id("pay").click()
    expect(phone.get_by_text("Enter your card number.")).to_be_visible()
    expect(phone.get_by_label("Card number")).to_be_focused()

    fill_card(phone, "4242424242424241", expiry="01 / 20", cvc="12")
    phone.get_by_label("Card number").blur()
    expect(phone.get_by_text("This card number is not valid.")).to_be_visible()
    expect(phone.get_by_text("This card has expired.")).to_be_visible()
    expect(phone.get_by_text("The security code has 3 digits.")).to_be_visible()

    fill_card(phone, "378282246310005", cvc="123")
    expect(phone.get_by_test_id("brand")).to_have_text("American Express")
    expect(phone.get_by_label("Card number")).to_have_value("3782 822463 10005")
    expect(phone.get_by_text("The security code has 4 digits.")).to_be_visible()
    phone.get_by_test_id("pay").click()
    assert get_payment(api, merchant, payment["id"])["status"] == "requires_payment_method"

    # Nothing is wider than the screen.
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 375


def test_checkout__unknown_secret_shows_a_clear_error(
    page: Page, api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = create_payment(api, merchant, amount=500, currency="EUR")
    page.goto(f"/checkout/{payment['id']}?client_secret=wrong")
    expect(page.get_by_test_id("unavailable")).to_contain_text("not valid")
    expect(page.get_by_test_id("pay")).to_have_count(0)
