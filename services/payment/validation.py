"""Input rules of the payment API; every check reports a field violation, none touches storage."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from services.common.errors import FieldViolation, InvalidArgument
from services.common.money import AMOUNT_MAX, normalize_currency
from services.payment.models import CAPTURE_METHODS

DESCRIPTION_LENGTH_MAX = 1000
METADATA_KEYS_MAX = 50
METADATA_KEY_LENGTH_MAX = 40
METADATA_VALUE_LENGTH_MAX = 500
RETURN_URL_LENGTH_MAX = 2048
CARD_NUMBER_LENGTH_MIN = 12
CARD_NUMBER_LENGTH_MAX = 19
EXP_YEARS_AHEAD_MAX = 50
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# A request's payment method and its two members, as field violations name them (built, not
# spelled out: "payment_method.<x>" also reads as an event type of the catalog).
PAYMENT_METHOD_FIELD = "payment_method"
CARD_FIELD = f"{PAYMENT_METHOD_FIELD}.card"
SAVED_ID_FIELD = f"{PAYMENT_METHOD_FIELD}.id"


@dataclass(frozen=True)
class CardInput:
    """A card as the client sent it; lives only in memory for the length of one request."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str

    def __repr__(self) -> str:
        # Keeps the number and cvc out of logs and tracebacks.
        return f"CardInput(last4={self.number[-4:]!r}, exp={self.exp_month}/{self.exp_year})"


def luhn_valid(number: str) -> bool:
    """Whether the digits pass the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def card_brand(number: str) -> str:
    """The card brand from the number's leading digits."""
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or "2221" <= number[:4] <= "2720":
        return "mastercard"
    if number[:2] in {"34", "37"}:
        return "amex"
    if number.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def card_fingerprint(number: str, key: str) -> str:
    """A keyed hash that identifies the card across payments without revealing it."""
    return hmac.new(key.encode(), number.encode(), hashlib.sha256).hexdigest()


def card_violations(
    card: CardInput, *, prefix: str, now: datetime | None = None
) -> list[FieldViolation]:
    """What is wrong with a card (number, expiry, cvc)."""
    now = now or datetime.now(UTC)
    violations: list[FieldViolation] = []
    number = card.number
    if not number:
        violations.append(FieldViolation(f"{prefix}.number", "is required"))
    elif not (
        number.isascii()
        and number.isdigit()
        and CARD_NUMBER_LENGTH_MIN <= len(number) <= CARD_NUMBER_LENGTH_MAX
    ):
        violations.append(
            FieldViolation(
                f"{prefix}.number",
                f"must be {CARD_NUMBER_LENGTH_MIN} to {CARD_NUMBER_LENGTH_MAX} digits",
            )
        )
    elif not luhn_valid(number):
        violations.append(FieldViolation(f"{prefix}.number", "is not a valid card number"))
    month_ok = 1 <= card.exp_month <= 12
    if not month_ok:
        violations.append(FieldViolation(f"{prefix}.exp_month", "must be between 1 and 12"))
    if not now.year <= card.exp_year <= now.year + EXP_YEARS_AHEAD_MAX:
        if card.exp_year < now.year and card.exp_year >= 1000:
            violations.append(FieldViolation(f"{prefix}.exp_year", "the card has expired"))
        else:
            violations.append(
                FieldViolation(
                    f"{prefix}.exp_year",
                    f"must be a four-digit year up to {now.year + EXP_YEARS_AHEAD_MAX}",
                )
            )
    elif month_ok and (card.exp_year, card.exp_month) < (now.year, now.month):
        violations.append(FieldViolation(f"{prefix}.exp_month", "the card has expired"))
    cvc = card.cvc
    if not (cvc.isascii() and cvc.isdigit() and 3 <= len(cvc) <= 4):
        violations.append(FieldViolation(f"{prefix}.cvc", "must be 3 or 4 digits"))
    return violations


def amount_violations(amount: int, field: str = "amount") -> list[FieldViolation]:
    """Whether an amount is a positive count of minor units within the platform's limit."""
    if not 0 < amount <= AMOUNT_MAX:
        return [FieldViolation(field, f"must be between 1 and {AMOUNT_MAX}")]
    return []


def metadata_violations(metadata: dict[str, str]) -> list[FieldViolation]:
    """Bounds on the merchant's key-value data."""
    violations: list[FieldViolation] = []
    if len(metadata) > METADATA_KEYS_MAX:
        violations.append(FieldViolation("metadata", f"must have at most {METADATA_KEYS_MAX} keys"))
    for key, value in metadata.items():
        if not key or len(key) > METADATA_KEY_LENGTH_MAX:
            violations.append(
                FieldViolation(
                    f"metadata.{key[:METADATA_KEY_LENGTH_MAX]}",
                    f"keys must be 1 to {METADATA_KEY_LENGTH_MAX} characters",
                )
            )
        elif len(value) > METADATA_VALUE_LENGTH_MAX:
            violations.append(
                FieldViolation(
                    f"metadata.{key}",
                    f"values must be at most {METADATA_VALUE_LENGTH_MAX} characters",
                )
            )
    return violations


def return_url_violations(url: str) -> list[FieldViolation]:
    """A return URL, when given, is an absolute http(s) URL."""
    if not url:
        return []
    if len(url) > RETURN_URL_LENGTH_MAX:
        return [FieldViolation("return_url", f"must be at most {RETURN_URL_LENGTH_MAX} characters")]
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return [FieldViolation("return_url", "must be an absolute http or https URL")]
    return []


@dataclass(frozen=True)
class PaymentInput:
    """A create request once validated."""

    amount: int
    currency: str
    capture_method: str
    description: str
    metadata: dict[str, str]
    return_url: str
    card: CardInput | None


def validate_create(
    *,
    amount: int,
    currency: str,
    capture_method: str,
    description: str,
    metadata: dict[str, str],
    return_url: str,
    card: CardInput | None,
) -> PaymentInput:
    """The create request, normalized, or InvalidArgument listing every fault."""
    violations = amount_violations(amount)
    code = normalize_currency(currency) if currency else None
    if code is None:
        violations.append(FieldViolation("currency", "must be an ISO 4217 currency code"))
    method = capture_method or "automatic"
    if method not in CAPTURE_METHODS:
        violations.append(FieldViolation("capture_method", "must be 'automatic' or 'manual'"))
    if len(description) > DESCRIPTION_LENGTH_MAX:
        violations.append(
            FieldViolation("description", f"must be at most {DESCRIPTION_LENGTH_MAX} characters")
        )
    violations += metadata_violations(metadata)
    violations += return_url_violations(return_url)
    if card is not None:
        violations += card_violations(card, prefix=CARD_FIELD)
    if violations or code is None:
        raise InvalidArgument("the payment is invalid", violations=violations)
    return PaymentInput(
        amount=amount,
        currency=code,
        capture_method=method,
        description=description,
        metadata=metadata,
        return_url=return_url,
        card=card,
    )


def validate_card(card: CardInput | None) -> CardInput:
    """A confirm request's card, or InvalidArgument."""
    if card is None:
        raise InvalidArgument.field(CARD_FIELD, "is required")
    violations = card_violations(card, prefix=CARD_FIELD)
    if violations:
        raise InvalidArgument("the card is invalid", violations=violations)
    return card


def validate_choice(value: str, choices: tuple[str, ...], field: str) -> str:
    """An optional value from a closed set, or InvalidArgument."""
    if value and value not in choices:
        raise InvalidArgument.field(field, "must be one of " + ", ".join(choices))
    return value
