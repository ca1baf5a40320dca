"""One HTTP attempt of a webhook: POST to a pinned, checked address, read at most a little back.

Redirects are never followed (a 3xx is a failed attempt), proxies from the environment are
ignored (the checked address must be the one connected to), compressed responses are not asked
for, and only the first `BODY_BYTES_MAX` bytes of the response are read.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import httpx

from services.webhook.addresses import AddressRefused, Target, parse_url, pin

BODY_BYTES_MAX = 2048
ERROR_CHARS_MAX = 500


@dataclass(frozen=True)
class Outcome:
    """What an attempt got: a status (0 without a response), a body prefix, or an error."""

    status_code: int
    body: str
    error: str
    duration_ms: int
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        """Whether the receiver accepted the event (any 2xx)."""
        return 200 <= self.status_code < 300


@cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def prepare() -> None:
    """Loads the HTTP stack and TLS roots now rather than inside the first attempt's limit."""
    with httpx.Client(verify=_tls_context(), trust_env=False):
        pass


def retry_after_s(value: str | None, *, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta seconds or an HTTP date), if valid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _request_target(
    url: str, target: Target, *, allow_private: bool
) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The URL to connect to, extra headers and request extensions for a pinned address."""
    original = httpx.URL(url)
    address = pin(target, allow_private=allow_private)
    if address is None:
        return original, {}, {}
    pinned = original.copy_with(host=str(address))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return pinned, {"Host": original.netloc.decode("ascii")}, extensions


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    allow_private: bool,
) -> Outcome:
    """POSTs `body`; never raises for what the receiver or the network does."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = parse_url(url)
        request_url, extra_headers, extensions = _request_target(
            url, target, allow_private=allow_private
        )
    except AddressRefused as error:
        return Outcome(0, "", f"destination refused: {error}"[:ERROR_CHARS_MAX], elapsed_ms())
    deadline = started + timeout_s
    try:
        with (
            httpx.Client(
                timeout=timeout_s, follow_redirects=False, trust_env=False, verify=_tls_context()
            ) as client,
            client.stream(
                "POST",
                request_url,
                content=body,
                headers={**headers, **extra_headers, "Accept-Encoding": "identity"},
                extensions=extensions,
            ) as response,
        ):
            received = bytearray()
            # Raw bytes, so a compressed body cannot expand past the cap in memory.
            for chunk in response.iter_raw(BODY_BYTES_MAX):
                received.extend(chunk)
                if len(received) >= BODY_BYTES_MAX or time.monotonic() > deadline:
                    break
            status = response.status_code
            wait_s = None
            if status in (429, 503):
                wait_s = retry_after_s(response.headers.get("retry-after"), now=datetime.now(UTC))
    except httpx.TimeoutException:
        return Outcome(0, "", f"timed out after {timeout_s:g}s", elapsed_ms())
    except (httpx.HTTPError, OSError, ValueError) as error:
        message = f"{type(error).__name__}: {error}"[:ERROR_CHARS_MAX]
        return Outcome(0, "", message, elapsed_ms())
    # PostgreSQL text cannot hold NUL; a binary answer is stored with replacement characters.
    text = (
        bytes(received[:BODY_BYTES_MAX]).decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    )
    problem = ""
    if 300 <= status < 400:
        problem = f"redirect ({status}) not followed"
    elif not 200 <= status < 300:
        problem = f"HTTP {status}"
    return Outcome(status, text, problem, elapsed_ms(), wait_s)
