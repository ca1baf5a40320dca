"""Object identifiers: a type prefix and 24 random base62 characters (143 bits)."""

import secrets
import string

ALPHABET = string.ascii_letters + string.digits
RANDOM_LENGTH = 24


def new_id(prefix: str) -> str:
    """A new identifier such as `pay_3kTMd9...`."""
    return f"{prefix}_" + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))


def has_prefix(value: str, prefix: str) -> bool:
    """Whether `value` looks like an identifier of this type (cheap check before a lookup)."""
    body = value.removeprefix(f"{prefix}_")
    return body != value and 0 < len(body) <= 64 and all(c in ALPHABET for c in body)
