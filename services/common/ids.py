"""Object identifiers: a type prefix and 24 random base62 characters (about 143 bits)."""

import secrets
import string

ALPHABET = string.ascii_letters + string.digits
RANDOM_LENGTH = 24
# Every 24-character string over the alphabet is one number below this.
_ID_SPACE = len(ALPHABET) ** RANDOM_LENGTH


def new_id(prefix: str) -> str:
    """A new identifier such as `pay_3kTMd9...`."""
    # One draw from the OS (randbelow takes 143 random bits and redraws the 7% that fall
    # outside the space, so every identifier is equally likely), then base62 digits; drawing
    # each character with secrets.choice cost 24 draws.
    number = secrets.randbelow(_ID_SPACE)
    digits = []
    for _ in range(RANDOM_LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return f"{prefix}_" + "".join(digits)


def has_prefix(value: str, prefix: str) -> bool:
    """Whether `value` looks like an identifier of this type (cheap check before a lookup)."""
    body = value.removeprefix(f"{prefix}_")
    return body != value and 0 < len(body) <= 64 and all(c in ALPHABET for c in body)
