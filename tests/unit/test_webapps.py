"""The web apps' file server: files, app-route fallback, traversal, caching, gzip."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from services.runtime.webapps import AssetStore, make_handler


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A built-looking dist folder with both apps."""
    for app in ("dashboard", "checkout"):
        root = tmp_path / app / "browser"
        (root / "media").mkdir(parents=True)
        (root / "index.html").write_text(f"<!doctype html><title>{app}</title>")
        (root / "main-ABCD1234.js").write_text("console.log('x');" * 200)
        (root / "media" / "icons-QWERTY12.woff2").write_bytes(b"\x00\x01font")
    (tmp_path / "secret.txt").write_text("outside")
    return tmp_path


@pytest.fixture
def server(dist: Path) -> Iterator[str]:
    """The server on a free port, for HTTP-level checks."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(AssetStore(dist)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_resolve__files_routes_and_what_is_refused(dist: Path) -> None:
    store = AssetStore(dist)
    checkout = dist / "checkout" / "browser"
    assert store.resolve("/checkout/main-ABCD1234.js") == checkout / "main-ABCD1234.js"
    # App routes (deep links) get the app's index.html, query strings included.
    assert store.resolve("/checkout/pay_123?client_secret=x") == checkout / "index.html"
    assert store.resolve("/dashboard/payments/pay_1") == dist / "dashboard/browser/index.html"
    assert store.resolve("/checkout/") == checkout / "index.html"
    # A missing file is a 404, not the page; unknown apps and traversal are refused.
    assert store.resolve("/checkout/missing-ABCD1234.js") is None
    assert store.resolve("/other/index.html") is None
    assert store.resolve("/checkout/../../secret.txt") is None
    assert store.resolve("/checkout/%2e%2e/%2e%2e/secret.txt") is None
    assert store.resolve("/") is None


def test_serve__caching_types_gzip_and_security_headers(server: str) -> None:
    hashed = httpx.get(f"{server}/dashboard/main-ABCD1234.js", headers={"Accept-Encoding": "gzip"})
    assert hashed.status_code == 200
    assert hashed.headers["content-type"] == "text/javascript; charset=utf-8"
    assert hashed.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert hashed.headers["content-encoding"] == "gzip"
    assert hashed.text.startswith("console.log")  # httpx decompressed it

    page = httpx.get(f"{server}/checkout/pay_123?client_secret=s")
    assert page.status_code == 200
    assert "<title>checkout</title>" in page.text
    assert page.headers["cache-control"] == "no-cache"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"

    font = httpx.get(f"{server}/checkout/media/icons-QWERTY12.woff2")
    assert font.headers["content-type"] == "font/woff2"
    assert "content-encoding" not in font.headers

    assert httpx.get(f"{server}/checkout/nope-ABCD1234.js").status_code == 404
    head = httpx.head(f"{server}/dashboard/")
    assert head.status_code == 200
    assert head.content == b""


def test_serve__unbuilt_apps_say_how_to_build_them(tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(AssetStore(tmp_path)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        response = httpx.get(f"http://127.0.0.1:{httpd.server_address[1]}/dashboard/")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert response.status_code == 503
    assert "make frontend" in response.text
