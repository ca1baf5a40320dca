"""Card, metadata, URL and create-request rules of the payment API."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidArgument
from services.payment.validation import (
    CardInput,
    card_brand,
    card_fingerprint,
    card_violations,
    luhn_valid,
    metadata_violations,
    return_url_violations,
    validate_create,
)

NOW = datetime(2026, 6, 15, tzinfo=UTC)


def fields(violations) -> set[str]:  # type: ignore[no-untyped-def]
    """The fields named by violations."""
    return {violation.field for violation in violations}


@pytest.mark.parametrize(
    "number",
    [
        "4242424242424242",
        "5555555555554444",
        "4000000000000002",
        "4000000000001000",
        "378282246310005",
    ],
)
def test_luhn__test_cards_pass(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["4242424242424241", "5555555555554445", "1234567812345678"])
def test_luhn__altered_numbers_fail(number: str) -> None:
    assert not luhn_valid(number)


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("3056930009020004", "unknown"),
    ],
)
def test_card_brand(number: str, brand: str) -> None:
    assert card_brand(number) == brand


def test_fingerprint__keyed_stable_and_not_the_number() -> None:
    first = card_fingerprint("4242424242424242", "key-1")
    assert first == card_fingerprint("4242424242424242", "key-1")
    assert first != card_fingerprint("4242424242424242", "key-2")
    assert first != card_fingerprint("5555555555554444", "key-1")
    assert "4242" not in first and len(first) == 64


def card(**overrides: object) -> CardInput:
    """A valid card as of NOW, with overrides."""
    values: dict[str, object] = {
        "number": "4242424242424242",
        "exp_month": 12,
        "exp_year": 2028,
        "cvc": "123",
    }
    values.update(overrides)
    return CardInput(**values)  # type: ignore[arg-type]


def test_card__valid_card_has_no_violations() -> None:
    assert card_violations(card(), prefix="c", now=NOW) == []
    assert card_violations(card(exp_year=2026, exp_month=6), prefix="c", now=NOW) == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"number": ""}, "c.number"),
        ({"number": "4242 4242"}, "c.number"),
        ({"number": "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢"}, "c.number"),
        ({"number": "4" * 20}, "c.number"),
        ({"number": "4242424242424241"}, "c.number"),
        ({"exp_month": 0}, "c.exp_month"),
        ({"exp_month": 13}, "c.exp_month"),
        ({"exp_year": 2025}, "c.exp_year"),
        ({"exp_year": 26}, "c.exp_year"),
        ({"exp_year": 2099}, "c.exp_year"),
        ({"exp_year": 2026, "exp_month": 5}, "c.exp_month"),
        ({"cvc": "12"}, "c.cvc"),
        ({"cvc": "12345"}, "c.cvc"),
        ({"cvc": "1a3"}, "c.cvc"),
        ({"cvc": ""}, "c.cvc"),
    ],
)
def test_card__each_fault_names_its_field(overrides: dict[str, object], field: str) -> None:
    assert fields(card_violations(card(**overrides), prefix="c", now=NOW)) == {field}


def test_card__repr_hides_number_and_cvc() -> None:
    text = repr(card(cvc="987"))
    assert "4242424242424242" not in text and "987" not in text and "4242" in text


def test_metadata_bounds() -> None:
    assert metadata_violations({f"k{i}": "v" for i in range(50)}) == []
    assert fields(metadata_violations({f"k{i}": "v" for i in range(51)})) == {"metadata"}
    assert fields(metadata_violations({"k" * 41: "v"})) == {"metadata." + "k" * 40}
    assert fields(metadata_violations({"": "v"})) == {"metadata."}
    assert fields(metadata_violations({"k": "v" * 501})) == {"metadata.k"}
    assert metadata_violations({"k" * 40: "v" * 500}) == []


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("", True),
        ("https://shop.example/done", True),
        ("http://localhost:4200/x?y=1", True),
        ("ftp://shop.example", False),
        ("https://", False),
        ("javascript:alert(1)", False),
        ("/relative", False),
        ("https://" + "a" * 2050 + ".example", False),
        ("http://[::1", False),
    ],
)
def test_return_url(url: str, ok: bool) -> None:
    assert (return_url_violations(url) == []) is ok


def test_validate_create__normalizes_and_defaults() -> None:
    data = validate_create(
        amount=100,
        currency="usd",
        capture_method="",
        description="",
        metadata={},
        return_url="",
        card=None,
    )
    assert (data.currency, data.capture_method) == ("USD", "automatic")


def test_validate_create__reports_every_fault_at_once() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_create(
            amount=0,
            currency="XXXX",
            capture_method="later",
            description="x" * 1001,
            metadata={},
            return_url="ftp://x",
            card=card(cvc="1"),
        )
    assert fields(raised.value.violations) == {
        "amount",
        "currency",
        "capture_method",
        "description",
        "return_url",
        "payment_method.card.cvc",
    }
