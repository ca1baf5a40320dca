"""The kit's defences without a platform: the rate limiter's parts, Redis gone, corrupt bytes."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import psycopg

from services.common.errors import DomainError
from services.common.ports import free_port
from services.common.ratelimit import (
    ApiRateLimiter,
    AuthFailuresLimited,
    RateLimited,
    client_address,
)
from services.common.server import ServiceSpec, _as_domain_error, create_server
from services.common.settings import Settings


def test_client_address__prefers_envoys_header_then_the_last_forwarded_hop() -> None:
    assert client_address((("x-envoy-external-address", "203.0.113.9"),)) == "203.0.113.9"
    forwarded = (("x-forwarded-for", "10.0.0.1, 198.51.100.7"),)
    assert client_address(forwarded) == "198.51.100.7"
    assert client_address(()) == "unknown"
    assert client_address((("x-forwarded-for", b"binary"),)) == "unknown"


def test_from_settings__off_without_a_limit_or_redis() -> None:
    assert ApiRateLimiter.from_settings(Settings(api_rate_limit="", redis_url="redis://x")) is None
    assert ApiRateLimiter.from_settings(Settings(redis_url=None)) is None


def test_limit_for__a_merchant_override_beats_the_default() -> None:
    limiter = ApiRateLimiter(
        "redis://127.0.0.1:1",
        default_limit="100/second",
        merchant_limits={"mer_special": "5 per 10 second"},
        auth_failures_max=3,
        auth_failure_window_s=60,
    )
    assert limiter.limit_for("mer_special").amount == 5
    assert limiter.limit_for("mer_special").get_expiry() == 10
    assert limiter.limit_for("mer_other").amount == 100


def test_redis_unreachable__calls_are_let_through() -> None:
    limiter = ApiRateLimiter(
        f"redis://127.0.0.1:{free_port()}",
        default_limit="1 per 60 second",
        merchant_limits={},
        auth_failures_max=1,
        auth_failure_window_s=60,
    )

    async def many_calls() -> None:
        for _ in range(3):
            await limiter.failed("198.51.100.7")
            await limiter.check_failures("198.51.100.7")
            await limiter.check(address="198.51.100.7", merchant_id="mer_x", key_id="key_x")

    asyncio.run(many_calls())


def test_check__refuses_the_call_past_the_keys_window_with_its_retry_after(redis_url: str) -> None:
    limiter = ApiRateLimiter(
        redis_url,
        default_limit="3 per 60 second",
        merchant_limits={},
        auth_failures_max=2,
        auth_failure_window_s=60,
    )
    key_id, address = f"key_{secrets.token_hex(4)}", "198.51.100.20"

    async def calls() -> RateLimited:
        for _ in range(3):
            await limiter.check(address=address, merchant_id="mer_x", key_id=key_id)
        try:
            await limiter.check(address=address, merchant_id="mer_x", key_id=key_id)
        except RateLimited as error:
            return error
        raise AssertionError("the fourth call of a 3-call window was let through")

    refused = asyncio.run(calls())
    assert type(refused) is RateLimited
    assert 1 <= refused.retry_after_s <= 60


def test_check__an_address_that_failed_too_often_is_refused_before_the_key_counts(
    redis_url: str,
) -> None:
    limiter = ApiRateLimiter(
        redis_url,
        default_limit="1 per 60 second",
        merchant_limits={},
        auth_failures_max=2,
        auth_failure_window_s=30,
    )
    key_id, address = f"key_{secrets.token_hex(4)}", f"203.0.113.{secrets.randbelow(250)}"

    async def calls() -> AuthFailuresLimited:
        for _ in range(2):
            await limiter.failed(address)
        try:
            await limiter.check(address=address, merchant_id="mer_x", key_id=key_id)
        except AuthFailuresLimited as error:
            return error
        raise AssertionError("an address past its failures was let through")

    refused = asyncio.run(calls())
    assert 1 <= refused.retry_after_s <= 30
    # The refused call was not counted against the key: its one call is still there.
    asyncio.run(limiter.check(address="192.0.2.1", merchant_id="mer_x", key_id=key_id))


def test_rate_limited__carries_its_retry_after_in_the_error_details() -> None:
    error = RateLimited("slow down", retry_after_s=7)
    status = error.to_status()
    assert status.code == 8  # RESOURCE_EXHAUSTED
    assert error.retry_after_s == 7
    assert error.metadata["retry_after_s"] == "7"


def test_undecodable_request__is_invalid_argument_not_unknown() -> None:
    async def scenario() -> grpc.StatusCode:
        spec = ServiceSpec(name="t", register=lambda server: None, service_names=[])
        server, port, _ = create_server(spec, port=0)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                check = channel.unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=lambda value: value,
                    response_deserializer=lambda value: value,
                )
                try:
                    await check(b"\xff\xff\xff", timeout=10)
                except grpc.aio.AioRpcError as error:
                    return error.code()
                raise AssertionError("corrupt bytes were accepted")
        finally:
            await server.stop(None)

    assert asyncio.run(scenario()) == grpc.StatusCode.INVALID_ARGUMENT


def test_store_errors__the_drivers_own_map_as_sqlalchemys_do() -> None:
    """Code on psycopg directly (the ledger's event-loop postings) gets the same statuses."""
    for raised, code in (
        (psycopg.errors.NumericValueOutOfRange("out of range"), grpc.StatusCode.INVALID_ARGUMENT),
        (psycopg.OperationalError("server closed the connection"), grpc.StatusCode.UNAVAILABLE),
        (psycopg.InterfaceError("the connection is closed"), grpc.StatusCode.UNAVAILABLE),
    ):
        mapped = _as_domain_error("/t.T/M", raised)
        assert isinstance(mapped, DomainError), raised
        assert mapped.code is code, raised
    bug = ValueError("a bug")
    assert _as_domain_error("/t.T/M", bug) is bug
