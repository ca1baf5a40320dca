"""Who is calling: client address, merchant keys refused, roles, the remote-error mapping."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from paymesh.payment.v1 import payment_internal_pb2

from services.admin.access import SessionAuthenticator, client_info
from services.admin.errors import (
    DependencyUnavailable,
    OperatorSessionRequired,
    RemoteError,
    SessionInvalid,
)
from services.admin.sessions import authenticate
from services.admin.views import currency_overview, remote_error, success_rate
from services.common.auth import AuthPolicy
from services.common.settings import Settings
from services.runtime.envoy import render_local


def test_client_ip__the_edge_appended_entry_wins_over_what_the_client_claims() -> None:
    info = client_info(
        (("x-forwarded-for", "203.0.113.9, 10.0.0.1, 192.0.2.7"), ("user-agent", "ua/1"))
    )
    assert info.ip == "192.0.2.7"
    assert info.user_agent == "ua/1"


def test_client_ip__envoy_external_address_is_preferred_and_absent_headers_give_empty() -> None:
    assert client_info((("x-envoy-external-address", "198.51.100.4"),)).ip == "198.51.100.4"
    assert client_info(()).ip == ""
    assert len(client_info((("user-agent", "u" * 5000),)).user_agent) == 512


@pytest.mark.parametrize(
    "metadata",
    [
        (("x-api-key", "anything"),),
        (("authorization", "Bearer sk_test_abc"),),
        (("authorization", "Bearer pk_live_abc"),),
    ],
)
def test_merchant_keys_are_refused_before_any_lookup(
    metadata: tuple[tuple[str, str], ...],
) -> None:
    # No sessionmaker: a lookup would fail loudly, so the refusal must come first.
    authenticator = SessionAuthenticator(None)  # type: ignore[arg-type]
    with pytest.raises(OperatorSessionRequired):
        asyncio.run(authenticator.authenticate_operator(metadata, AuthPolicy.OPERATOR_SESSION))


def test_missing_session_is_unauthenticated() -> None:
    authenticator = SessionAuthenticator(None)  # type: ignore[arg-type]
    with pytest.raises(SessionInvalid):
        asyncio.run(authenticator.authenticate_operator((), AuthPolicy.OPERATOR_WRITE))


@pytest.mark.parametrize(
    ("token", "purpose"),
    [("pmst_abc", "session"), ("pms_abc", "stream"), ("pms_" + "a" * 200, "session")],
)
def test_tokens_of_the_wrong_kind_or_size_are_refused_without_a_query(
    token: str, purpose: str
) -> None:
    with pytest.raises(SessionInvalid):
        authenticate(None, token, purpose=purpose)  # type: ignore[arg-type]


def test_success_rate_counts_only_finished_payments() -> None:
    assert success_rate(0, 0) == 0.0
    assert success_rate(3, 1) == 0.75
    line = currency_overview(
        payment_internal_pb2.CurrencyStats(
            currency="EUR", succeeded_count=1, failed_count=1, processing_count=5, net_volume=7
        )
    )
    assert (line.currency, line.success_rate, line.processing_count, line.net_volume) == (
        "EUR",
        0.5,
        5,
        7,
    )


class _FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, trailers: tuple[tuple[str, bytes], ...]) -> None:
        super().__init__(
            code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), "remote says", None
        )


def _details(*messages: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> bytes:
    packed = []
    for message in messages:
        item = any_pb2.Any()
        item.Pack(message)
        packed.append(item)
    serialized: bytes = status_pb2.Status(code=3, message="m", details=packed).SerializeToString()
    return serialized


def test_remote_client_errors_keep_their_code_reason_and_fields() -> None:
    trailers = (
        (
            "grpc-status-details-bin",
            _details(
                error_details_pb2.ErrorInfo(reason="REFUND_EXCEEDS_PAYMENT"),
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="amount", description="too big"
                        )
                    ]
                ),
            ),
        ),
    )
    error = remote_error(_FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, trailers), "payment")
    assert isinstance(error, RemoteError)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "REFUND_EXCEEDS_PAYMENT"
    assert [(v.field, v.description) for v in error.violations] == [("amount", "too big")]


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL],
)
def test_remote_failures_become_unavailable_without_their_details(code: grpc.StatusCode) -> None:
    error = remote_error(_FakeRpcError(code, ()), "ledger")
    assert isinstance(error, DependencyUnavailable)
    assert "remote says" not in error.message


def test_the_overview_stream_has_a_route_without_timeout() -> None:
    config = render_local(Settings.model_construct())
    route = config.index("path: /paymesh.admin.v1.AdminService/WatchOverview")
    assert "timeout: 0s" in config[route : config.index("\n", config.index("route:", route))]
    # It comes before the service's prefix route, which has a 30 s timeout.
    assert route < config.index("prefix: /paymesh.admin.v1.AdminService/")
