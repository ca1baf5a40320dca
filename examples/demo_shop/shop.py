"""A tiny merchant shop showing paymesh end to end: pay on the hosted checkout, get webhooks.

`make up` runs it on http://localhost:8090 (`PAYMESH_DEMO_SHOP_PORT`). It uses the demo
merchant's secret key (from `.paymesh/demo.json`, or `PAYMESH_DEMO_SECRET_KEY`) on the server
side only: "Buy" creates a payment and sends the browser to its `checkout_url`; the checkout
sends the customer back to `/return`, where the shop asks paymesh for the payment's real status
(a redirect proves nothing). At start it registers `/webhooks` as a webhook endpoint, keeps the
signing secret (shown once) in `.paymesh/demo_shop.json`, and lists every webhook it receives
with the result of verifying its Standard Webhooks signature.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from babel.numbers import format_currency
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.common.logs import configure_logging
from services.common.money import minor_unit_exponent
from services.common.settings import Settings

logger = logging.getLogger("demo_shop")

# The shop's catalogue: amounts in minor units, in three currencies with different exponents.
PRODUCTS: dict[str, tuple[str, int, str]] = {
    "tshirt": ("paymesh T-shirt", 2500, "EUR"),
    "beans": ("Single-origin coffee beans, 1 kg", 3200, "JPY"),
    "stickers": ("Sticker pack", 15000, "INR"),
}
# The most webhooks and orders the page remembers (in memory: it is a demo).
RECENT_MAX = 50
# How long to wait between attempts to register the webhook endpoint while paymesh starts.
REGISTER_RETRY_S = 2.0
API_TIMEOUT_S = 10.0
BODY_MAX_BYTES = 1_048_576


@dataclass(frozen=True)
class ReceivedWebhook:
    """One webhook as the shop received it."""

    received: float
    webhook_id: str
    event_type: str
    object_id: str
    verified: bool
    detail: str


class Shop:
    """The shop's state: credentials, its webhook endpoint, what it received."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api = f"http://127.0.0.1:{settings.http_port}"
        self.data_dir = settings.data_dir.resolve()
        self.webhooks: deque[ReceivedWebhook] = deque(maxlen=RECENT_MAX)
        self.orders: deque[dict[str, str]] = deque(maxlen=RECENT_MAX)
        self.lock = threading.Lock()
        self.verifier: Webhook | None = None
        self.endpoint_id = ""

    def secret_key(self) -> str | None:
        """The demo merchant's secret key, once `paymesh up` has created it."""
        explicit = os.environ.get("PAYMESH_DEMO_SECRET_KEY")
        if explicit:
            return explicit
        demo = self.data_dir / "demo.json"
        if not demo.exists():
            return None
        key: str | None = json.loads(demo.read_text()).get("secret_key")
        return key

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Calls the paymesh API with the secret key."""
        key = self.secret_key()
        if key is None:
            raise RuntimeError("the demo merchant does not exist yet")
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return httpx.request(
            method, self.api + path, headers=headers, timeout=API_TIMEOUT_S, **kwargs
        )

    def register_endpoint(self) -> None:
        """Registers /webhooks once (kept across restarts); retries while paymesh starts."""
        state_file = self.data_dir / "demo_shop.json"
        url = f"http://127.0.0.1:{self.settings.demo_shop_port}/webhooks"
        attempts = 0
        while True:
            try:
                state = json.loads(state_file.read_text()) if state_file.exists() else {}
                if state.get("url") == url and self._endpoint_exists(state["endpoint_id"]):
                    break
                response = self.call(
                    "POST",
                    "/v1/webhook_endpoints",
                    json={"url": url, "enabled_events": ["*"], "description": "demo shop"},
                )
                response.raise_for_status()
                created = response.json()
                state = {"endpoint_id": created["id"], "secret": created["secret"], "url": url}
                # The secret is shown only once: keep it, readable by this user only.
                state_file.write_text(json.dumps(state))
                state_file.chmod(0o600)
                break
            except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as error:
                # Said once; paymesh may take a while to start (or never, for this data dir).
                log = logger.debug if attempts else logger.info
                log("webhook endpoint not registered yet: %s", error)
                attempts += 1
                time.sleep(REGISTER_RETRY_S)
        with self.lock:
            self.verifier = Webhook(state["secret"])
            self.endpoint_id = state["endpoint_id"]
        logger.info("webhook endpoint %s receives at %s", state["endpoint_id"], url)

    def _endpoint_exists(self, endpoint_id: str) -> bool:
        response = self.call("GET", f"/v1/webhook_endpoints/{endpoint_id}")
        if response.status_code == HTTPStatus.NOT_FOUND:
            return False
        response.raise_for_status()
        return True

    def receive(self, body: bytes, headers: dict[str, str]) -> bool:
        """Verifies and records one webhook; True when its signature is valid."""
        with self.lock:
            verifier = self.verifier
        event: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            event = json.loads(body)
        verified, detail = False, "endpoint not registered yet"
        if verifier is not None:
            try:
                verifier.verify(body, headers)
                verified, detail = True, "signature valid"
            except WebhookVerificationError as error:
                detail = str(error)
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        obj = data.get("object") if isinstance(data, dict) else None
        with self.lock:
            self.webhooks.appendleft(
                ReceivedWebhook(
                    received=time.time(),
                    webhook_id=headers.get("webhook-id", ""),
                    event_type=str(event.get("type", "?")),
                    object_id=str(obj.get("id", "")) if isinstance(obj, dict) else "",
                    verified=verified,
                    detail=detail,
                )
            )
        return verified


def money(amount: int, currency: str) -> str:
    """An amount in minor units, formatted in the currency's own way."""
    major = Decimal(amount).scaleb(-minor_unit_exponent(currency))
    return str(format_currency(major, currency, locale="en"))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Demo Shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #f6f4ef; color: #1d1d1f; }}
