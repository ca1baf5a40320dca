"""Per-API-key rate limiting and throttling of failed authentication, counted in Redis.

The kit's server interceptor asks `ApiRateLimiter` about every call that carries an API key.
`check` asks, in one Redis round trip, whether the client address failed to authenticate too
often lately (a fixed window per address) and counts the key's call (a fixed window per key, at
the merchant's limit). A key authenticated moments ago (from the authenticator's cache) needs
only that; a key the admin service must resolve is first guarded by `check_failures`, so a flood
of bad keys is refused before it reaches the admin service, and `failed` counts each failure.
A refused call raises `RateLimited` before the method runs, so it stores nothing (no payment,
no idempotency record).

The counters live in Redis, shared by every replica, so a key's limit holds across replicas
exactly (one counter per key and window), not per process.

Redis is a work queue and a counter here, never the system of record: when it cannot be reached
the limiter lets calls through (and logs it) rather than take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import redis.asyncio
from limits import RateLimitItem, parse, storage, strategies
from redis.commands.core import AsyncScript

from services.common.errors import ResourceExhausted
from services.common.settings import Settings

logger = logging.getLogger(__name__)

# How long one Redis round trip may take before the limiter gives up and lets the call through.
REDIS_TIMEOUT_S = 1.0
# Metadata names the edge's headers arrive under (lower case), for the client's address.
CLIENT_ADDRESS_HEADERS = ("x-envoy-external-address", "x-forwarded-for")

# `check` as one script: the address's failures are read (refused at the maximum, as limits'
# fixed-window `test`), then the key's call is counted (limits' `incr_expire`: the window
# starts with its first call). Returns the verdict and, when refused,
# the seconds left in the refusing window.
CHECK_SCRIPT = b"""
local failures = tonumber(redis.call("get", KEYS[1]) or "0")
if failures >= tonumber(ARGV[1]) then
    return {0, redis.call("ttl", KEYS[1])}
end
local calls = redis.call("incrby", KEYS[2], 1)
if calls == 1 then
    redis.call("expire", KEYS[2], ARGV[3])
end
if calls > tonumber(ARGV[2]) then
    return {1, redis.call("ttl", KEYS[2])}
end
return {2, 0}
"""
FAILURES_REFUSED, KEY_REFUSED = 0, 1


class RateLimited(ResourceExhausted):
    """Too many calls in the current window; `retry_after_s` says when to come back."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, metadata={"retry_after_s": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class AuthFailuresLimited(RateLimited):
    """Too many failed authentications from this address lately."""

    reason = "AUTH_FAILURES_RATE_LIMITED"


def seconds_until(reset_time: float) -> int:
    """A window's `Retry-After`: whole seconds until `reset_time` (epoch seconds), at least 1."""
    return max(1, math.ceil(reset_time - time.time()))


def client_address(metadata: tuple[tuple[str, str | bytes], ...]) -> str:
    """The caller's address as the edge reports it (the last x-forwarded-for hop is Envoy's)."""
    values = {name: value for name, value in metadata if isinstance(value, str)}
    address = values.get("x-envoy-external-address", "").strip()
    if not address:
        address = values.get("x-forwarded-for", "").split(",")[-1].strip()
    return address[:64] or "unknown"


class ApiRateLimiter:
    """Fixed windows in Redis: calls per API key (per-merchant limits), failures per address."""

    def __init__(
        self,
        redis_url: str,
        *,
        default_limit: str,
        merchant_limits: dict[str, str],
        auth_failures_max: int,
        auth_failure_window_s: int,
    ) -> None:
        self._storage = storage.RedisStorage(
            redis_url,
            key_prefix="paymesh:ratelimit",
            wrap_exceptions=True,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        self._limiter = strategies.FixedWindowRateLimiter(self._storage)
        # `check` runs on every call, on the event loop: an asyncio client, no thread hop.
        # Its connections belong to the loop that made them (one per server process).
        self._redis_url = redis_url
        self._loop_scripts: dict[asyncio.AbstractEventLoop, AsyncScript] = {}
        self._default = parse(default_limit)
        self._merchants = {merchant: parse(limit) for merchant, limit in merchant_limits.items()}
        self._failures = parse(f"{auth_failures_max} per {auth_failure_window_s} second")

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiRateLimiter | None:
        """The limiter the settings ask for, or None when rate limiting is off."""
        if not settings.api_rate_limit or not settings.redis_url:
            return None
        return cls(
            settings.redis_url,
            default_limit=settings.api_rate_limit,
            merchant_limits=settings.api_rate_limit_merchants,
            auth_failures_max=settings.api_auth_failures_max,
            auth_failure_window_s=settings.api_auth_failure_window_s,
        )

    def limit_for(self, merchant_id: str) -> RateLimitItem:
        """The merchant's own limit, or the default."""
        return self._merchants.get(merchant_id, self._default)

    async def check(self, *, address: str, merchant_id: str, key_id: str) -> None:
        """AuthFailuresLimited for an address past its failures, else counts one call of the
        key (RateLimited when its window is full); one Redis round trip."""
        item = self.limit_for(merchant_id)
        keys = [
            self._storage.prefixed_key(self._failures.key_for("auth-failures", address)),
            self._storage.prefixed_key(item.key_for("key", key_id)),
        ]
        try:
            verdict, ttl_s = await self._check_script()(
                keys, [self._failures.amount, item.amount, item.get_expiry()]
            )
        except Exception:
            logger.warning("rate limiter: Redis unreachable; letting the call through")
            return
        if verdict == FAILURES_REFUSED:
            raise AuthFailuresLimited(
                "too many failed authentications from this address; try again later",
                retry_after_s=max(1, int(ttl_s)),
            )
        if verdict == KEY_REFUSED:
            raise RateLimited(
                f"too many requests with this API key (limit {item}); slow down",
                retry_after_s=max(1, int(ttl_s)),
            )

    def _check_script(self) -> AsyncScript:
        """CHECK_SCRIPT on this event loop's own client."""
        loop = asyncio.get_running_loop()
        script = self._loop_scripts.get(loop)
        if script is None:
            self._loop_scripts = {
                known: known_script
                for known, known_script in self._loop_scripts.items()
                if not known.is_closed()
            }
            client = redis.asyncio.from_url(
                self._redis_url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            script = self._loop_scripts[loop] = client.register_script(CHECK_SCRIPT)
        return script

    async def check_failures(self, address: str) -> None:
        """AuthFailuresLimited when this address failed to authenticate too often lately."""
        if not await self._call(self._limiter.test, self._failures, "auth-failures", address):
            raise AuthFailuresLimited(
                "too many failed authentications from this address; try again later",
                retry_after_s=await self._retry_after_s(self._failures, "auth-failures", address),
            )

    async def failed(self, address: str) -> None:
        """Counts one failed authentication from this address."""
        await self._call(self._limiter.hit, self._failures, "auth-failures", address)

    async def _retry_after_s(self, item: RateLimitItem, *identifiers: str) -> int:
        try:
            stats = await asyncio.to_thread(self._limiter.get_window_stats, item, *identifiers)
        except Exception:
            logger.warning("rate limiter: cannot read the window; answering its full length")
            return item.get_expiry()
        return seconds_until(stats.reset_time)

    async def _call(
        self, method: Callable[..., bool], item: RateLimitItem, *identifiers: str
    ) -> bool:
        try:
            allowed = await asyncio.to_thread(method, item, *identifiers)
        except Exception:
            logger.warning("rate limiter: Redis unreachable; letting the call through")
            return True
        return allowed
