"""The service kit's small pieces: ids, currencies, error statuses, the edge config."""

import grpc
from google.rpc import error_details_pb2

from services.common.errors import FieldViolation, InvalidArgument, NotFound, internal_status
from services.common.ids import has_prefix, new_id
from services.common.money import minor_unit_exponent, normalize_currency
from services.runtime.envoy import PUBLIC_SERVICES, Upstream, render


def test_ids_carry_their_prefix() -> None:
    value = new_id("pay")
    assert value.startswith("pay_")
    assert has_prefix(value, "pay")
    assert not has_prefix(value, "re")
    assert not has_prefix("pay_bad-char", "pay")
    assert not has_prefix("pay_", "pay")


def test_currencies_have_their_real_exponent() -> None:
    assert normalize_currency("usd") == "USD"
    assert normalize_currency("XXX1") is None
    assert normalize_currency("ZZZ") is None
    for not_chargeable in ["XXX", "XTS", "XAU", "DEM", "FRF"]:
        assert normalize_currency(not_chargeable) is None, not_chargeable
    for in_use in ["EUR", "INR", "KWD", "JPY", "XOF", "CHF"]:
        assert normalize_currency(in_use) == in_use
    assert minor_unit_exponent("USD") == 2
    assert minor_unit_exponent("JPY") == 0
    assert minor_unit_exponent("KWD") == 3


def test_invalid_argument_status_has_error_info_and_field_violations() -> None:
    error = InvalidArgument(
        "bad", violations=[FieldViolation("amount", "must be positive")], metadata={"a": "b"}
    )
    status = error.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "INVALID_ARGUMENT"
    assert dict(info.metadata) == {"a": "b"}
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "amount"


def test_subclass_reason_and_code_are_used() -> None:
    class PaymentNotFound(NotFound):
        reason = "PAYMENT_NOT_FOUND"

    status = PaymentNotFound("no").to_status()
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert info.reason == "PAYMENT_NOT_FOUND"


def test_internal_status_says_nothing_about_the_cause() -> None:
    status = internal_status()
    assert status.message == "internal error"
    assert status.code == grpc.StatusCode.INTERNAL.value[0]


def test_edge_config_routes_only_public_services() -> None:
    upstreams = {
        name: [Upstream("10.0.0.1", 50051 + i)]
        for i, name in enumerate(["payment", "ledger", "webhook", "admin"])
    }
    config = render(http_port=8080, admin_port=9901, upstreams=upstreams)
    for names in PUBLIC_SERVICES.values():
        for name in names:
            assert f"prefix: /{name}/" in config
    assert "Internal" not in config
    assert "port_value: 50052" in config