header {{ background: #22313f; color: #fff; padding: 1rem 1.5rem; }}
header a {{ color: #fff; text-decoration: none; font-weight: 600; }}
main {{ max-width: 60rem; margin: 0 auto; padding: 1.5rem; }}
.products {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(14rem, 1fr));
  gap: 1rem; }}
.product, section {{ background: #fff; border-radius: 10px; padding: 1rem;
  box-shadow: 0 1px 2px #0002; }}
section {{ margin-top: 1.5rem; }}
button {{ background: #0b5cad; color: #fff; border: 0; border-radius: 6px; padding: .6rem 1rem;
  font-size: 1rem; cursor: pointer; }}
table {{ width: 100%; border-collapse: collapse; font-size: .9rem; }}
td, th {{ text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #eee; }}
.ok {{ color: #116329; font-weight: 600; }} .bad {{ color: #a40e26; font-weight: 600; }}
code {{ font-size: .85rem; }}
</style></head>
<body><header><a href="/">☕ Demo Shop</a> · a merchant integrated with paymesh</header>
<main>{body}</main></body></html>"""


def render(title: str, body: str) -> bytes:
    """A full HTML page."""
    return PAGE.format(title=html.escape(title), body=body).encode()


def home_page(shop: Shop) -> bytes:
    """Products, recent orders and received webhooks."""
    ready = shop.secret_key() is not None
    cards = "".join(
        f"""<div class="product"><h2>{html.escape(name)}</h2>
        <p>{html.escape(money(amount, currency))}</p>
        <form method="post" action="/buy"><input type="hidden" name="product" value="{pid}">
        <button type="submit" data-testid="buy-{pid}">Buy</button></form></div>"""
        for pid, (name, amount, currency) in PRODUCTS.items()
    )
    with shop.lock:
        orders = list(shop.orders)
        webhooks = list(shop.webhooks)
        endpoint = shop.endpoint_id
    order_rows = "".join(
        f"<tr><td><code>{html.escape(o['id'])}</code></td><td>{html.escape(o['product'])}</td>"
        f"<td>{html.escape(o['amount'])}</td></tr>"
        for o in orders
    )
    webhook_rows = "".join(
        f"<tr><td>{time.strftime('%H:%M:%S', time.localtime(w.received))}</td>"
        f"<td>{html.escape(w.event_type)}</td><td><code>{html.escape(w.object_id)}</code></td>"
        f'<td class="{"ok" if w.verified else "bad"}" data-testid="verification">'
        f"{'✓ verified' if w.verified else '✗ ' + html.escape(w.detail)}</td></tr>"
        for w in webhooks
    )
    notice = (
        ""
        if ready
        else "<p class='bad'>The demo merchant does not exist yet: start paymesh with "
        "<code>make up</code>.</p>"
    )
    body = f"""{notice}<div class="products">{cards}</div>
    <section><h2>Orders</h2><table><tr><th>Payment</th><th>Product</th><th>Amount</th></tr>
    {order_rows or '<tr><td colspan="3">No orders yet.</td></tr>'}</table></section>
    <section><h2>Webhooks received</h2>
    <p>Endpoint <code data-testid="endpoint">{html.escape(endpoint or "registering…")}</code>;
    each delivery's
    <code>webhook-signature</code> is checked with the <code>standardwebhooks</code> library.
    Reload to see new ones.</p>
    <table data-testid="webhooks"><tr><th>Time</th><th>Event</th><th>Object</th><th>Signature</th>
    </tr>{webhook_rows or '<tr><td colspan="4">None yet.</td></tr>'}</table></section>"""
    return render("Shop", body)


def make_handler(shop: Shop) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `shop`."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "demo-shop"
        sys_version = ""

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/":
                self._send(HTTPStatus.OK, home_page(shop))
            elif url.path == "/return":
                self._return(parse_qs(url.query).get("payment_id", [""])[0])
            else:
                self._send(HTTPStatus.NOT_FOUND, render("Not found", "<p>Not found.</p>"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > BODY_MAX_BYTES:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"too large", "text/plain")
                return
            body = self.rfile.read(length)
            path = urlsplit(self.path).path
            if path == "/webhooks":
                headers = {name.lower(): value for name, value in self.headers.items()}
                verified = shop.receive(body, headers)
                status = HTTPStatus.OK if verified else HTTPStatus.BAD_REQUEST
                self._send(status, b"ok" if verified else b"bad signature", "text/plain")
            elif path == "/buy":
                self._buy(parse_qs(body.decode()).get("product", [""])[0])
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

        def _buy(self, product_id: str) -> None:
            if product_id not in PRODUCTS:
                self._send(HTTPStatus.BAD_REQUEST, render("Error", "<p>Unknown product.</p>"))
                return
            name, amount, currency = PRODUCTS[product_id]
            host = self.headers.get("Host") or f"localhost:{shop.settings.demo_shop_port}"
            try:
                response = shop.call(
                    "POST",
                    "/v1/payments",
                    # One key per order: a retried request creates no second payment.
                    headers={"Idempotency-Key": f"demo-shop-{uuid.uuid4()}"},
                    json={
                        "amount": amount,
                        "currency": currency,
                        "description": name,
                        "return_url": f"http://{host}/return",
                        "metadata": {"product": product_id},
                    },
                )
                response.raise_for_status()
            except (httpx.HTTPError, RuntimeError) as error:
                logger.warning("payment not created: %s", error)
                page = render("Error", f"<p>paymesh refused the payment: {html.escape(str(error))}")
                self._send(HTTPStatus.BAD_GATEWAY, page)
                return
            payment = response.json()
            with shop.lock:
                shop.orders.appendleft(
                    {"id": payment["id"], "product": name, "amount": money(amount, currency)}
                )
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", payment["checkout_url"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _return(self, payment_id: str) -> None:
            # The redirect's query proves nothing: ask paymesh what really happened.
            try:
                response = shop.call("GET", f"/v1/payments/{payment_id}")
                response.raise_for_status()
                payment = response.json()
            except (httpx.HTTPError, RuntimeError) as error:
                self._send(HTTPStatus.BAD_GATEWAY, render("Error", html.escape(str(error))))
                return
            amount = money(int(payment["amount"]), payment["currency"])
            status = str(payment["status"])
            message = (
                f"<h1 data-testid='thanks'>Thank you!</h1><p>Your payment of {html.escape(amount)}"
                " succeeded."
                if status in ("succeeded", "requires_capture")
                else f"<h1>Payment {html.escape(status)}</h1>"
            )
            body = (
                f"{message}<p>Payment <code data-testid='payment-id'>{html.escape(payment_id)}"
                f"</code> is <strong data-testid='payment-status'>{html.escape(status)}</strong>."
                "</p><p><a href='/'>Back to the shop</a></p>"
            )
            self._send(HTTPStatus.OK, render("Thank you", body))

        def _send(self, status: HTTPStatus, body: bytes, content_type: str = "text/html") -> None:
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            logger.debug(format, *args)

    return Handler


def main() -> None:
    """Runs the shop until interrupted."""
    settings = Settings()
    configure_logging(service="demo-shop", level=settings.log_level, json=settings.log_json)
    shop = Shop(settings)
    threading.Thread(target=shop.register_endpoint, name="register", daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", settings.demo_shop_port), make_handler(shop))
    server.daemon_threads = True
    logger.info("demo shop on http://localhost:%s", settings.demo_shop_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
