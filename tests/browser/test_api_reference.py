"""The API reference at /docs/: Redoc, self-hosted, renders the OpenAPI document that the edge
serves at /v1/openapi.json, under the web apps' content security policy."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import ConsoleMessage, Page, Request, expect


def test_the_reference_renders_the_generated_document(page: Page, web: str) -> None:
    served = httpx.get(f"{web}/v1/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json()["openapi"] == "3.1.0"
    assert served.json()["paths"]["/v1/payments"]["post"]["operationId"] == "CreatePayment"

    requested: list[str] = []
    blocked: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            blocked.append(message.text)

    def sent(request: Request) -> None:
        requested.append(request.url)

    page.on("console", note)
    page.on("requestfinished", sent)
    page.goto(f"{web}/docs/")
    expect(page.locator("h1").first).to_contain_text("paymesh API")
    # Each tag lists its first operations and "Show N more..."; the create is among the rest.
    page.get_by_text(re.compile(r"^Show \d+ more")).first.click()
    expect(page.get_by_role("button", name="post /v1/payments", exact=True)).to_be_visible()
    for tag in ("Payments", "Balance", "Webhooks", "Operators"):
        expect(page.get_by_role("heading", name=f"link to {tag} {tag}")).to_be_attached()
    # Nothing is loaded from another origin. Redoc's attribution logo (an <img> on its CDN) is the
    # one thing the policy blocks, and Redoc hides it when it does not load.
    assert [url for url in requested if not url.startswith(web)] == []
    assert [text for text in blocked if "cdn.redoc.ly" not in text] == []
