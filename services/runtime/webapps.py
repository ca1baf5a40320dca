"""Serves the built web apps (`frontend/dist/<app>/browser`) behind the Envoy edge.

Envoy routes `/dashboard/`, `/merchant/`, `/checkout/` and `/docs/` (the API reference) here, so
the apps share the API's origin, and `GET /v1/openapi.json` as `/docs/openapi.json`
(gen/openapi.json). Files with a content hash in their name are cached for a year; `index.html` is
revalidated every time, and any path that is not a file gets it, so the apps' own routers handle
deep links.
"""

from __future__ import annotations

import gzip
import logging
import mimetypes
import re
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from services.common.logs import configure_logging
from services.common.settings import Settings

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "frontend" / "dist"
APPS = ("dashboard", "merchant", "checkout", "docs")
OPENAPI = ROOT / "gen" / "openapi.json"

# Angular's output hashing: "main-ABCD1234.js", "chunk-XYZ98765.js", "styles-....css".
HASHED_NAME = re.compile(r"-[A-Z0-9]{8}\.(js|css|woff2?|ttf|svg|png)$")
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
# Smaller files are not worth the CPU; the gzip cache holds at most this many entries.
GZIP_MIN_BYTES = 1024
GZIP_CACHE_MAX = 256

# What the pages may load: only this origin (fonts and icons are self-hosted; the API reference
# embeds its icon font as a data: URI); Material needs
# inline styles; nobody may frame the pages (clickjacking the checkout).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("font/woff2", ".woff2")
mimetypes.add_type("font/woff", ".woff")


@dataclass(frozen=True)
class Asset:
    """One file as it goes out."""

    body: bytes
    content_type: str
    cache_control: str
    gzipped: bool


class AssetStore:
    """Finds the file for a request path, with gzip versions kept in memory."""

    def __init__(self, dist: Path, openapi: Path = OPENAPI) -> None:
        self.dist = dist
        self.openapi = openapi
        self._gzip: dict[tuple[Path, int], bytes] = {}
        self._lock = threading.Lock()

    def app_root(self, app: str) -> Path:
        """Where an app's built files are."""
        return self.dist / app / "browser"

    def resolve(self, path: str) -> Path | None:
        """The file a URL path names, the app's index.html for app routes, None otherwise."""
        parts = [part for part in unquote(urlsplit(path).path).split("/") if part]
        if not parts or parts[0] not in APPS:
            return None
        if parts == ["docs", "openapi.json"]:
            return self.openapi
        root = self.app_root(parts[0]).resolve()
        candidate = root.joinpath(*parts[1:]).resolve()
        if not candidate.is_relative_to(root):
            return None  # "..": outside the app
        if candidate.is_file():
            return candidate
        # A missing file with an extension is a 404; anything else is a route of the app.
        if parts[1:] and "." in parts[-1]:
            return None
        index = root / "index.html"
        return index if index.is_file() else None

    def load(self, file: Path, *, accept_gzip: bool) -> Asset:
        """The bytes and headers of a file, gzipped when the client takes it and it helps."""
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if content_type.startswith("text/"):
            content_type += "; charset=utf-8"
        cache_control = (
            "public, max-age=31536000, immutable" if HASHED_NAME.search(file.name) else "no-cache"
        )
        body = file.read_bytes()
        if accept_gzip and len(body) >= GZIP_MIN_BYTES and content_type.startswith(COMPRESSIBLE):
            return Asset(self._gzipped(file, body), content_type, cache_control, gzipped=True)
        return Asset(body, content_type, cache_control, gzipped=False)

    def _gzipped(self, file: Path, body: bytes) -> bytes:
        key = (file, file.stat().st_mtime_ns)
        with self._lock:
            found = self._gzip.get(key)
        if found is None:
            found = gzip.compress(body, compresslevel=6, mtime=0)
            with self._lock:
                if len(self._gzip) >= GZIP_CACHE_MAX:
                    self._gzip.clear()
                self._gzip[key] = found
        return found


def make_handler(store: AssetStore) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `store`."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "paymesh-webapps"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve(send_body=True)

        def do_HEAD(self) -> None:
            self._serve(send_body=False)

        def _serve(self, *, send_body: bool) -> None:
            file = store.resolve(self.path)
            if file is None:
                built = any(store.app_root(app).is_dir() for app in APPS)
                status = HTTPStatus.NOT_FOUND if built else HTTPStatus.SERVICE_UNAVAILABLE
                message = b"not found" if built else b"web apps not built: run `make frontend`"
                self._reply(status, message, "text/plain; charset=utf-8", "no-store", send_body)
                return
            accept = self.headers.get("Accept-Encoding", "")
            asset = store.load(file, accept_gzip="gzip" in accept)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", asset.content_type)
            self.send_header("Cache-Control", asset.cache_control)
            self.send_header("Vary", "Accept-Encoding")
            if asset.gzipped:
                self.send_header("Content-Encoding", "gzip")
            self._finish(asset.body, send_body)

        def _reply(
            self,
            status: HTTPStatus,
            body: bytes,
            content_type: str,
            cache_control: str,
            send_body: bool,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", cache_control)
            self._finish(body, send_body)

        def _finish(self, body: bytes, send_body: bool) -> None:
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Envoy's access log already records every request.
            logger.debug(format, *args)

    return Handler


def serve(settings: Settings, dist: Path = DIST) -> None:
    """Serves the apps on `settings.bind_host` at `settings.webapps_port` until interrupted."""
    server = ThreadingHTTPServer(
        (settings.bind_host, settings.webapps_port), make_handler(AssetStore(dist))
    )
    server.daemon_threads = True
    logger.info("serving web apps", extra={"port": settings.webapps_port, "dist": str(dist)})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    """`python -m services.runtime.webapps`."""
    settings = Settings()
    configure_logging(service="webapps", level=settings.log_level, json=settings.log_json)
    serve(settings)


if __name__ == "__main__":
    main()
