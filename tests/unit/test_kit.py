"""The service kit's small pieces: ids, currencies, error statuses, unknown request fields, the
edge config."""

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from paymesh.payment.v1 import payment_pb2

from services.common.errors import FieldViolation, InvalidArgument, NotFound, internal_status
from services.common.ids import has_prefix, new_id
from services.common.money import minor_unit_exponent, normalize_currency
from services.common.server import _check_decoded, _tolerant
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


def _decoded(message: Any, data: bytes) -> Any:
    """What the kit's request deserializer makes of `data` for `message`'s type."""
    deserialize: Callable[[bytes], Any] | None = _tolerant(type(message).FromString)
    assert deserialize is not None
    return deserialize(data)


def _field(number: int, value: bytes | None = None) -> bytes:
    """A length-delimited field (number < 16, value < 128 bytes), or a varint 1 with no value."""
    if value is None:
        return bytes([number << 3, 1])
    return bytes([number << 3 | 2, len(value)]) + value


CREATE = payment_pb2.CreatePaymentRequest(amount=100, currency="USD").SerializeToString()
CARD = payment_pb2.Card(number="4242424242424242", exp_month=12).SerializeToString()


@pytest.mark.parametrize(
    ("message", "data", "path"),
    [
        (payment_pb2.CreatePaymentRequest(), CREATE + _field(15), "15"),
        (
            payment_pb2.CreatePaymentRequest(),
            CREATE + _field(3, _field(1, CARD + _field(15))),
            "payment_method.card.15",
        ),
        # A map whose values are messages, and a repeated message.
        (struct_pb2.Struct(), _field(1, _field(1, b"k") + _field(2, _field(15))), "fields['k'].15"),
        (struct_pb2.ListValue(), _field(1, b"") + _field(1, _field(15)), "values[1].15"),
    ],
)
def test_unknown_request_fields__are_invalid_argument_naming_their_path(
    message: Any, data: bytes, path: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _check_decoded(_decoded(message, data))
    assert refused.value.reason == "UNKNOWN_PARAMETER"
    assert [v.field for v in refused.value.violations] == [path]


def test_unknown_request_fields__a_shorter_valid_encoding_does_not_hide_them() -> None:
    # A map entry that leaves out its empty key and value is 4 bytes shorter than protobuf
    # writes it, as many bytes as the two unknown fields: the sizes of the input and of the
    # parsed message without unknown fields are equal.
    data = CREATE + _field(6, b"") + _field(15) + _field(15)
    parsed = payment_pb2.CreatePaymentRequest.FromString(data)
    parsed.DiscardUnknownFields()
    assert parsed.ByteSize() == len(data)
    with pytest.raises(InvalidArgument) as refused:
        _check_decoded(_decoded(payment_pb2.CreatePaymentRequest(), data))
    assert [v.field for v in refused.value.violations] == ["15"]


def test_unknown_request_fields__unusual_valid_encodings_are_accepted() -> None:
    for data in [CREATE + CREATE, CREATE + _field(6, b"")]:  # a field twice, a short map entry
        request = _decoded(payment_pb2.CreatePaymentRequest(), data)
        _check_decoded(request)
        assert request == payment_pb2.CreatePaymentRequest.FromString(data)


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
