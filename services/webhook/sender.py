"""One HTTP attempt of a webhook: POST to a pinned, checked address, read at most a little back.

Redirects are never followed (a 3xx is a failed attempt), proxies from the environment are
ignored (the checked address must be the one connected to), compressed responses are not asked
for, and only the first `BODY_BYTES_MAX` bytes of the response are read.

Connections are kept alive between attempts (`Clients`), pooled per checked destination:
scheme, host name, the address this attempt's check pinned, and port. So a reused connection
is always one to the address the attempt itself checked (a host whose DNS answer changed gets
a new connection to the new, checked address), and a TLS connection verified for one host name
never carries a request for another name that happens to share its address. Cookies are never
kept.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

import httpx

from services.webhook.addresses import AddressRefused, IPAddress, Target, parse_url, pin

BODY_BYTES_MAX = 2048
ERROR_CHARS_MAX = 500
# An idle kept-alive connection (and a destination's client unused this long) is closed.
KEEPALIVE_EXPIRY_S = 30.0
# Destinations with a client at a time; the least recently used idle one is closed beyond it.
DESTINATIONS_MAX = 128
# Connections per destination when the caller does not say (the worker passes its concurrency).
CONNECTIONS_PER_DESTINATION_MAX = 8


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


def _no_cookies() -> http.cookiejar.CookieJar:
    # A receiver's cookie must not ride along to the next attempt (another merchant's, maybe).
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


# scheme, host name, the checked address (None when checks are off), port
Destination = tuple[str, str, IPAddress | None, int]


@dataclass
class _Pooled:
    client: httpx.Client
    users: int = 0
    last_used_s: float = field(default_factory=time.monotonic)


class Clients:
    """Long-lived HTTP clients of one process, one per destination; shared by its threads.

    A client keeps up to `connections_max` connections to its destination alive for
    `KEEPALIVE_EXPIRY_S`. At most `DESTINATIONS_MAX` idle clients are kept, and one unused for
    `KEEPALIVE_EXPIRY_S` is closed, so idle sockets stay bounded.
    """

    def __init__(self, *, connections_max: int = CONNECTIONS_PER_DESTINATION_MAX) -> None:
        self._limits = httpx.Limits(
            max_connections=connections_max,
            max_keepalive_connections=connections_max,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )
        self._lock = threading.Lock()
        self._pooled: OrderedDict[Destination, _Pooled] = OrderedDict()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            follow_redirects=False,
            trust_env=False,
            verify=_tls_context(),
            limits=self._limits,
            cookies=_no_cookies(),
        )

    @contextmanager
    def lease(self, destination: Destination) -> Iterator[httpx.Client]:
        """The client for `destination`, held for one attempt."""
        with self._lock:
            pooled = self._pooled.get(destination)
            if pooled is None:
                pooled = self._pooled[destination] = _Pooled(self._new_client())
            self._pooled.move_to_end(destination)
            pooled.users += 1
            stale = self._evict()
        for client in stale:
            client.close()
        try:
            yield pooled.client
        finally:
            with self._lock:
                pooled.users -= 1
                pooled.last_used_s = time.monotonic()

    def _evict(self) -> list[httpx.Client]:
        # Under the lock; a client in use is never closed.
        now_s = time.monotonic()
        excess = len(self._pooled) - DESTINATIONS_MAX
        stale: list[httpx.Client] = []
        for destination, pooled in list(self._pooled.items()):
            if pooled.users:
                continue
            if excess > 0 or now_s - pooled.last_used_s > KEEPALIVE_EXPIRY_S:
                del self._pooled[destination]
                stale.append(pooled.client)
                excess -= 1
        return stale

    def close(self) -> None:
        """Closes every client (the process is ending)."""
        with self._lock:
            pooled, self._pooled = list(self._pooled.values()), OrderedDict()
        for entry in pooled:
            entry.client.close()


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
) -> tuple[Destination, httpx.URL, dict[str, str], dict[str, str]]:
    """The destination, URL to connect to, extra headers and extensions for a pinned address."""
    original = httpx.URL(url)
    address = pin(target, allow_private=allow_private)
    destination = (target.scheme, target.host, address, target.port)
    if address is None:
        return destination, original, {}, {}
    pinned = original.copy_with(host=str(address))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return destination, pinned, {"Host": original.netloc.decode("ascii")}, extensions


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    allow_private: bool,
    clients: Clients,
) -> Outcome:
    """POSTs `body` over a kept-alive connection; never raises for the receiver or network."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = parse_url(url)
        destination, request_url, extra_headers, extensions = _request_target(
            url, target, allow_private=allow_private
        )
    except AddressRefused as error:
        return Outcome(0, "", f"destination refused: {error}"[:ERROR_CHARS_MAX], elapsed_ms())
    deadline = started + timeout_s
    try:
        with (
            clients.lease(destination) as client,
            client.stream(
                "POST",
                request_url,
                content=body,
                headers={**headers, **extra_headers, "Accept-Encoding": "identity"},
                extensions=extensions,
                timeout=timeout_s,
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
