"""The demo shop end to end: buy, pay on the hosted checkout, return, verified webhooks."""

from __future__ import annotations

import json
import re
import time

from playwright.sync_api import Page, expect

from services.runtime.platform import LocalPlatform
from tests.browser.support import VISA_OK, fill_card
from tests.conftest import MerchantKeys


def test_demo_shop__buys_through_the_checkout_and_verifies_its_webhooks(
    page: Page, platform: LocalPlatform, merchant: MerchantKeys
) -> None:
    # What `paymesh up` writes for its demo merchant; the shop picks it up and registers its
    # webhook endpoint.
    demo = platform.settings.data_dir.resolve() / "demo.json"
    demo.write_text(json.dumps({"secret_key": merchant.secret_key}))
    shop = f"http://127.0.0.1:{platform.settings.demo_shop_port}"

    # Events are delivered to the endpoints that exist when they happen (as at Stripe), so
    # buy once the shop shows its endpoint: it registers within a couple of seconds.
    deadline = time.monotonic() + 30
    page.goto(shop)
    while not page.get_by_test_id("endpoint").inner_text().startswith("we_"):
        assert time.monotonic() < deadline, "the shop never registered its webhook endpoint"
        page.wait_for_timeout(250)
        page.goto(shop)
    page.get_by_test_id("buy-tshirt").click()
    page.wait_for_url(re.compile(r"/checkout/pay_"))
    expect(page.get_by_test_id("amount")).to_have_text("€25.00")
    fill_card(page, VISA_OK)
    page.get_by_test_id("pay").click()

    page.wait_for_url(re.compile(re.escape(shop) + r"/return\?"))
    expect(page.get_by_test_id("thanks")).to_be_visible()
    expect(page.get_by_test_id("payment-status")).to_have_text("succeeded")

    deadline = time.monotonic() + 30
    while True:
        page.goto(shop)
        verified = page.get_by_test_id("verification").filter(has_text="verified")
        if verified.count() > 0:
            break
        assert time.monotonic() < deadline, "no verified webhook reached the shop"
        time.sleep(0.5)
    expect(page.get_by_test_id("webhooks")).to_contain_text("payment.succeeded")
    expect(page.get_by_test_id("webhooks")).not_to_contain_text("✗")
